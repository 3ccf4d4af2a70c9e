"""Training data through Hugging Face `datasets`: image + label-map pairs as [-1,1] images and ±1 one-hot masks.

Sources: the procedural builtin faces, a folder of images (and label maps), a folder written by save_to_disk, the
hub ("hf:<id>"), and the raw CelebAMask-HQ release (`prepare_celebamask_hq`). Every one becomes a
`datasets.Dataset` with an "image" and (unless image-only) a "mask" column, read by `SegmentationDataset`.
"""
import io
import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ssgan.config import CELEBAMASK_CLASSES
from ssgan.images import to_rgb
from ssgan.io import atomic_directory, write_text

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")

# CelebAMask-HQ: part files in paint order (later parts overwrite earlier ones) and the class each one belongs to.
CELEBAMASK_PAINT_ORDER = (
    ("skin", "face"), ("eye_g", "glasses"), ("l_eye", "eyes"), ("r_eye", "eyes"), ("l_brow", "brows"),
    ("r_brow", "brows"), ("mouth", "mouth"), ("l_lip", "mouth"), ("u_lip", "mouth"), ("nose", "nose"),
    ("hair", "hair"), ("l_ear", "ears"), ("r_ear", "ears"), ("neck", "neck"), ("neck_l", "neck"),
    ("cloth", "cloth"), ("hat", "hat"), ("ear_r", "earrings"),
)  # fmt: skip
CELEBAMASK_VAL_START = 28000  # images 0..27999 train, 28000.. validation


class DataError(ValueError):
    """A dataset row or file that cannot be used; the message names it."""


class HubUnavailableError(DataError, ConnectionError):
    """The Hugging Face hub cannot be reached (no network, or offline mode)."""


class SegmentationDataset(torch.utils.data.Dataset):
    """A torch view of an image/label-map dataset: item -> dict(image=[3,S,S] in [-1,1], mask=[K,S,S] one-hot*2-1).

    Images of any resolution are resized with the shorter side to S (image LANCZOS, labels NEAREST) and centre-cropped.
    Images are read by `ssgan.images.to_rgb`: EXIF orientation applied, transparency composited on white.
    Masks are single-channel label maps ("L", "P" palette indices, "I"/"I;16", or grey RGB) in a lossless format
    (label maps stored as JPEG or lossy WebP are refused unless allow_lossy_masks=True); `label_map` remaps raw
    values first (a dict {raw: label}, values not in it unchanged, or a table indexed by the raw value).
    Bad rows (unreadable image or mask, missing mask, mask size differing from its image, lossy mask, label >=
    num_classes) raise DataError naming the row and file when read; `open_dataset` finds them all before training
    (`ssgan.train.check`). With on_error="skip" every row is checked once, up front, when the dataset is built;
    bad rows are dropped, counted in `.skipped`, and their reasons kept in `.skip_reasons`.
    hflip=True flips image and mask together with probability 1/2 (torch's RNG, so torch.manual_seed applies).
    `class_names` (a tuple of K names, or None when the data does not say) is kept as given.
    resize=False refuses (DataError) an image that is not already size x size instead of resizing and cropping it.
    """

    def __init__(self, hf_dataset, size, num_classes, image_column="image", mask_column="mask", image_only=False,
                 label_map=None, on_error="raise", hflip=False, allow_lossy_masks=False, class_names=None,
                 resize=True):  # fmt: skip
        if int(size) != size or size < 1:
            raise ValueError(f"SegmentationDataset: size must be a positive integer, got {size!r}")
        if int(num_classes) != num_classes or num_classes < 1:
            raise ValueError(f"SegmentationDataset: num_classes must be a positive integer, got {num_classes!r}")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"SegmentationDataset: on_error must be 'raise' or 'skip', got {on_error!r}")
        columns = [image_column] if image_only else [image_column, mask_column]
        for column in columns:
            if column not in hf_dataset.column_names:
                raise DataError(f"dataset has no column {column!r}; its columns are {hf_dataset.column_names}"
                                + ("" if image_only else " (image_only=True reads images without masks)"))  # fmt: skip
        self.size, self.num_classes, self.image_only, self.hflip = int(size), int(num_classes), image_only, hflip
        self.resize = resize
        self.image_column, self.mask_column = image_column, mask_column
        self.allow_lossy_masks = allow_lossy_masks
        self.class_names = tuple(class_names) if class_names is not None else None
        self._label_map = LabelMap(label_map)
        self._data = _undecoded(hf_dataset.select_columns(columns))
        self._rows = list(range(len(self._data)))
        self.skipped, self.skip_reasons = 0, []
        if on_error == "skip":
            good = []
            for row in self._rows:
                try:
                    self._read(row)
                    good.append(row)
                except DataError as e:
                    self.skip_reasons.append(str(e))
            self._rows, self.skipped = good, len(self._rows) - len(good)
            if not good:
                raise DataError(f"every one of the {self.skipped} rows is bad; the first: {self.skip_reasons[0]}")

    def __len__(self):
        return len(self._rows)

    def __getitem__(self, index):
        image, labels = self._read(self._rows[index])
        image = torch.from_numpy(np.asarray(fit_image(image, self.size, Image.LANCZOS), dtype=np.float32))
        item = {"image": image.permute(2, 0, 1) / 127.5 - 1}  # [CHW]
        if not self.image_only:
            labels = torch.from_numpy(fit_labels(labels, self.size))  # [HW]
            one_hot = torch.nn.functional.one_hot(labels, self.num_classes).permute(2, 0, 1)  # [KHW]
            item["mask"] = one_hot.float() * 2 - 1
        if self.hflip and torch.rand(()) < 0.5:
            item = {name: tensor.flip(-1) for name, tensor in item.items()}
        return item

    def _read(self, row):
        """Decode and check one row: (RGB PIL image, int64 labels [H,W] or None); DataError names the first problem."""
        record = self._data[row]
        mask_column = None if self.image_only else self.mask_column
        image, labels, problems = decode_row(record, row, self.image_column, mask_column, self._label_map,
                                             self.allow_lossy_masks)  # fmt: skip
        if labels is not None:
            problems += label_range_problems(labels, self.num_classes, _where(record[self.mask_column], row, "mask"))
        if problems:
            raise DataError(problems[0][1])
        if not self.resize and image.size != (self.size, self.size):
            raise DataError(f"{_where(record[self.image_column], row, 'image')}: image is {image.size[0]}x"
                            f"{image.size[1]} but the model's size is {self.size}x{self.size} (resize=True, or "
                            "`ssgan train --resize`, resizes and centre-crops it)")  # fmt: skip
        return image, labels


