"""Training data: the builtin faces, SegmentationDataset, folders, CelebAMask-HQ preparation, the hub, open_dataset."""
import io
import pickle
import shutil

import datasets
import numpy as np
import pytest
import torch
from conftest import shared_path
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import ssgan
from ssgan.cli import main as cli_main
from ssgan.config import CELEBAMASK_CLASSES, DEMO_CLASSES
from ssgan.train import builtin as builtin_module
from ssgan.train.builtin import BUILTIN_CLASSES, agreement_score, builtin_dataset, segment_builtin
from ssgan.train.data import (
    DataError, HubUnavailableError, SegmentationDataset, folder_dataset, hub_dataset, open_dataset,
    prepare_celebamask_hq,
)  # fmt: skip

datasets.disable_progress_bars()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """open_dataset caches its scans under the test's own folder, never the user's ~/.cache."""
    monkeypatch.setenv("SSGAN_CACHE", str(tmp_path / "cache"))


def png(array, mode=None):
    buffer = io.BytesIO()
    (array if isinstance(array, Image.Image) else Image.fromarray(np.asarray(array), mode)).save(buffer, format="PNG")
    return buffer.getvalue()


def pair_dataset(images, masks, names=None):
    """A datasets.Dataset of encoded images [H,W,3] uint8 and label maps [H,W] (or PIL images, bytes, None)."""
    names = names or [f"row{i}" for i in range(len(images))]

    def cell(value, name, ext):
        if value is None:
            return None
        return {"bytes": value if isinstance(value, bytes) else png(value), "path": f"{name}.{ext}"}

    features = datasets.Features(image=datasets.Image(), mask=datasets.Image())
    return datasets.Dataset.from_dict({"image": [cell(i, n, "png") for i, n in zip(images, names)],
                                       "mask": [cell(m, n, "mask.png") for m, n in zip(masks, names)]},
                                      features=features)  # fmt: skip


def random_image(rng, height, width):
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def labels_of(item):
    """mask [K,S,S] in {-1,1}, one +1 per pixel -> labels [S,S]."""
    mask = item["mask"]
    assert set(mask.unique().tolist()) <= {-1.0, 1.0}
    assert ((mask > 0).sum(dim=0) == 1).all()
    return mask.argmax(dim=0)


# --- builtin faces ------------------------------------------------------------------------------------------------


def test_builtin_classes_are_the_demo_classes():
    assert BUILTIN_CLASSES == DEMO_CLASSES == ssgan.preset("demo").class_names


def test_builtin_dataset_is_deterministic_and_cached(tmp_path, monkeypatch):
    ds = builtin_dataset(40, 32, seed=3, cache_dir=tmp_path / "a")
    assert ds.column_names == ["image", "mask"] and len(ds) == 40
    assert isinstance(ds.features["image"], datasets.Image) and isinstance(ds.features["mask"], datasets.Image)
    image, mask = ds[0]["image"], ds[0]["mask"]
    assert (image.mode, image.size, mask.mode, mask.size) == ("RGB", (32, 32), "L", (32, 32))
    labels = np.stack([np.asarray(row["mask"]) for row in ds])
    assert set(np.unique(labels)) == set(range(len(BUILTIN_CLASSES)))  # every class is drawn

    raw = ds.cast_column("image", datasets.Image(decode=False)).cast_column("mask", datasets.Image(decode=False))
    again = builtin_dataset(40, 32, seed=3, cache_dir=tmp_path / "b")
    again = again.cast_column("image", datasets.Image(decode=False)).cast_column("mask", datasets.Image(decode=False))
    assert [r["image"]["bytes"] for r in raw] == [r["image"]["bytes"] for r in again]
    assert [r["mask"]["bytes"] for r in raw] == [r["mask"]["bytes"] for r in again]
    other = builtin_dataset(40, 32, seed=4, cache_dir=tmp_path / "a")
    assert not np.array_equal(np.asarray(other[0]["image"]), np.asarray(image))
    prefix = builtin_dataset(5, 32, seed=3, cache_dir=tmp_path / "a")  # images do not depend on num_images
    assert np.array_equal(np.asarray(prefix[4]["image"]), np.asarray(ds[4]["image"]))

    def fail(*args):
        raise AssertionError("drawn again instead of read from the cache")

    monkeypatch.setattr(builtin_module, "generate_builtin", fail)
    assert len(builtin_dataset(40, 32, seed=3, cache_dir=tmp_path / "a")) == 40
    monkeypatch.setenv("SSGAN_CACHE", str(tmp_path / "b"))
    assert len(builtin_dataset(40, 32, seed=3)) == 40


