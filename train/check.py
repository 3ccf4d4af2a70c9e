"""One pass over a whole dataset before training: every bad file reported at once, and the label statistics.

`check_dataset` decodes every row with the reader training uses (`ssgan.train.data.decode_row`), in threads (Pillow
decodes outside the GIL), and returns a `DataCheck`: each row's image size and label histogram, and every problem
found (unreadable or truncated files, missing masks, image/mask size mismatches, masks that are not label maps,
label maps stored lossily, label_map gaps). Problems that depend on the model (label values >= K, images not S x S without resize) and on
the options (lossy masks allowed or not) are derived from the histograms and image sizes when the scan is read, so
one scan serves every model.

The scan is cached as JSON under `cache_dir/data-checks/`, keyed by the dataset's fingerprint, the size and
modification time of every file a row refers to by path, the columns and the label_map: a dataset is scanned once,
an edited file is scanned again, and a damaged cache file is silently recomputed.
"""
import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssgan.images import UpsamplingWarning
from ssgan.io import write_text
from ssgan.train.data import CLASS_NAMES_FILE, DataError, LabelMap, _undecoded, _where, decode_row, label_count_problems

CHECK_VERSION = 2  # bump when what a scan records changes, so stale caches are not reused
LISTED_ERRORS = 200  # errors listed in an exception message; the full list goes to a file beside the cache
CHUNK = 256  # rows read from Arrow at a time