def decode_row(record, row, image_column, mask_column, label_map=None, allow_lossy_masks=False):
    """Decode one dataset row: (RGB image or None, int64 labels [H,W] or None, [(kind, message)] problems).

    Collects every problem of the row instead of raising: kind "image" (missing, unreadable or truncated image),
    "mask" (missing or unreadable mask, or not a label map), "size" (mask and image sizes differ), "lossy" (a label
    map stored in a lossy format; not reported with allow_lossy_masks=True) and "label" (label_map has no entry).
    mask_column None reads the image only. The image is read by `ssgan.images.to_rgb` (EXIF orientation applied,
    transparency on white); the mask gets the same EXIF orientation, so both stay aligned as viewers show them.
    """
    from PIL import ImageOps

    problems, image, labels = [], None, None
    where = _where(record[image_column], row, "image")
    value = record[mask_column] if mask_column is not None else None
    if mask_column is not None and _missing(value) and not _missing(record[image_column]):
        return None, None, [("mask", f"row {row} mask: missing ({where[len(f'row {row} '):]} has no mask file of "
                                     "the same name)")]  # fmt: skip
    if mask_column is not None and _missing(record[image_column]) and not _missing(value):
        return None, None, [("image", f"row {row} image: missing ({_where(value, row, 'mask')[len(f'row {row} '):]} "
                                      "has no image file of the same name)")]  # fmt: skip
    try:
        image = to_rgb(_open(record[image_column], row, "image"), where)
    except (DataError, ValueError) as e:
        problems.append(("image", str(e)))
    if mask_column is None:
        return image, None, problems
    where = _where(value, row, "mask")
    try:
        mask = _open(value, row, "mask")
    except DataError as e:
        return image, None, problems + [("mask", str(e))]
    lossy = lossy_format(mask, value)
    if lossy and not allow_lossy_masks:
        why = (f"{where}: label map stored as {lossy}, which changes pixel values and so labels (save label maps as "
               "PNG; allow_lossy_masks=True / --allow-lossy-masks accepts it)")  # fmt: skip
        problems.append(("lossy", why))
    try:
        mask = ImageOps.exif_transpose(mask)
    except Exception:  # noqa: BLE001, S110 (a damaged EXIF block on a label map: use it as stored)
        pass
    if image is not None and mask.size != image.size:
        (mask_w, mask_h), (image_w, image_h) = mask.size, image.size
        aspect = "" if mask_w * image_h == mask_h * image_w else " (a different aspect ratio)"
        problems.append(("size", f"{where}: mask is {mask_w}x{mask_h} but its image is {image_w}x{image_h}{aspect}"))
    try:
        raw = _label_array(mask, where)
    except DataError as e:
        return image, None, problems + [("mask", str(e))]
    try:
        labels = label_map(raw, where)
    except DataError as e:
        problems.append(("label", str(e)))
    return image, labels, problems