def test_builtin_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="num_images"):
        builtin_dataset(0, 32, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="size"):
        builtin_dataset(4, 4, cache_dir=tmp_path)


@pytest.mark.parametrize("size", [64, 32])
def test_segment_builtin_recovers_the_label_maps(tmp_path, size):
    # Drawn at 64; read at 64 (as training does) and resized to 32 (LANCZOS mixes colours at part borders).
    ds = SegmentationDataset(builtin_dataset(48, 64, seed=1, cache_dir=tmp_path), size, len(BUILTIN_CLASSES))
    batch = torch.utils.data.default_collate([ds[i] for i in range(len(ds))])
    predicted = segment_builtin(batch["image"])
    assert predicted.shape == (48, size, size) and predicted.dtype == torch.long
    accuracy = (predicted == batch["mask"].argmax(dim=1)).float().mean().item()
    assert accuracy >= (0.99 if size == 64 else 0.9), accuracy


def test_agreement_score(tmp_path):
    ds = SegmentationDataset(builtin_dataset(16, 32, seed=2, cache_dir=tmp_path), 32, len(BUILTIN_CLASSES))
    batch = torch.utils.data.default_collate([ds[i] for i in range(len(ds))])
    assert agreement_score(batch["image"], batch["mask"]) >= 0.99
    chance = agreement_score(batch["image"], torch.randn(batch["mask"].shape))
    assert 0.05 < chance < 0.3
    with pytest.raises(ValueError, match="seg_logits"):
        agreement_score(batch["image"], batch["mask"][:, :3])
    with pytest.raises(ValueError, match="spatial"):
        agreement_score(batch["image"], batch["mask"][..., :16])


# --- SegmentationDataset ------------------------------------------------------------------------------------------


@given(width=st.integers(3, 40), height=st.integers(3, 40), size=st.integers(2, 24), classes=st.integers(1, 9),
       seed=st.integers(0, 2**31 - 1))  # fmt: skip
def test_items_have_the_requested_size_at_any_resolution(width, height, size, classes, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=(height, width), dtype=np.uint8)
    ds = SegmentationDataset(pair_dataset([random_image(rng, height, width)], [labels]), size, classes)
    item = ds[0]
    assert item["image"].shape == (3, size, size) and item["image"].dtype == torch.float32
    assert item["image"].min() >= -1 and item["image"].max() <= 1
    assert item["mask"].shape == (classes, size, size) and item["mask"].dtype == torch.float32
    assert set(labels_of(item).unique().tolist()) <= set(np.unique(labels).tolist())


def test_resize_shorter_side_then_centre_crop():
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 5, size=(4, 8), dtype=np.uint8)  # shorter side already 4: crop columns 2..5
    item = SegmentationDataset(pair_dataset([random_image(rng, 4, 8)], [wide]), 4, 5)[0]
    assert np.array_equal(labels_of(item).numpy(), wide[:, 2:6])
    tall = rng.integers(0, 5, size=(6, 3), dtype=np.uint8)  # x2 nearest to 12x6, crop rows 3..8
    item = SegmentationDataset(pair_dataset([random_image(rng, 6, 3)], [tall]), 6, 5)[0]
    expected = np.repeat(np.repeat(tall, 2, axis=0), 2, axis=1)[3:9]
    assert np.array_equal(labels_of(item).numpy(), expected)
    image = random_image(rng, 5, 5)  # same size: pixels unchanged
    item = SegmentationDataset(pair_dataset([image], [np.zeros((5, 5), np.uint8)]), 5, 1)[0]
    assert torch.allclose(item["image"], torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1)


