"""Training data through Hugging Face `datasets`: image + label-map pairs as [-1,1] images and ±1 one-hot masks.

Sources: the procedural builtin faces, a folder of images (and label maps), a folder written by save_to_disk, the
hub ("hf:<id>"), and the raw CelebAMask-HQ release (`prepare_celebamask_hq`). Every one becomes a
`datasets.Dataset` with an "image" and (unless image-only) a "mask" column, read by `SegmentationDataset`.
"""
import io
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ssgan.config import CELEBAMASK_CLASSES
from ssgan.io import atomic_directory

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
    Masks are single-channel label maps ("L", "P" palette indices, "I"/"I;16", or grey RGB); `label_map` remaps raw
    values first (a dict {raw: label}, values not in it unchanged, or a table indexed by the raw value).
    Bad rows (unreadable image or mask, missing mask, mask size differing from its image, label >= num_classes) raise
    DataError naming the row and file when read. With on_error="skip" every row is checked once, up front, when the
    dataset is built; bad rows are dropped, counted in `.skipped`, and their reasons kept in `.skip_reasons`.
    hflip=True flips image and mask together with probability 1/2 (torch's RNG, so torch.manual_seed applies).
    """

    def __init__(self, hf_dataset, size, num_classes, image_column="image", mask_column="mask", image_only=False,
                 label_map=None, on_error="raise", hflip=False):  # fmt: skip
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
        self.image_column, self.mask_column = image_column, mask_column
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
        """Decode and check one row: (RGB PIL image, int64 labels [H,W] or None)."""
        record = self._data[row]
        image = _open(record[self.image_column], row, "image").convert("RGB")
        if self.image_only:
            return image, None
        mask = _open(record[self.mask_column], row, "mask")
        where = _where(record[self.mask_column], row, "mask")
        if mask.size != image.size:
            (mask_w, mask_h), (image_w, image_h) = mask.size, image.size
            raise DataError(f"{where}: mask is {mask_w}x{mask_h} but its image is {image_w}x{image_h}")
        labels = self._label_map(_label_array(mask, where), where)
        if labels.min() < 0 or labels.max() >= self.num_classes:
            bad = labels.max() if labels.max() >= self.num_classes else labels.min()
            raise DataError(f"{where}: label value {bad} is outside 0..{self.num_classes - 1} "
                            f"(num_classes={self.num_classes})")  # fmt: skip
        return image, labels


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
        raise DataError(f"{where}: mask is a colour image (mode {mask.mode}); "
                        "need a single-channel label map (mode L or P)")  # fmt: skip
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

    Sub-folders are searched; basenames must be unique, and every image needs a mask and every mask an image.
    With mask_dir None the dataset has only an "image" column.
    """
    import datasets

    images = _files_by_basename(image_dir, "image")
    names = sorted(images, key=_natural_key)
    columns = {"image": [str(images[name]) for name in names]}
    if mask_dir is not None:
        masks = _files_by_basename(mask_dir, "mask")
        for name in names:
            if name not in masks:
                raise DataError(f"image {images[name]} has no mask named {name}.* under {mask_dir}")
        for name in masks:
            if name not in images:
                raise DataError(f"mask {masks[name]} has no image named {name}.* under {image_dir}")
        columns["mask"] = [str(masks[name]) for name in names]
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


def open_dataset(spec, size, num_classes, image_only=False, **kw):
    """A SegmentationDataset from a spec string:

    - "builtin" or "builtin:N": the procedural faces (2000 or N images) drawn at `size` (kw cache_dir, seed);
    - "hf:<id>": a hub dataset (kw split, image_column, mask_column);
    - a folder written by save_to_disk (a DatasetDict gives its "train" split);
    - a folder with images/ and masks/ sub-folders, or a folder of images (image-only: needs image_only=True).
    Other keywords go to SegmentationDataset.
    """
    import datasets

    spec = str(spec)
    if spec == "builtin" or spec.startswith("builtin:"):
        from ssgan.train.builtin import BUILTIN_CLASSES, builtin_dataset

        count = spec.partition(":")[2] or "2000"
        if not count.isdigit() or int(count) < 1:
            raise DataError(f"dataset spec {spec!r}: expected 'builtin' or 'builtin:N' with N a positive integer")
        if not image_only and num_classes != len(BUILTIN_CLASSES):
            raise DataError(f"the builtin dataset has {len(BUILTIN_CLASSES)} classes {BUILTIN_CLASSES}, "
                            f"but num_classes={num_classes}")  # fmt: skip
        hf = builtin_dataset(int(count), size, seed=kw.pop("seed", 0), cache_dir=kw.pop("cache_dir", None))
    elif spec.startswith("hf:"):
        hub_kw = {key: kw.pop(key) for key in ("split", "image_column", "mask_column") if key in kw}
        hf = hub_dataset(spec[3:], **(hub_kw | {"mask_column": None} if image_only else hub_kw))
    else:
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
    return SegmentationDataset(hf, size, num_classes, image_only=image_only, **kw)


# --- CelebAMask-HQ ------------------------------------------------------------------------------------------------


def _celebamask_root(raw_dir):
    raw = Path(raw_dir)
    for root in (raw, raw / "CelebAMask-HQ"):
        if (root / "CelebA-HQ-img").is_dir() and (root / "CelebAMask-HQ-mask-anno").is_dir():
            return root
    raise FileNotFoundError(f"{raw} is not a CelebAMask-HQ folder: expected CelebA-HQ-img/{{i}}.jpg and "
                            "CelebAMask-HQ-mask-anno/{i//2000}/{i:05d}_{part}.png inside it")  # fmt: skip


def celebamask_labels(root, index):
    """The merged label map uint8 [H,W] (classes of CELEBAMASK_CLASSES) of image `index` from its part masks."""
    labels = None
    folder = Path(root) / "CelebAMask-HQ-mask-anno" / str(index // 2000)
    for part, class_name in CELEBAMASK_PAINT_ORDER:
        path = folder / f"{index:05d}_{part}.png"
        if not path.exists():
            continue
        try:
            with Image.open(path) as mask:
                inside = np.asarray(mask.convert("L")) >= 128  # parts are 0/255
        except Exception as e:
            raise DataError(f"cannot read part mask {path}: {e}") from e
        if labels is None:
            labels = np.zeros(inside.shape, dtype=np.uint8)
        if inside.shape != labels.shape:
            raise DataError(f"part mask {path} is {inside.shape[1]}x{inside.shape[0]}, "
                            f"the other parts of image {index} are {labels.shape[1]}x{labels.shape[0]}")  # fmt: skip
        labels[inside] = CELEBAMASK_CLASSES.index(class_name)
    if labels is None:
        raise DataError(f"image {index} has no part masks {folder}/{index:05d}_*.png")
    return labels


def _celebamask_examples(root, indices, size):
    for index in indices:
        path = Path(root) / "CelebA-HQ-img" / f"{index}.jpg"
        try:
            with Image.open(path) as image:
                image = fit_image(image.convert("RGB"), size, Image.LANCZOS)
        except Exception as e:
            raise DataError(f"cannot read image {path}: {e}") from e
        labels = fit_labels(celebamask_labels(root, index), size).astype(np.uint8)
        image_bytes, mask_bytes = io.BytesIO(), io.BytesIO()
        image.save(image_bytes, format="JPEG", quality=100)  # as the original's LMDB
        Image.fromarray(labels).save(mask_bytes, format="PNG")
        yield {"image": {"bytes": image_bytes.getvalue(), "path": f"{index}.jpg"},
               "mask": {"bytes": mask_bytes.getvalue(), "path": f"{index}.png"}}  # fmt: skip


def prepare_celebamask_hq(raw_dir, out_dir, size=512, num_proc=None):
    """Convert raw CelebAMask-HQ into a self-contained DatasetDict (train: images < 28000, validation: the rest).

    The 18 part masks of each image are merged into the 13 classes of CELEBAMASK_CLASSES in the original paint order
    (later parts overwrite earlier ones); images (JPEG, quality 100) and label maps (PNG) are resized with the shorter
    side to `size` (LANCZOS / NEAREST) and centre-cropped. A split without images is left out of the DatasetDict.
    Returns {"train": n, "val": n}.
    """
    import datasets

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise DataError(f"output folder {out} already exists and is not empty")
    root = _celebamask_root(raw_dir)
    indices = sorted(int(path.stem) for path in (root / "CelebA-HQ-img").glob("*.jpg") if path.stem.isdigit())
    if not indices:
        raise DataError(f"no images {{i}}.jpg in {root / 'CelebA-HQ-img'}")
    splits = {"train": [i for i in indices if i < CELEBAMASK_VAL_START],
              "validation": [i for i in indices if i >= CELEBAMASK_VAL_START]}  # fmt: skip
    features = datasets.Features(image=datasets.Image(), mask=datasets.Image())
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as cache, atomic_directory(out) as tmp:
        parts = {
            split: datasets.Dataset.from_generator(
                _celebamask_examples, features=features, cache_dir=cache, num_proc=num_proc,
                gen_kwargs={"root": str(root), "indices": split_indices, "size": size},
            )
            for split, split_indices in splits.items()
            if split_indices  # an empty split cannot be saved
        }  # fmt: skip
        datasets.DatasetDict(parts).save_to_disk(str(tmp))
        del parts
    return {"train": len(splits["train"]), "val": len(splits["validation"])}