def label_range_problems(labels, num_classes, where):
    """[("label", message)] when int labels [H,W] hold values outside 0..num_classes-1 (each value with its pixels)."""
    if labels.min() < 0:
        return [("label", f"{where}: negative label value {labels.min()} (labels are 0..{num_classes - 1})")]
    counts = np.bincount(labels.ravel())
    return label_count_problems(dict(enumerate(counts.tolist())), num_classes, where)


def label_count_problems(counts, num_classes, where):
    """[("label", message)] for a {label value: pixels} histogram with values >= num_classes."""
    bad = {value: pixels for value, pixels in counts.items() if value >= num_classes and pixels}
    if not bad:
        return []
    found = ", ".join(f"{value} ({pixels} px)" for value, pixels in sorted(bad.items()))
    return [("label", f"{where}: label value{'s' * (len(bad) > 1)} {found} outside 0..{num_classes - 1} "
                      f"(num_classes={num_classes})")]  # fmt: skip


# Formats that store pixels exactly; a label map in any other format (JPEG, lossy WebP, JPEG 2000, AVIF...) is refused.
LOSSLESS_FORMATS = ("PNG", "BMP", "DIB", "GIF", "TIFF", "WEBP", "PPM", "TGA", "QOI", "PCX", "SGI", "IM")
LOSSY_TIFF_COMPRESSIONS = ("jpeg", "tiff_jpeg", "webp", "tiff_sgilog", "tiff_sgilog24")


def lossy_format(image, value=None):
    """Why a decoded file's format may have changed its pixel values ("JPEG", "lossy WebP"...), or None if lossless.

    `value` is the cell it came from ({"bytes", "path"}, a path or bytes), read again for WebP, whose container says
    whether its frames are lossy. Images made in memory (no file format) are lossless.
    """
    fmt = image.format
    if fmt is None:
        return None
    if fmt == "WEBP":
        return "lossy WebP" if _webp_is_lossy(_cell_bytes(value)) else None
    if fmt == "TIFF":
        compression = image.info.get("compression")
        return f"TIFF with {compression} compression" if compression in LOSSY_TIFF_COMPRESSIONS else None
    if fmt in LOSSLESS_FORMATS:
        return None
    return {"JPEG": "JPEG", "MPO": "JPEG (MPO)", "JPEG2000": "JPEG 2000 (lossy unless saved reversibly)"}.get(
        fmt, f"{fmt}, a format not known to be lossless")


def _cell_bytes(value):
    if isinstance(value, dict):
        return value["bytes"] if value.get("bytes") is not None else Path(value["path"]).read_bytes()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return Path(value).read_bytes()


def _webp_is_lossy(data, start=12, end=None):
    """Whether a WebP file (RIFF chunks from `start`) holds a lossy "VP8 " bitstream, in a frame or not."""
    end = len(data) if end is None else end
    position = start
    while position + 8 <= end:
        fourcc, size = data[position : position + 4], int.from_bytes(data[position + 4 : position + 8], "little")
        payload = position + 8
        if fourcc == b"VP8 ":
            return True
        if fourcc == b"ANMF" and _webp_is_lossy(data, payload + 16, payload + size):  # a frame: 16-byte header
            return True
        position = payload + size + (size & 1)
    return False


def _undecoded(dataset):
    """The dataset with its Image columns left as {"bytes", "path"}, so that decoding errors can name the row."""
    import datasets

    for name, feature in dataset.features.items():
        if isinstance(feature, datasets.Image) and feature.decode:
            dataset = dataset.cast_column(name, datasets.Image(decode=False))
    return dataset


def _where(value, row, what):
    path = value.get("path") if isinstance(value, dict) else value if isinstance(value, (str, os.PathLike)) else None
    return f"row {row} {what}" + (f" ({path})" if path else "")


def _missing(value):
    return value is None or (isinstance(value, dict) and value.get("bytes") is None and not value.get("path"))


def _open(value, row, what):
    """A loaded PIL image from a dataset cell (an {"bytes", "path"} dict, a path, bytes, or an image)."""
    where = _where(value, row, what)
    if value is None or (isinstance(value, dict) and value.get("bytes") is None and not value.get("path")):
        raise DataError(f"{where}: missing (no {what} for this row)")
    try:
        if isinstance(value, Image.Image):
            image = value
        elif isinstance(value, dict):
            image = Image.open(io.BytesIO(value["bytes"]) if value.get("bytes") is not None else value["path"])
        elif isinstance(value, (bytes, bytearray)):
            image = Image.open(io.BytesIO(value))
        elif isinstance(value, (str, os.PathLike)):
            image = Image.open(value)
        else:
            raise TypeError(f"unsupported cell type {type(value).__name__}")
        image.load()
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for corrupt files
        raise DataError(f"{where}: cannot read {what}: {e}") from e
    return image