def test_palette_masks_keep_their_indices():
    indices = np.array([[0, 1, 2], [3, 2, 1], [0, 0, 3]], dtype=np.uint8)
    mask = Image.fromarray(indices, mode="P")
    mask.putpalette([255, 255, 255, 200, 10, 10, 10, 200, 10, 7, 7, 7] + [0] * (256 * 3 - 12))  # RGB would lose them
    rng = np.random.default_rng(0)
    item = SegmentationDataset(pair_dataset([random_image(rng, 3, 3)], [mask]), 3, 4)[0]
    assert np.array_equal(labels_of(item).numpy(), indices)
    grey_rgb = np.repeat(indices[..., None], 3, axis=2)  # label maps saved as grey RGB are accepted
    item = SegmentationDataset(pair_dataset([random_image(rng, 3, 3)], [grey_rgb]), 3, 4)[0]
    assert np.array_equal(labels_of(item).numpy(), indices)
    colour = random_image(rng, 3, 3)
    with pytest.raises(DataError, match="colour image"):
        SegmentationDataset(pair_dataset([random_image(rng, 3, 3)], [colour]), 3, 4)[0]


def test_bad_rows_raise_errors_naming_the_row_and_file():
    rng = np.random.default_rng(0)
    good_image, good_mask, short_mask = random_image(rng, 6, 6), np.ones((6, 6), np.uint8), np.ones((5, 6), np.uint8)
    cases = [
        ([good_image, b"not an image"], [good_mask, good_mask], r"row 1 image \(face1.png\): cannot read"),
        ([good_image, good_image], [good_mask, b"\x89PNG broken"], r"row 1 mask \(face1.mask.png\): cannot read"),
        ([good_image, good_image], [good_mask, good_mask * 3], r"row 1 mask \(face1.mask.png\): label value 3"),
        ([good_image, good_image], [good_mask, short_mask], r"row 1 mask \(face1.mask.png\): mask is 6x5 but"),
        ([good_image, good_image], [good_mask, None], "row 1 mask: missing"),
    ]  # fmt: skip
    for images, masks, message in cases:
        ds = SegmentationDataset(pair_dataset(images, masks, names=["face0", "face1"]), 4, 3)
        assert ds[0]["mask"].shape == (3, 4, 4)
        with pytest.raises(DataError, match=message):
            ds[1]


def test_skip_drops_bad_rows_up_front():
    rng = np.random.default_rng(0)
    images = [random_image(rng, 6, 6) for _ in range(5)]
    masks = [np.full((6, 6), i % 3, np.uint8) for i in range(5)]
    images[1], masks[3] = b"corrupt", np.full((6, 6), 9, np.uint8)
    ds = SegmentationDataset(pair_dataset(images, masks), 4, 3, on_error="skip")
    assert (len(ds), ds.skipped) == (3, 2)
    assert "row 1 image" in ds.skip_reasons[0] and "label value 9" in ds.skip_reasons[1]
    assert [labels_of(ds[i])[0, 0].item() for i in range(3)] == [0, 2, 1]  # rows 0, 2, 4
    with pytest.raises(DataError, match="every one of the 1 rows"):
        SegmentationDataset(pair_dataset([b"corrupt"], [masks[0]]), 4, 3, on_error="skip")
    with pytest.raises(ValueError, match="on_error"):
        SegmentationDataset(pair_dataset(images, masks), 4, 3, on_error="ignore")