@dataclass
class DataCheck:
    """The result of scanning a dataset; per-row lists are indexed by row.

    names, mask_names: how each row's image and mask are named in messages ("row 3 mask (faces/3.png)"); mask
    names are None for image-only data.
    image_sizes: (width, height) of each image, None where unreadable.
    label_counts: {label value: pixels} of each label map, None for image-only data or an unusable mask.
    problems: (row, kind, message) for every problem, kind in "image", "mask", "size", "lossy", "label".
    """

    names: list
    mask_names: list
    image_sizes: list
    label_counts: list
    problems: list

    @property
    def rows(self):
        return len(self.image_sizes)

    @property
    def num_labels(self):
        """1 + the largest label value in any label map (0 for image-only data)."""
        return 1 + max((max(counts) for counts in self.label_counts if counts), default=-1)

    def size_problems(self, size, resize=False, hint=None):
        """[(row, message)] for every image the loader would refuse at `size`: with resize=False each image that is
        not size x size (non-square ones say so); with resize=True none (every image is resized and centre-cropped).

        Derived from the recorded image sizes, so one cached scan serves every model size."""
        if size is None or resize:
            return []
        hint = hint or "resize=True (`ssgan train --resize`) resizes and centre-crops it"
        found = []
        for row, wh in enumerate(self.image_sizes):
            if wh is not None and tuple(wh) != (size, size):
                square = "" if wh[0] == wh[1] else " (not square)"
                found.append((row, f"{self.names[row]}: image is {wh[0]}x{wh[1]}{square} but the model's size is "
                                   f"{size}x{size}; {hint}"))  # fmt: skip
        return found

    def errors(self, num_classes=None, allow_lossy_masks=False, size=None, resize=True, size_hint=None):
        """Every problem as a message naming its row and file, in row order; label values >= num_classes included,
        and with size given and resize False every image that is not size x size."""
        found = [(row, message) for row, kind, message in self.problems if kind != "lossy" or not allow_lossy_masks]
        found += self.size_problems(size, resize, size_hint)
        if num_classes is not None:
            for row, counts in enumerate(self.label_counts):
                if counts:
                    problems = label_count_problems(counts, num_classes, self.mask_names[row])
                    found += [(row, message) for _, message in problems]
        return [message for _, message in sorted(found, key=lambda item: item[0])]

    def class_pixels(self, num_classes):
        """Pixels of each label value 0..num_classes-1 over the whole dataset, int64 [K]."""
        total = np.zeros(num_classes, np.int64)
        for counts in self.label_counts:
            for value, pixels in (counts or {}).items():
                if value < num_classes:
                    total[value] += pixels
        return total

    def class_presence(self, num_classes):
        """Number of label maps in which each label value 0..num_classes-1 appears, int64 [K]."""
        present = np.zeros(num_classes, np.int64)
        for counts in self.label_counts:
            for value, pixels in (counts or {}).items():
                if value < num_classes and pixels:
                    present[value] += 1
        return present

    def upsampled(self, size):
        """Rows whose image is smaller than size x size (it would be enlarged)."""
        return [row for row, wh in enumerate(self.image_sizes) if wh is not None and min(wh) < size]

    def table(self, class_names=None, num_classes=None):
        """A per-class table of pixels and presence (label maps holding the class), one line per class.

        Without class names or a class count, only the label values that occur are listed."""
        num_classes = len(class_names) if class_names else (num_classes or self.num_labels)
        names = list(class_names) if class_names else ["" for _ in range(num_classes)]
        pixels, present = self.class_pixels(num_classes), self.class_presence(num_classes)
        shown = range(num_classes) if class_names or num_classes != self.num_labels else np.flatnonzero(pixels)
        masks = sum(counts is not None for counts in self.label_counts)
        width = max([len("class"), *map(len, names)])
        lines = [f"{'label':>5}  {'class':<{width}}  {'pixels':>14}  {'share':>7}  {'in masks':>17}"]
        for k in shown:
            share = pixels[k] / max(pixels.sum(), 1)
            presence = f"{present[k]}/{masks} ({present[k] / max(masks, 1):.0%})"
            lines.append(f"{k:>5}  {names[k]:<{width}}  {pixels[k]:>14,}  {share:>7.2%}  {presence:>17}")
        return "\n".join(lines)

    def raise_errors(self, num_classes=None, allow_lossy_masks=False, error_file=None, classes_named=False, size=None,
                     resize=True, size_hint=None):  # fmt: skip
        """Raise DataError listing every bad row (the first LISTED_ERRORS in the message, all of them in error_file).

        Also an error: label maps whose values stop short of num_classes - 1 while the data does not name its classes
        (classes_named False), since a model with more classes than its data is most often a wrong class count.
        """
        errors = self.errors(num_classes, allow_lossy_masks, size, resize, size_hint)
        short = num_classes is not None and not classes_named and 0 < self.num_labels < num_classes
        if short and not errors:
            raise DataError(f"the label maps hold values 0..{self.num_labels - 1} ({self.num_labels} classes) but the "
                            f"model has {num_classes} classes; if some classes never occur in this data, name all "
                            f"{num_classes} in {CLASS_NAMES_FILE} beside the data")  # fmt: skip
        if not errors:
            return
        bad_rows = len({row for row, kind, _ in self.problems if kind != "lossy" or not allow_lossy_masks}
                       | {row for row, counts in enumerate(self.label_counts)
                          if counts and num_classes is not None and max(counts) >= num_classes}
                       | {row for row, _ in self.size_problems(size, resize)})  # fmt: skip
        header = f"{bad_rows} of {self.rows} dataset rows are bad ({len(errors)} problems, all listed"
        if num_classes is not None and self.num_labels > num_classes:
            header = (f"the label maps hold values up to {self.num_labels - 1} ({self.num_labels} classes) but the "
                      f"model has {num_classes} classes (labels 0..{num_classes - 1}); ") + header  # fmt: skip
        listed = errors
        if len(errors) > LISTED_ERRORS and error_file is not None:
            try:
                error_file = Path(error_file)
                write_text(error_file, "\n".join(errors) + "\n")
                header = header.replace("all listed", f"the first {LISTED_ERRORS} listed here, all in {error_file}")
                listed = errors[:LISTED_ERRORS]
            except OSError:  # no room for the list: it all goes in the message
                pass
        lossy = any(kind == "lossy" for _, kind, _ in self.problems) and not allow_lossy_masks
        hint = "; label maps stored lossily can be accepted with --allow-lossy-masks" if lossy else ""
        raise DataError(header + hint + "):\n  " + "\n  ".join(listed))

    def warn_upsampling(self, size):
        """One UpsamplingWarning for every image smaller than size x size (a count and the first rows)."""
        rows = self.upsampled(size)
        if rows:
            first = ", ".join("{} {}x{}".format(self.names[row], *self.image_sizes[row]) for row in rows[:5])
            warnings.warn(f"{len(rows)} of {self.rows} images are smaller than {size}x{size} and will be upsampled, "
                          f"which blurs what the model learns: {first}{', ...' * (len(rows) > 5)}",
                          UpsamplingWarning, stacklevel=2)  # fmt: skip
        return rows


def check_dataset(hf_dataset, image_column="image", mask_column="mask", label_map=None, cache_dir=None, workers=None,
                  progress=None):  # fmt: skip
    """Scan every row of a `datasets.Dataset` (mask_column None: images only) -> DataCheck, cached under cache_dir.

    cache_dir None does not cache. workers: decoding threads (default: the CPU count, at most 8). progress: a tqdm
    bar (None: only on a terminal).
    """
    columns = [image_column] if mask_column is None else [image_column, mask_column]
    for column in columns:
        if column not in hf_dataset.column_names:
            raise DataError(f"dataset has no column {column!r}; its columns are {hf_dataset.column_names}")
    data = _undecoded(hf_dataset.select_columns(columns))
    label_map = label_map if isinstance(label_map, LabelMap) else LabelMap(label_map)
    cache = None
    if cache_dir is not None and getattr(data, "_fingerprint", None):
        key = _cache_key(data, columns, label_map)
        cache = Path(cache_dir) / "data-checks" / f"{key}.json"
        found = _read_cache(cache, key, len(data))
        if found is not None:
            return found
    result = _scan(data, image_column, mask_column, label_map, workers, progress)
    if cache is not None:
        _write_cache(cache, key, result)
    return result