def _label_array(mask, where):
    """A single-channel label map as int64 [H,W]; palette images keep their indices."""
    if mask.mode in ("L", "P", "I", "I;16", "I;16L", "I;16B", "1"):
        return np.asarray(mask).astype(np.int64)
    if mask.mode in ("LA", "PA"):
        return np.asarray(mask)[..., 0].astype(np.int64)
    if mask.mode in ("RGB", "RGBA"):
        rgb = np.asarray(mask)[..., :3]
        if (rgb == rgb[..., :1]).all():
            return rgb[..., 0].astype(np.int64)
        raise DataError(f"{where}: mask is a colour image (mode {mask.mode}) without a palette, not a label map; "
                        "need a single-channel label map (mode L, or P with the class as palette index)")  # fmt: skip
    raise DataError(f"{where}: unsupported mask mode {mask.mode}; need a single-channel label map (mode L or P)")


class LabelMap:
    """Remaps raw label values [H,W]: a dict {raw: label} (values not in it stay) or a table indexed by raw value.

    A class rather than a closure so that the dataset pickles into DataLoader workers under any start method.
    """

    def __init__(self, label_map):
        self.pairs = self.table = None
        if isinstance(label_map, Mapping):
            self.pairs = [(int(raw), int(label)) for raw, label in label_map.items()]
        elif label_map is not None:
            self.table = np.asarray(label_map, dtype=np.int64)
            if self.table.ndim != 1:
                raise ValueError(f"label_map must be a dict or a 1-D table, got an array of shape {self.table.shape}")

    def __call__(self, labels, where):
        if self.pairs is not None:
            out = labels.copy()
            for raw, label in self.pairs:
                out[labels == raw] = label
            return out
        if self.table is not None:
            if labels.max() >= len(self.table) or labels.min() < 0:
                bad = labels.max() if labels.max() >= len(self.table) else labels.min()
                raise DataError(f"{where}: raw label value {bad} has no entry in label_map "
                                f"(a table of {len(self.table)} entries)")  # fmt: skip
            return self.table[labels]
        return labels


def fit_image(image, size, resample):
    """Resize a PIL image with its shorter side to `size`, then centre-crop to size x size."""
    width, height = image.size
    if (width, height) != (size, size):
        scale = size / min(width, height)
        width, height = max(size, round(width * scale)), max(size, round(height * scale))
        image = image.resize((width, height), resample)
    left, top = (width - size) // 2, (height - size) // 2
    return image.crop((left, top, left + size, top + size)) if (width, height) != (size, size) else image


def fit_labels(labels, size):
    """fit_image for an integer label map [H,W] with nearest-neighbour sampling -> int64 [S,S]."""
    if labels.shape == (size, size):
        return labels
    mode_dtype = np.uint8 if labels.max() < 256 else np.int32  # PIL modes "L" and "I"
    fitted = fit_image(Image.fromarray(labels.astype(mode_dtype)), size, Image.NEAREST)
    return np.asarray(fitted).astype(np.int64)


# --- sources ------------------------------------------------------------------------------------------------------