def test_label_map_remaps_raw_values():
    raw = np.array([[10, 20], [30, 10]], dtype=np.uint8)
    rng = np.random.default_rng(0)
    dataset = pair_dataset([random_image(rng, 2, 2)], [raw])
    by_dict = SegmentationDataset(dataset, 2, 3, label_map={10: 0, 20: 1, 30: 2})[0]
    assert np.array_equal(labels_of(by_dict).numpy(), [[0, 1], [2, 0]])
    table = np.zeros(31, np.int64)
    table[[10, 20, 30]] = [2, 0, 1]
    assert np.array_equal(labels_of(SegmentationDataset(dataset, 2, 3, label_map=table)[0]).numpy(), [[2, 0], [1, 2]])
    mapped = pickle.loads(pickle.dumps(SegmentationDataset(dataset, 2, 3, label_map={10: 0, 20: 1, 30: 2})))  # workers
    assert torch.equal(mapped[0]["mask"], by_dict["mask"])
    with pytest.raises(DataError, match="no entry in label_map"):
        SegmentationDataset(dataset, 2, 3, label_map=[0, 1, 2])[0]
    with pytest.raises(DataError, match=r"label values 20 \(1 px\), 30 \(1 px\) outside 0..2"):
        SegmentationDataset(dataset, 2, 3, label_map={10: 0})[0]


def test_hflip_flips_image_and_mask_together():
    image = np.zeros((4, 4, 3), np.uint8)
    image[:, :1] = 255  # a bright first column labelled 1
    labels = np.zeros((4, 4), np.uint8)
    labels[:, :1] = 1
    ds = SegmentationDataset(pair_dataset([image], [labels]), 4, 2, hflip=True)
    torch.manual_seed(0)
    items = [ds[0] for _ in range(16)]
    flipped = [item["image"][0, 0, -1].item() > 0 for item in items]
    assert any(flipped) and not all(flipped)
    for item in items:
        assert torch.equal(item["image"][0] > 0, labels_of(item) == 1)
    torch.manual_seed(0)
    assert [ds[0]["image"][0, 0, -1].item() > 0 for _ in range(16)] == flipped
    assert not SegmentationDataset(pair_dataset([image], [labels]), 4, 2)[0]["image"][0, 0, -1].item() > 0


def test_image_only_items_have_no_mask():
    rng = np.random.default_rng(0)
    images_only = pair_dataset([random_image(rng, 5, 7)], [None]).remove_columns("mask")
    item = SegmentationDataset(images_only, 4, 3, image_only=True)[0]
    assert set(item) == {"image"} and item["image"].shape == (3, 4, 4)
    with pytest.raises(DataError, match="no column 'mask'.*image_only=True"):
        SegmentationDataset(images_only, 4, 3)


def test_real_faces_read_image_only():
    folder = shared_path("data", "faces")
    ds = open_dataset(folder, 32, 7, image_only=True)
    assert len(ds) == 10
    item = ds[3]
    assert set(item) == {"image"} and item["image"].shape == (3, 32, 32)
    assert item["image"].min() >= -1 and item["image"].max() <= 1 and item["image"].std() > 0.1
    with pytest.raises(DataError, match="image-only"):
        open_dataset(folder, 32, 7)


# --- folders ------------------------------------------------------------------------------------------------------


def write_pairs(root, names, mask_ext=".png", size=6):
    rng = np.random.default_rng(0)
    for name in names:
        image_path, mask_path = root / "images" / f"{name}.jpg", root / "masks" / f"{name}{mask_ext}"
        for path in (image_path, mask_path):
            path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(random_image(rng, size, size)).save(image_path, quality=95)
        Image.fromarray(np.full((size, size), int(name.rsplit("/", 1)[-1][-1]) % 3, np.uint8)).save(mask_path)