def error_file_for(hf_dataset, cache_dir):
    """Where raise_errors writes the full error list of a dataset (beside its cached scan)."""
    return Path(cache_dir) / "data-checks" / f"errors-{getattr(hf_dataset, '_fingerprint', 'dataset')}.txt"


def _scan(data, image_column, mask_column, label_map, workers, progress):
    from tqdm.auto import tqdm

    def scan_row(row, record):
        image, labels, problems = decode_row(record, row, image_column, mask_column, label_map)
        counts = None
        if labels is not None:
            if labels.size and labels.min() < 0:
                where = _where(record[mask_column], row, "mask")
                problems.append(("label", f"{where}: negative label value {labels.min()}"))
            else:
                histogram = np.bincount(labels.ravel())
                counts = {value: int(pixels) for value, pixels in enumerate(histogram.tolist()) if pixels}
        names = _where(record[image_column], row, "image"), mask_column and _where(record[mask_column], row, "mask")
        return names, (list(image.size) if image is not None else None), counts, [(row, *p) for p in problems]

    workers = workers or min(8, os.cpu_count() or 1)
    names, mask_names, sizes, label_counts, problems = [], [], [], [], []
    bar = tqdm(total=len(data), desc="checking the dataset", unit="row", leave=False,
               disable=None if progress is None else not progress)  # fmt: skip
    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(data), CHUNK):
            batch = data[start : start + CHUNK]  # {column: [cells]}
            records = [{column: cells[i] for column, cells in batch.items()} for i in range(len(batch[image_column]))]
            for (name, mask_name), size, counts, row_problems in pool.map(
                scan_row, range(start, start + len(records)), records
            ):
                names.append(name)
                mask_names.append(mask_name)
                sizes.append(size)
                label_counts.append(counts)
                problems += row_problems
            bar.update(len(records))
    bar.close()
    return DataCheck(names, mask_names, sizes, label_counts, problems)


def _cache_key(data, columns, label_map):
    """A digest of the dataset's fingerprint, the stat of every file its rows refer to by path, and the label_map."""
    import pyarrow as pa

    digest = hashlib.sha256()
    table = label_map.table.tolist() if label_map.table is not None else None
    digest.update(f"{CHECK_VERSION}|{data._fingerprint}|{columns}|{label_map.pairs}|{table}".encode())
    for batch in data.with_format("arrow").iter(batch_size=4096):
        for column in columns:
            cells = batch.column(column).combine_chunks()
            if pa.types.is_struct(cells.type):
                paths = [p for p, b in zip(cells.field("path").to_pylist(), cells.field("bytes").is_null().to_pylist())
                         if b and p]  # fmt: skip
            else:
                paths = [p for p in cells.to_pylist() if isinstance(p, str)]
            for path in paths:
                try:
                    stat = os.stat(path)
                    digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
                except OSError:
                    digest.update(f"{path}|missing\n".encode())
    return digest.hexdigest()[:24]


def _read_cache(path, key, rows):
    """The cached DataCheck, or None when missing, damaged or not for this dataset (then it is recomputed)."""
    try:
        saved = json.loads(path.read_text())
        if saved["version"] != CHECK_VERSION or saved["key"] != key or len(saved["names"]) != rows:
            return None
        counts = [None if c is None else {int(value): int(n) for value, n in c} for c in saved["label_counts"]]
        problems = [(int(row), str(kind), str(message)) for row, kind, message in saved["problems"]]
        if not len(counts) == len(saved["image_sizes"]) == rows:
            return None
        names, mask_names = [str(name) for name in saved["names"]], [m and str(m) for m in saved["mask_names"]]
        if len(mask_names) != rows:
            return None
        sizes = [None if size is None else list(size) for size in saved["image_sizes"]]
        return DataCheck(names, mask_names, sizes, counts, problems)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_cache(path, key, result):
    """Write atomically (`ssgan.io.write_text`), so a crash never leaves half a cache file."""
    saved = {"version": CHECK_VERSION, "key": key, "names": result.names, "mask_names": result.mask_names,
             "image_sizes": result.image_sizes,
             "label_counts": [None if c is None else sorted(c.items()) for c in result.label_counts],
             "problems": result.problems}  # fmt: skip
    try:
        write_text(path, json.dumps(saved))
    except OSError as e:  # a cache that cannot be written only costs a rescan next time
        warnings.warn(f"cannot cache the dataset check in {path.parent}: {e}", stacklevel=3)