def _natural_key(text):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _files_by_basename(folder, what):
    """{basename without extension: path} of the image files under folder (sub-folders included)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder {folder} does not exist")
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
            continue
        if path.stem in found:
            raise DataError(f"{what} basename {path.stem!r} is not unique: {found[path.stem]} and {path}")
        found[path.stem] = path
    if not found:
        raise DataError(f"no {what} files ({', '.join(IMAGE_EXTENSIONS)}) under {folder}")
    return found


def folder_dataset(image_dir, mask_dir=None):
    """A `datasets.Dataset` of the images under image_dir paired by basename with the label maps under mask_dir.

    Sub-folders are searched; basenames must be unique. Every image needs a mask and every mask an image: an unpaired
    file becomes a row whose other cell is missing, a bad row that the dataset check reports. With mask_dir None the
    dataset has only an "image" column.
    """
    import datasets

    images = _files_by_basename(image_dir, "image")
    if mask_dir is None:
        names = sorted(images, key=_natural_key)
        columns = {"image": [str(images[name]) for name in names]}
    else:
        # An image without a mask, or a mask without an image, is a row with that cell missing: the dataset check
        # lists every such row together with the other bad rows (see `decode_row`), instead of stopping at the first.
        masks = _files_by_basename(mask_dir, "mask")
        names = sorted(set(images) | set(masks), key=_natural_key)
        columns = {"image": [str(images[name]) if name in images else None for name in names],
                   "mask": [str(masks[name]) if name in masks else None for name in names]}  # fmt: skip
    features = datasets.Features({name: datasets.Image() for name in columns})
    return datasets.Dataset.from_dict(columns, features=features)


def hub_dataset(name, split="train", image_column="image", mask_column="mask"):
    """load_dataset(name, split) from the Hugging Face hub, with the image (and mask) columns renamed "image"/"mask".

    mask_column=None keeps only the images. Raises HubUnavailableError when the hub cannot be reached.
    """
    import datasets

    try:
        dataset = datasets.load_dataset(name, split=split)
    except ConnectionError as e:
        raise HubUnavailableError(
            f"cannot load dataset {name!r} from the Hugging Face hub: the hub is unreachable (offline?): {e}. "
            "On a machine with network access run datasets.load_dataset(...).save_to_disk(DIR) and use DIR instead"
        ) from e
    wanted = {image_column: "image"} if mask_column is None else {image_column: "image", mask_column: "mask"}
    for column in wanted:
        if column not in dataset.column_names:
            raise DataError(f"hub dataset {name!r} has no column {column!r}; its columns are {dataset.column_names}")
    dataset = dataset.select_columns(list(wanted))
    return dataset.rename_columns({old: new for old, new in wanted.items() if old != new})


def open_dataset(spec, size, num_classes, image_only=False, check=True, allow_lossy_masks=False, cache_dir=None, **kw):
    """A SegmentationDataset from a spec string (see `load_source`), checked as a whole before it is returned.

    With check=True every row is decoded once (`ssgan.train.check.check_dataset`, cached under cache_dir, default
    $SSGAN_CACHE or ~/.cache/ssgan, by the dataset's fingerprint), and a DataError lists every bad row at once:
    unreadable or truncated files, missing masks, image/mask size mismatches, masks that are not label maps, label maps
    stored lossily (unless allow_lossy_masks=True), label values >= num_classes (each with its pixels), and with
    resize=False every image that is not size x size. With resize=True images smaller than `size` give one
    UpsamplingWarning. Label maps whose values stop short of num_classes - 1 are an error too when
    the data does not name its classes (a wrong class count, most often; id2label.json can name classes never seen).
    With on_error="skip" bad rows are dropped instead (SegmentationDataset). The builtin data, drawn by ssgan at
    `size`, is not scanned. The result's `class_names` are the data's class names (a tuple, or None when the data does
    not record them); recorded names whose count differs from num_classes are an error naming both numbers. The scan
    is kept as the result's `check` (None when not scanned). Other keywords go to SegmentationDataset.
    """
    from ssgan.train.builtin import default_cache_dir

    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    source_kw = ("seed", "split", "image_column", "mask_column") if str(spec).startswith("hf:") else ("seed",)
    hf, class_names = load_source(spec, size, image_only, cache_dir=cache_dir,
                                  **{key: kw.pop(key) for key in source_kw if key in kw})  # fmt: skip
    if not image_only and class_names is not None and len(class_names) != num_classes:
        raise DataError(f"the dataset {spec} has {len(class_names)} classes ({', '.join(class_names)}) but the model "
                        f"has {num_classes}")  # fmt: skip
    report = None
    if check and not is_builtin_spec(spec):
        from ssgan.train.check import check_dataset, error_file_for

        mask_column = None if image_only else kw.get("mask_column", "mask")
        report = check_dataset(hf, kw.get("image_column", "image"), mask_column, label_map=kw.get("label_map"),
                               cache_dir=cache_dir)  # fmt: skip
        if kw.get("on_error", "raise") == "raise":
            report.raise_errors(None if image_only else num_classes, allow_lossy_masks, error_file_for(hf, cache_dir),
                                classes_named=class_names is not None, size=size,
                                resize=kw.get("resize", True))  # fmt: skip
        if kw.get("resize", True):
            report.warn_upsampling(size)
    dataset = SegmentationDataset(hf, size, num_classes, image_only=image_only, allow_lossy_masks=allow_lossy_masks,
                                  class_names=class_names, **kw)  # fmt: skip
    dataset.check = report
    return dataset


def is_builtin_spec(spec):
    spec = str(spec)
    return spec == "builtin" or spec.startswith("builtin:")


def load_source(spec, size=64, image_only=False, cache_dir=None, seed=0, **hub_kw):
    """(datasets.Dataset with "image" and, unless image_only, "mask" columns, class names or None) from a spec:

    - "builtin" or "builtin:N": the procedural faces (2000 or N images) drawn at `size` (cached in cache_dir, seed);
    - "hf:<id>": a hub dataset (hub_kw split, image_column, mask_column);
    - a folder written by save_to_disk (a DatasetDict gives its "train" split);
    - a folder with images/ and masks/ sub-folders, or a folder of images (image-only: needs image_only=True).
    Class names come from the data's `id2label.json` (see `read_class_names`); the builtin data has its own.
    """
    import datasets

    spec = str(spec)
    if is_builtin_spec(spec):
        from ssgan.train.builtin import BUILTIN_CLASSES, builtin_dataset

        count = spec.partition(":")[2] or "2000"
        if not count.isdigit() or int(count) < 1:
            raise DataError(f"dataset spec {spec!r}: expected 'builtin' or 'builtin:N' with N a positive integer")
        return builtin_dataset(int(count), size, seed=seed, cache_dir=cache_dir), tuple(BUILTIN_CLASSES)
    if spec.startswith("hf:"):
        hf = hub_dataset(spec[3:], **(hub_kw | {"mask_column": None} if image_only else hub_kw))
        return hf, hub_class_names(spec[3:])
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"no dataset at {spec!r}: expected 'builtin', 'builtin:N', 'hf:<id>', "
                                "a folder written by save_to_disk, or a folder of images")  # fmt: skip
    if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
        try:
            hf = datasets.load_from_disk(str(path))
        except Exception as e:  # noqa: BLE001 (pyarrow, json and datasets each raise their own errors)
            raise DataError(f"cannot read the save_to_disk folder {path}: it is damaged (cut short by a crash, a "
                            f"full disk or an incomplete copy) ({type(e).__name__}: {e})") from None  # fmt: skip
        if isinstance(hf, datasets.DatasetDict):
            if "train" not in hf:
                raise DataError(f"{path} holds splits {list(hf)} but no 'train' split")
            hf = hf["train"]
    elif (path / "images").is_dir() and (path / "masks").is_dir():
        hf = folder_dataset(path / "images", None if image_only else path / "masks")
    elif path.is_dir():
        if not image_only:
            raise DataError(f"{path} has no images/ and masks/ sub-folders, so it is an image-only dataset "
                            "(`ssgan train --image-only`, or image_only=True in Python, reads its images "
                            "without masks)")  # fmt: skip
        hf = folder_dataset(path)
    else:
        raise DataError(f"{path} is a file; a dataset is a folder (of images, or written by save_to_disk)")
    return hf, read_class_names(path)


# --- class names ----------------------------------------------------------------------------------------------------


def source_class_names(spec):
    """The class names a dataset spec records (as `load_source` returns them) without opening or checking the data:
    the builtin classes, a hub repository's or a folder's id2label.json, or None. Lets a trainer build its model
    from the data's names before the data is opened (and checked) once with the right class count."""
    spec = str(spec)
    if is_builtin_spec(spec):
        from ssgan.train.builtin import BUILTIN_CLASSES

        return tuple(BUILTIN_CLASSES)
    if spec.startswith("hf:"):
        return hub_class_names(spec[3:])
    return read_class_names(spec) if Path(spec).is_dir() else None


# The file that names a dataset's classes: {"0": "background", "1": "face", ...}, the convention of Hugging Face
# segmentation datasets, at the top of a folder dataset, of a save_to_disk folder, or of a hub dataset repository.
CLASS_NAMES_FILE = "id2label.json"


def read_class_names(folder):
    """The class names recorded in folder/id2label.json as a tuple ordered by label, or None when there is none.

    Raises DataError, naming the file, when it is not a JSON object mapping every label 0..K-1 to a distinct name.
    """
    path = Path(folder) / CLASS_NAMES_FILE
    if not path.is_file():
        return None
    try:
        return parse_id2label(json.loads(path.read_text()))
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: {e}") from None


def parse_id2label(mapping):
    """{label (int or its decimal string): name} -> names ordered by label; ValueError unless labels are 0..K-1."""
    if not isinstance(mapping, dict) or not mapping:
        raise ValueError('expected a JSON object {"0": "background", "1": "...", ...}')
    try:
        by_label = {int(label): name for label, name in mapping.items()}
    except (TypeError, ValueError):
        raise ValueError(f"labels must be integers, got {sorted(map(str, mapping))}") from None
    if sorted(by_label) != list(range(len(by_label))):
        raise ValueError(f"labels must be 0..{len(by_label) - 1} without gaps, got {sorted(by_label)}")
    names = tuple(by_label[k] for k in range(len(by_label)))
    if not all(isinstance(name, str) and name.strip() for name in names) or len(set(names)) != len(names):
        raise ValueError(f"class names must be distinct non-empty strings, got {list(names)}")
    return names


def write_class_names(folder, class_names):
    """Record class names (label order) in folder/id2label.json, where `open_dataset` finds them."""
    path = Path(folder) / CLASS_NAMES_FILE
    names = parse_id2label(dict(enumerate(class_names)))
    write_text(path, json.dumps({str(k): name for k, name in enumerate(names)}, indent=1) + "\n")
    return path


def hub_class_names(name):
    """The class names in a hub dataset repository's id2label.json, or None when it has none or cannot be reached."""
    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(name, CLASS_NAMES_FILE, repo_type="dataset")
    except Exception:  # noqa: BLE001 (no such file, no network: the data simply does not name its classes)
        return None
    return read_class_names(Path(path).parent)


# --- CelebAMask-HQ ------------------------------------------------------------------------------------------------


def _celebamask_root(raw_dir):
    raw = Path(raw_dir)
    for root in (raw, raw / "CelebAMask-HQ"):
        if (root / "CelebA-HQ-img").is_dir() and (root / "CelebAMask-HQ-mask-anno").is_dir():
            return root
    raise FileNotFoundError(f"{raw} is not a CelebAMask-HQ folder: expected CelebA-HQ-img/{{i}}.jpg and "
                            "CelebAMask-HQ-mask-anno/{i//2000}/{i:05d}_{part}.png inside it")  # fmt: skip


def celebamask_labels(root, index):
    """The merged label map uint8 [H,W] (classes of CELEBAMASK_CLASSES) of image `index` from its part masks.

    A part pixel is inside where any colour channel is non-zero (the archive stores 0/255, some copies 0/1; grey, RGB
    or palette files alike) and, for a file with alpha, not transparent. Returns (labels, empty): `empty` names the
    part files that are present but empty (zero bytes, or no pixel inside); they add nothing. Raises DataError when
    the image has no part file at all, or one cannot be read or has another size than the others.
    """
    labels, empty = None, []
    folder = Path(root) / "CelebAMask-HQ-mask-anno" / str(index // 2000)
    for part, class_name in CELEBAMASK_PAINT_ORDER:
        path = folder / f"{index:05d}_{part}.png"
        if not path.exists():
            continue
        if path.stat().st_size == 0:
            empty.append(path.name)
            continue
        try:
            with Image.open(path) as mask:
                inside = part_pixels(mask)
        except Exception as e:
            raise DataError(f"cannot read part mask {path}: {e}") from e
        if labels is None:
            labels = np.zeros(inside.shape, dtype=np.uint8)
        if inside.shape != labels.shape:
            raise DataError(f"part mask {path} is {inside.shape[1]}x{inside.shape[0]}, "
                            f"the other parts of image {index} are {labels.shape[1]}x{labels.shape[0]}")  # fmt: skip
        if not inside.any():
            empty.append(path.name)
        labels[inside] = CELEBAMASK_CLASSES.index(class_name)
    if labels is None:
        raise DataError(f"image {index} has no part masks {folder}/{index:05d}_*.png"
                        + (f" (only empty files: {', '.join(empty)})" if empty else ""))  # fmt: skip
    return labels, empty


def part_pixels(mask):
    """bool [H,W]: the pixels of a binary part mask (PIL image, any mode) that are non-zero and not transparent."""
    if mask.mode in ("P", "PA"):
        mask = mask.convert("RGBA")
    array = np.asarray(mask)
    if array.ndim == 2:
        return array != 0
    bands = mask.getbands()
    inside = (array[..., [i for i, band in enumerate(bands) if band not in ("A", "a")]] != 0).any(axis=-1)
    for alpha in {"A", "a"} & set(bands):
        inside &= array[..., bands.index(alpha)] != 0
    return inside


def _celebamask_examples(root, indices, size):
    """Rows for the prepared dataset; a row that cannot be made carries its reason in "skip_reason" instead."""
    for index in indices:
        row = {"image": None, "mask": None, "image_id": index, "file_name": f"{index}.jpg", "skip_reason": None,
               "empty_parts": []}  # fmt: skip
        path = Path(root) / "CelebA-HQ-img" / f"{index}.jpg"
        try:
            with Image.open(path) as image:
                image = fit_image(to_rgb(image, str(path)), size, Image.LANCZOS)
            labels, row["empty_parts"] = celebamask_labels(root, index)
        except (DataError, OSError, ValueError, SyntaxError) as e:  # Pillow raises these for damaged files
            row["skip_reason"] = str(e) if isinstance(e, DataError) else f"cannot read image {path}: {e}"
            yield row
            continue
        labels = fit_labels(labels, size).astype(np.uint8)
        image_bytes, mask_bytes = io.BytesIO(), io.BytesIO()
        image.save(image_bytes, format="JPEG", quality=100)  # as the original's LMDB
        Image.fromarray(labels).save(mask_bytes, format="PNG")
        row["image"] = {"bytes": image_bytes.getvalue(), "path": f"{index}.jpg"}
        row["mask"] = {"bytes": mask_bytes.getvalue(), "path": f"{index}.png"}
        yield row


def abbreviated(ids, limit=20):
    ids = sorted(ids)
    return ", ".join(map(str, ids[:limit])) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def prepare_celebamask_hq(raw_dir, out_dir, size=512, num_proc=None, strict=False):
    """Convert raw CelebAMask-HQ into a self-contained DatasetDict (train: images < 28000, validation: the rest).

    The 18 part masks of each image are merged into the 13 classes of CELEBAMASK_CLASSES in the original paint order
    (later parts overwrite earlier ones; see `celebamask_labels`); images (JPEG, quality 100) and label maps (PNG)
    are resized with the shorter side to `size` (LANCZOS / NEAREST) and centre-cropped. Each row keeps its CelebA-HQ
    "image_id" (int) and source "file_name" ("123.jpg"), to join with the archive's attribute annotations; the class
    names go to id2label.json. A split without images is left out of the DatasetDict.

    Image ids with no part files, or whose image or a part cannot be read, are skipped; present-but-empty part files
    add nothing. All are counted and named in the result; with strict=True any is a DataError and nothing is
    written. Returns {"train": n, "val": n, "no_parts": [image ids without part files], "skipped": {image id: reason}
    for the other images skipped, "empty_parts": [part file names]}.
    """
    import datasets

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise DataError(f"output folder {out} already exists and is not empty")
    root = _celebamask_root(raw_dir)
    indices = sorted(int(path.stem) for path in (root / "CelebA-HQ-img").glob("*.jpg") if path.stem.isdigit())
    if not indices:
        raise DataError(f"no images {{i}}.jpg in {root / 'CelebA-HQ-img'}")
    part_files = (root / "CelebAMask-HQ-mask-anno").glob("*/[0-9][0-9][0-9][0-9][0-9]_*.png")
    with_parts = {int(path.name[:5]) for path in part_files}
    no_parts = [i for i in indices if i not in with_parts]
    if no_parts and strict:
        raise DataError(f"{len(no_parts)} of {len(indices)} images have no part files in "
                        f"{root / 'CelebAMask-HQ-mask-anno'}: ids {abbreviated(no_parts)} "
                        "(without --strict they are skipped)")  # fmt: skip
    skipped = {}
    indices = [i for i in indices if i in with_parts]
    splits = {"train": [i for i in indices if i < CELEBAMASK_VAL_START],
              "validation": [i for i in indices if i >= CELEBAMASK_VAL_START]}  # fmt: skip
    features = datasets.Features(image=datasets.Image(), mask=datasets.Image(), image_id=datasets.Value("int32"),
                                 file_name=datasets.Value("string"), skip_reason=datasets.Value("string"),
                                 empty_parts=datasets.Sequence(datasets.Value("string")))  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    counts, empty_parts = {}, []
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as cache, atomic_directory(out) as tmp:
        parts = {}
        for split, split_indices in splits.items():
            if not split_indices:  # an empty split cannot be saved
                continue
            try:
                part = datasets.Dataset.from_generator(
                    _celebamask_examples, features=features, cache_dir=cache, num_proc=num_proc,
                    gen_kwargs={"root": str(root), "indices": split_indices, "size": size},
                )  # fmt: skip
            except datasets.exceptions.DatasetGenerationError as e:  # a bug, not a bad file: show its cause briefly
                raise DataError(f"preparing CelebAMask-HQ failed: {e.__cause__ or e}") from None
            reasons = part.data.column("skip_reason").to_pylist()
            ids = part.data.column("image_id").to_pylist()
            skipped |= {i: reason for i, reason in zip(ids, reasons) if reason is not None}
            empty_parts += [name for names in part.data.column("empty_parts").to_pylist() for name in names]
            good = [row for row, reason in enumerate(reasons) if reason is None]
            if good:
                parts[split] = part.select(good).remove_columns(["skip_reason", "empty_parts"])
            counts[split] = len(good)
        if strict and (skipped or empty_parts):
            found = [f"{len(skipped)} images cannot be used (ids {abbreviated(skipped)})"] if skipped else []
            if empty_parts:
                found.append(f"{len(empty_parts)} part files are empty ({abbreviated(empty_parts, 10)})")
            raise DataError(f"{' and '.join(found)}; nothing written (without --strict they are skipped)")
        if not parts:
            first = next(iter(skipped.values()), f"ids {abbreviated(no_parts)} have no part files")
            raise DataError(f"none of the images in {root} can be used; the first: {first}")
        datasets.DatasetDict(parts).save_to_disk(str(tmp))
        parts = part = None  # release the memory-mapped cache files before the folder is removed
        write_class_names(tmp, CELEBAMASK_CLASSES)
    return {"train": counts.get("train", 0), "val": counts.get("validation", 0), "no_parts": no_parts,
            "skipped": skipped, "empty_parts": sorted(empty_parts)}  # fmt: skip