def test_folder_dataset_pairs_by_basename(tmp_path):
    write_pairs(tmp_path, ["a/img10", "a/img2", "b/img1"])
    ds = folder_dataset(tmp_path / "images", tmp_path / "masks")
    assert ds.column_names == ["image", "mask"] and len(ds) == 3
    paths = ds.cast_column("image", datasets.Image(decode=False))["image"]
    assert [p["path"].rsplit("/", 1)[-1] for p in paths] == ["img1.jpg", "img2.jpg", "img10.jpg"]
    torch_ds = SegmentationDataset(ds, 4, 3)
    assert [labels_of(torch_ds[i])[0, 0].item() for i in range(3)] == [1, 2, 0]
    assert folder_dataset(tmp_path / "images").column_names == ["image"]


def test_folder_dataset_errors(tmp_path):
    write_pairs(tmp_path, ["a/img1", "b/img1"])
    with pytest.raises(DataError, match="basename 'img1' is not unique"):
        folder_dataset(tmp_path / "images", tmp_path / "masks")
    shutil.rmtree(tmp_path / "images" / "b")
    shutil.rmtree(tmp_path / "masks" / "b")
    (tmp_path / "images" / "img7.jpg").write_bytes((tmp_path / "images" / "a" / "img1.jpg").read_bytes())
    from ssgan.train.check import check_dataset

    def errors():  # an unpaired file is a bad row, listed by the dataset check with the others
        return "\n".join(check_dataset(folder_dataset(tmp_path / "images", tmp_path / "masks")).errors())

    assert "img7.jpg) has no mask file of the same name" in errors()
    (tmp_path / "images" / "img7.jpg").unlink()
    (tmp_path / "masks" / "img8.png").write_bytes((tmp_path / "masks" / "a" / "img1.png").read_bytes())
    assert "img8.png) has no image file of the same name" in errors()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        folder_dataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        folder_dataset(tmp_path / "empty")


# --- CelebAMask-HQ ------------------------------------------------------------------------------------------------


def write_celebamask(root, parts_by_image, image_size=16, mask_size=8):
    """A fake raw CelebAMask-HQ: {index: {part: boolean [mask_size, mask_size]}}."""
    rng = np.random.default_rng(0)
    (root / "CelebA-HQ-img").mkdir(parents=True)
    for index, parts in parts_by_image.items():
        Image.fromarray(random_image(rng, image_size, image_size)).save(root / "CelebA-HQ-img" / f"{index}.jpg")
        folder = root / "CelebAMask-HQ-mask-anno" / str(index // 2000)
        folder.mkdir(parents=True, exist_ok=True)
        for part, inside in parts.items():
            Image.fromarray(np.where(inside, 255, 0).astype(np.uint8)).save(folder / f"{index:05d}_{part}.png")


def rows(first, last, size=8):
    inside = np.zeros((size, size), bool)
    inside[first:last] = True
    return inside


def test_prepare_celebamask_hq_merges_parts_in_paint_order(tmp_path):
    cls = CELEBAMASK_CLASSES.index
    glasses, eye = rows(3, 5), rows(3, 5) & (np.arange(8) < 4)
    parts = {  # each overlap: the later part in paint order wins
        "skin": rows(0, 8), "hair": rows(0, 3), "hat": rows(0, 2), "eye_g": glasses, "l_eye": eye, "neck": rows(5, 8),
        "cloth": rows(7, 8), "ear_r": rows(6, 8) & (np.arange(8) == 0),
    }  # fmt: skip
    expected = np.zeros((8, 8), np.int64)
    expected[0:2], expected[2], expected[3:5], expected[3:5, :4] = cls("hat"), cls("hair"), cls("glasses"), cls("eyes")
    expected[5:7], expected[7], expected[6:8, 0] = cls("neck"), cls("cloth"), cls("earrings")
    raw = tmp_path / "raw"
    write_celebamask(raw, {0: parts, 1: {"skin": rows(2, 6)}, 28000: {"hair": rows(0, 8)}})
    out = tmp_path / "prepared"
    assert prepare_celebamask_hq(raw, out, size=8) == {"train": 2, "val": 1, "no_parts": [], "skipped": {},
                                                       "empty_parts": []}
    shutil.rmtree(raw)  # the result is self-contained

    prepared = datasets.load_from_disk(str(out))
    assert set(prepared) == {"train", "validation"} and (len(prepared["train"]), len(prepared["validation"])) == (2, 1)
    assert prepared["train"][0]["image"].size == (8, 8) and prepared["train"][0]["mask"].mode == "L"
    train = SegmentationDataset(prepared["train"], 8, len(CELEBAMASK_CLASSES))
    assert np.array_equal(labels_of(train[0]).numpy(), expected)
    assert np.array_equal(labels_of(train[1]).numpy(), np.where(rows(2, 6), cls("face"), 0))
    validation = SegmentationDataset(prepared["validation"], 8, len(CELEBAMASK_CLASSES))
    assert (labels_of(validation[0]) == cls("hair")).all()
    assert len(open_dataset(out, 4, len(CELEBAMASK_CLASSES))) == 2  # a DatasetDict opens as its train split

    with pytest.raises(DataError, match="not empty"):
        prepare_celebamask_hq(raw, out)
    with pytest.raises(FileNotFoundError, match="CelebA-HQ-img"):
        prepare_celebamask_hq(tmp_path / "nowhere", tmp_path / "other")


def test_prepare_commands(tmp_path, capsys):
    raw = tmp_path / "CelebAMask-HQ"
    write_celebamask(raw, {5: {"skin": rows(1, 7)}})
    assert cli_main(["prepare", "celebamask-hq", str(tmp_path), str(tmp_path / "celeba"), "--size", "4"]) == 0
    assert datasets.load_from_disk(str(tmp_path / "celeba"))["train"][0]["mask"].size == (4, 4)
    assert cli_main(["prepare", "builtin", str(tmp_path / "faces"), "--num-images", "3", "--size", "16"]) == 0
    faces = datasets.load_from_disk(str(tmp_path / "faces"))
    assert len(faces) == 3 and faces[0]["image"].size == (16, 16)
    assert cli_main(["prepare", "builtin", str(tmp_path / "faces")]) == 2
    assert "not empty" in capsys.readouterr().err


# --- hub and open_dataset -----------------------------------------------------------------------------------------


@pytest.fixture
def offline(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_hub_offline_gives_a_clear_error(offline):
    with pytest.raises(HubUnavailableError, match="unreachable") as error:
        hub_dataset("ssgan-tests/no-such-dataset")
    assert isinstance(error.value, ValueError) and "save_to_disk" in str(error.value)
    with pytest.raises(HubUnavailableError, match="no-such-dataset"):
        open_dataset("hf:ssgan-tests/no-such-dataset", 32, 7)


def test_open_dataset_specs(tmp_path):
    ds = open_dataset("builtin:6", 16, 7, cache_dir=tmp_path / "cache", hflip=True)
    assert isinstance(ds, SegmentationDataset) and len(ds) == 6 and ds[0]["mask"].shape == (7, 16, 16)
    with pytest.raises(DataError, match="7 classes"):
        open_dataset("builtin:6", 16, 13, cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match="builtin:N"):
        open_dataset("builtin:many", 16, 7)

    write_pairs(tmp_path / "folder", ["x1", "x2"])
    assert open_dataset(tmp_path / "folder", 4, 3)[1]["mask"].shape == (3, 4, 4)
    assert set(open_dataset(tmp_path / "folder", 4, 3, image_only=True)[0]) == {"image"}

    saved = folder_dataset(tmp_path / "folder" / "images", tmp_path / "folder" / "masks")
    saved.save_to_disk(str(tmp_path / "saved"))
    assert len(open_dataset(tmp_path / "saved", 4, 3, on_error="skip")) == 2
    datasets.DatasetDict(test=saved).save_to_disk(str(tmp_path / "no_train"))
    with pytest.raises(DataError, match="no 'train' split"):
        open_dataset(tmp_path / "no_train", 4, 3)
    with pytest.raises(FileNotFoundError, match="no dataset at"):
        open_dataset(tmp_path / "missing", 4, 3)
