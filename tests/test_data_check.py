"""Issue #10 §2/§3: every mask checked before training, class names with the data, CelebAMask-HQ's quirks."""
import io
import json
import warnings
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from ssgan.cli import main as cli_main
from ssgan.config import CELEBAMASK_CLASSES
from ssgan.images import UpsamplingWarning
from ssgan.train import check as check_module
from ssgan.train.check import check_dataset
from ssgan.train.data import (
    DataError, SegmentationDataset, folder_dataset, hub_class_names, open_dataset, prepare_celebamask_hq,
    read_class_names, write_class_names,
)  # fmt: skip

datasets.disable_progress_bars()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Scans are cached under the test's own folder, never the user's ~/.cache."""
    monkeypatch.setenv("SSGAN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def noise(rng, height, width):
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def ten_class_labels(size=64):
    """A 10-class label map of 4x4-pixel blocks of random classes (sharp edges between any two classes)."""
    blocks = np.random.default_rng(10).integers(0, 10, size=(size // 4, size // 4), dtype=np.uint8)
    return np.kron(blocks, np.ones((4, 4), np.uint8))


def encoded(array, fmt, **options):
    buffer = io.BytesIO()
    (array if isinstance(array, Image.Image) else Image.fromarray(array)).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def one_row(mask_bytes, image=None, size=64):
    image = image if image is not None else noise(np.random.default_rng(0), size, size)
    features = datasets.Features(image=datasets.Image(), mask=datasets.Image())
    columns = {"image": [{"bytes": encoded(image, "PNG"), "path": "face.png"}],
               "mask": [{"bytes": mask_bytes, "path": "face.mask"}]}  # fmt: skip
    return datasets.Dataset.from_dict(columns, features=features)


def write_folder(root, masks, size=16, names=None):
    """images/ and masks/ with one noise image per mask; a mask is an array (PNG) or (filename suffix, bytes)."""
    rng = np.random.default_rng(1)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, mask in enumerate(masks):
        name = names[i] if names else f"face{i}"
        Image.fromarray(noise(rng, size, size)).save(root / "images" / f"{name}.png")
        if isinstance(mask, tuple):
            (root / "masks" / f"{name}{mask[0]}").write_bytes(mask[1])
        else:
            Image.fromarray(mask).save(root / "masks" / f"{name}.png")
    return root


# --- lossy label maps --------------------------------------------------------------------------------------------


def test_label_map_stored_as_jpeg_is_refused_naming_the_file():
    labels = ten_class_labels()
    stored = encoded(labels, "JPEG", quality=95)
    changed = np.asarray(Image.open(io.BytesIO(stored))) != labels
    assert changed.any()  # the issue's measurement: JPEG changes labels, even at quality 95
    with pytest.raises(DataError, match=r"row 0 mask \(face.mask\): label map stored as JPEG, which changes"):
        SegmentationDataset(one_row(stored), 64, 256)[0]
    report = check_dataset(one_row(stored))
    assert [kind for _, kind, _ in report.problems] == ["lossy"]
    assert report.errors(256, allow_lossy_masks=True) == []
    assert SegmentationDataset(one_row(stored), 64, 256, allow_lossy_masks=True)[0]["mask"].shape == (256, 64, 64)


@pytest.mark.parametrize(
    "fmt, options, lossy",
    [("WEBP", {"quality": 90}, "lossy WebP"), ("WEBP", {"lossless": True}, None), ("PNG", {}, None),
     ("BMP", {}, None), ("TIFF", {}, None), ("TIFF", {"compression": "jpeg"}, "TIFF with jpeg compression"),
     ("JPEG2000", {}, "JPEG 2000")],
)  # fmt: skip
def test_lossy_formats_of_every_kind_are_refused(fmt, options, lossy):
    labels = ten_class_labels(32)
    try:
        stored = encoded(labels, fmt, **options)
    except (OSError, KeyError) as e:  # a Pillow built without this codec cannot write it either
        pytest.skip(f"Pillow cannot write {fmt} {options} here: {e}")
    errors = check_dataset(one_row(stored, size=32)).errors(10)
    if lossy is None:
        assert errors == []
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(stored)).convert("L")), labels)
    else:
        assert f"stored as {lossy}" in errors[0]


def test_sixteen_bit_and_palette_label_maps_are_accepted():
    labels = ten_class_labels(32).astype(np.uint16) * 300  # values above 255 need 16 bits
    sixteen = encoded(Image.fromarray(labels), "PNG")
    report = check_dataset(one_row(sixteen, size=32))
    assert report.problems == [] and report.num_labels == 2701
    palette = Image.fromarray(ten_class_labels(32), mode="P")
    palette.putpalette(list(np.random.default_rng(0).integers(0, 256, 768)))
    report = check_dataset(one_row(encoded(palette, "PNG"), size=32))
    assert report.errors(10) == [] and report.num_labels == 10


# --- every bad file in one error ---------------------------------------------------------------------------------


def bad_folder(root):
    """Six rows: good, label >= K, JPEG mask, short mask, RGB colour mask, truncated image."""
    rng = np.random.default_rng(2)
    good, high = np.full((16, 16), 2, np.uint8), np.full((16, 16), 1, np.uint8)
    high[:2], high[2, :3] = 7, 9  # 32 px of 7, 3 px of 9
    masks = [good, high, (".jpg", encoded(good, "JPEG", quality=95)), good[:8], noise(rng, 16, 16), good]
    write_folder(root, masks)
    image = root / "images" / "face5.png"
    image.write_bytes(image.read_bytes()[:120])
    return root


def test_several_bad_masks_are_reported_in_one_error(tmp_path):
    root = bad_folder(tmp_path / "data")
    with pytest.raises(DataError) as error:
        open_dataset(root, 16, 3)
    message = str(error.value)
    assert message.startswith("the label maps hold values up to 9 (10 classes) but the model has 3 classes")
    assert "5 of 6 dataset rows are bad" in message
    for expected in ("face1.png): label values 7 (32 px), 9 (3 px) outside 0..2",
                     "face2.jpg): label map stored as JPEG",
                     "face3.png): mask is 16x8 but its image is 16x16 (a different aspect ratio)",
                     "face4.png): mask is a colour image (mode RGB) without a palette",
                     "face5.png): cannot read image: image file is truncated"):  # fmt: skip
        assert expected in message
    assert "face0" not in message and "--allow-lossy-masks" in message
    skipped = open_dataset(root, 16, 3, on_error="skip")  # the opt-out of the up-front error: drop bad rows
    assert (len(skipped), skipped.skipped) == (1, 5)


def test_the_check_runs_once_per_dataset_and_recomputes_a_damaged_cache(tmp_path, cache, monkeypatch):
    root = write_folder(tmp_path / "data", [np.full((16, 16), k, np.uint8) for k in range(3)])
    calls = []
    real_decode = check_module.decode_row
    monkeypatch.setattr(check_module, "decode_row", lambda *a, **k: calls.append(a[1]) or real_decode(*a, **k))
    assert open_dataset(root, 16, 3).check.rows == 3 and len(calls) == 3
    open_dataset(root, 16, 3)
    assert len(calls) == 3  # cached by the dataset's fingerprint
    (saved,) = (cache / "data-checks").glob("*.json")
    saved.write_text(saved.read_text()[:50])  # a crash mid-write, a full disk
    assert open_dataset(root, 16, 3).check.rows == 3 and len(calls) == 6  # silently recomputed
    Image.fromarray(np.full((16, 16), 5, np.uint8)).save(root / "masks" / "face1.png")  # an edited file
    with pytest.raises(DataError, match=r"face1.png\): label value 5 \(256 px\)"):
        open_dataset(root, 16, 3)
    assert len(calls) == 9


def test_small_images_warn_once_with_a_count(tmp_path):
    root = write_folder(tmp_path / "data", [np.zeros((16, 16), np.uint8)] * 2)
    with pytest.warns(UpsamplingWarning, match=r"2 of 2 images are smaller than 32x32 .* row 0 image \(.*face0.png\)"):
        assert open_dataset(root, 32, 1)[0]["image"].shape == (3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        open_dataset(root, 16, 1)


def test_check_data_command_prints_the_class_table(tmp_path, capsys):
    labels = np.zeros((16, 16), np.uint8)
    labels[:4], labels[4:6] = 1, 3
    root = write_folder(tmp_path / "data", [labels, np.zeros((16, 16), np.uint8)])
    write_class_names(root, ["sky", "road", "car", "tree"])
    assert cli_main(["check-data", str(root)]) == 0
    out = capsys.readouterr().out
    assert "2 image/label-map pairs; image sizes 16x16" in out and "class names: sky, road, car, tree" in out
    lines = {line.split()[1]: line.split()[2:] for line in out.splitlines() if line[:5].strip().isdigit()}
    assert lines["sky"] == ["416", "81.25%", "2/2", "(100%)"] and lines["road"] == ["64", "12.50%", "1/2", "(50%)"]
    assert lines["car"] == ["0", "0.00%", "0/2", "(0%)"] and "no problems found" in out

    root = bad_folder(tmp_path / "bad")
    assert cli_main(["check-data", str(root), "--classes", "3", "--size", "32"]) == 1
    out = capsys.readouterr().out
    assert "6 of 6 dataset rows are bad" in out  # every readable image is 16x16, not 32x32; the truncated one bad
    refused = "image is 16x16 but the model's size is 32x32; `ssgan train` refuses it unless given --resize"
    assert out.count(refused) == 5
    assert cli_main(["check-data", str(root), "--classes", "10", "--allow-lossy-masks"]) == 1
    out = capsys.readouterr().out
    assert "3 of 6 dataset rows are bad" in out and "JPEG" not in out.split("error:")[1]


def test_fewer_label_values_than_classes_is_an_error_unless_the_data_names_them(tmp_path, capsys):
    root = write_folder(tmp_path / "data", [np.full((16, 16), k, np.uint8) for k in range(3)])
    with pytest.raises(DataError, match=r"values 0..2 \(3 classes\) but the model has 8 classes; .* id2label.json"):
        open_dataset(root, 16, 8)
    assert cli_main(["check-data", str(root), "--classes", "8"]) == 1
    assert "but the model has 8 classes" in capsys.readouterr().out
    write_class_names(root, [f"class{k}" for k in range(8)])  # classes 3..7 named, never drawn
    assert open_dataset(root, 16, 8).class_names[3] == "class3"
    assert cli_main(["check-data", str(root)]) == 0
    assert "    7  class7" in capsys.readouterr().out


def test_many_errors_are_listed_in_a_file(tmp_path, monkeypatch):
    monkeypatch.setattr(check_module, "LISTED_ERRORS", 2)
    root = write_folder(tmp_path / "data", [np.full((16, 16), 4, np.uint8)] * 3)
    with pytest.raises(DataError, match="the first 2 listed here, all in ") as error:
        open_dataset(root, 16, 3)
    listed = str(error.value).split("all in ")[1].split(";")[0].split(")")[0]
    assert len(Path(listed).read_text().splitlines()) == 3


# --- class names travel with the data ----------------------------------------------------------------------------


def test_class_names_of_folders_saved_datasets_and_the_builtin_data(tmp_path):
    root = write_folder(tmp_path / "data", [np.full((16, 16), k, np.uint8) for k in range(3)])
    assert open_dataset(root, 16, 3).class_names is None
    write_class_names(root, ["background", "petal", "stem"])
    assert open_dataset(root, 16, 3).class_names == ("background", "petal", "stem")
    with pytest.raises(DataError, match=r"has 3 classes \(background, petal, stem\) but the model has 5"):
        open_dataset(root, 16, 5)
    assert open_dataset(root, 16, 5, image_only=True).class_names == ("background", "petal", "stem")

    saved = tmp_path / "saved"
    folder_dataset(root / "images", root / "masks").save_to_disk(str(saved))
    write_class_names(saved, ["background", "petal", "stem"])
    reopened = open_dataset(saved, 16, 3)
    assert reopened.class_names == ("background", "petal", "stem") and len(reopened) == 3

    assert cli_main(["prepare", "builtin", str(tmp_path / "faces"), "--num-images", "2", "--size", "16"]) == 0
    assert read_class_names(tmp_path / "faces") == open_dataset("builtin:2", 16, 7).class_names
    assert open_dataset("builtin:2", 16, 7).class_names[:2] == ("background", "face")


@pytest.mark.parametrize(
    "content, message",
    [('{"0": "a", "2": "b"}', r"labels must be 0..1 without gaps, got \[0, 2\]"),
     ('{"0": "a", "1": "a"}', "distinct non-empty"), ('["a", "b"]', "expected a JSON object"),
     ('{"0": "a",', "Expecting")],
)  # fmt: skip
def test_bad_id2label_files_name_the_file(tmp_path, content, message):
    root = write_folder(tmp_path / "data", [np.zeros((16, 16), np.uint8)])
    (root / "id2label.json").write_text(content)
    with pytest.raises(DataError, match=f"id2label.json: .*{message}"):
        open_dataset(root, 16, 2)


def test_hub_class_names_come_from_the_repository_id2label(tmp_path, monkeypatch):
    import huggingface_hub

    (tmp_path / "id2label.json").write_text(json.dumps({"0": "unlabeled", "1": "flat-road"}))
    asked = []

    def download(repo_id, filename, repo_type=None):
        asked.append((repo_id, filename, repo_type))
        if repo_id != "someone/roads":
            raise huggingface_hub.errors.EntryNotFoundError("no such file")
        return str(tmp_path / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    assert hub_class_names("someone/roads") == ("unlabeled", "flat-road")
    assert hub_class_names("someone/plain") is None
    assert asked[0] == ("someone/roads", "id2label.json", "dataset")


# --- CelebAMask-HQ preparation -----------------------------------------------------------------------------------


def write_raw(root, parts_by_image, scale=255, mode="L", size=8):
    """A fake raw CelebAMask-HQ: {index: {part: boolean [size, size] or raw bytes}}; masks stored as 0/scale."""
    rng = np.random.default_rng(0)
    (root / "CelebA-HQ-img").mkdir(parents=True)
    for index, parts in parts_by_image.items():
        Image.fromarray(noise(rng, 2 * size, 2 * size)).save(root / "CelebA-HQ-img" / f"{index}.jpg")
        folder = root / "CelebAMask-HQ-mask-anno" / str(index // 2000)
        folder.mkdir(parents=True, exist_ok=True)
        for part, inside in parts.items():
            path = folder / f"{index:05d}_{part}.png"
            if isinstance(inside, bytes):
                path.write_bytes(inside)
            else:
                Image.fromarray(np.where(inside, scale, 0).astype(np.uint8)).convert(mode).save(path)
    return root


def band(first, last, size=8):
    inside = np.zeros((size, size), bool)
    inside[first:last] = True
    return inside


@pytest.mark.parametrize("scale, mode", [(1, "L"), (255, "L"), (1, "RGB"), (255, "RGBA"), (1, "LA"), (255, "1")])
def test_part_masks_stored_as_zero_one_or_with_any_channels(tmp_path, scale, mode):
    raw = write_raw(tmp_path / "raw", {0: {"skin": band(2, 6), "hair": band(0, 2)}}, scale=scale, mode=mode)
    prepare_celebamask_hq(raw, tmp_path / "out", size=8)
    labels = np.asarray(datasets.load_from_disk(str(tmp_path / "out"))["train"][0]["mask"])
    expected = np.zeros((8, 8), np.uint8)
    expected[2:6], expected[0:2] = CELEBAMASK_CLASSES.index("face"), CELEBAMASK_CLASSES.index("hair")
    assert np.array_equal(labels, expected)


def test_transparent_part_pixels_are_outside(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3], rgba[2:6, :, 3] = 255, 255  # white everywhere, opaque only on rows 2..5
    raw = write_raw(tmp_path / "raw", {0: {"skin": encoded(Image.fromarray(rgba, "RGBA"), "PNG")}})
    prepare_celebamask_hq(raw, tmp_path / "out", size=8)
    labels = np.asarray(datasets.load_from_disk(str(tmp_path / "out"))["train"][0]["mask"])
    assert np.array_equal(labels != 0, band(2, 6))


def test_missing_and_empty_parts_are_skipped_and_counted(tmp_path, capsys):
    raw = write_raw(tmp_path / "raw", {
        3: {"skin": band(0, 8)}, 4: {}, 9: {}, 28001: {"hair": band(0, 4), "hat": np.zeros((8, 8), bool)},
        12: {"skin": b""}, 15: {"skin": band(0, 8), "nose": b"\x89PNG broken"},
    })  # fmt: skip
    result = prepare_celebamask_hq(raw, tmp_path / "out", size=8)
    assert (result["train"], result["val"]) == (1, 1)
    assert result["no_parts"] == [4, 9] and sorted(result["skipped"]) == [12, 15]
    assert "only empty files: 00012_skin.png" in result["skipped"][12]
    assert "cannot read part mask" in result["skipped"][15] and "00015_nose.png" in result["skipped"][15]
    assert result["empty_parts"] == ["28001_hat.png"]
    prepared = datasets.load_from_disk(str(tmp_path / "out"))
    assert prepared["train"]["image_id"] == [3] and prepared["validation"]["image_id"] == [28001]
    assert prepared["train"]["file_name"] == ["3.jpg"] and set(prepared["train"].column_names) == {
        "image", "mask", "image_id", "file_name"}  # fmt: skip
    assert read_class_names(tmp_path / "out") == CELEBAMASK_CLASSES
    assert open_dataset(tmp_path / "out", 8, len(CELEBAMASK_CLASSES)).class_names == CELEBAMASK_CLASSES

    assert cli_main(["prepare", "celebamask-hq", str(raw), str(tmp_path / "cli"), "--size", "8"]) == 0
    out = capsys.readouterr().out
    assert "wrote 1 train and 1 validation images" in out and "skipped 2 images with no part masks: ids 4, 9" in out
    assert "skipped image 15: cannot read part mask" in out and "ignored 1 empty part files: 28001_hat.png" in out

    assert cli_main(["prepare", "celebamask-hq", str(raw), str(tmp_path / "strict"), "--size", "8", "--strict"]) == 2
    err = capsys.readouterr().err
    assert "2 of 6 images have no part files" in err and "ids 4, 9" in err and "Traceback" not in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "strict").exists()
    del raw
    raw = write_raw(tmp_path / "raw2", {3: {"skin": band(0, 8), "hat": b""}})
    with pytest.raises(DataError, match=r"^1 part files are empty \(00003_hat.png\); nothing written"):
        prepare_celebamask_hq(raw, tmp_path / "strict2", size=8, strict=True)
    assert not (tmp_path / "strict2").exists() or not any((tmp_path / "strict2").iterdir())


# --- training checks the data before its first step --------------------------------------------------------------


def test_training_refuses_bad_data_before_the_first_step(tmp_path):
    from test_train import TINY, tiny_options

    from ssgan.train.loop import Trainer, train

    root = bad_folder(tmp_path / "data")
    with pytest.raises(DataError, match=r"5 of 6 dataset rows are bad") as error:
        train(tiny_options(tmp_path, data=str(root)), config=TINY, device="cpu")
    assert "face1.png): label values 7 (32 px), 9 (3 px) outside 0..2" in str(error.value)
    assert not any((tmp_path / "runs").glob("*/log.txt"))  # refused before any training

    lossy = write_folder(tmp_path / "lossy", [(".jpg", encoded(np.full((16, 16), 2, np.uint8), "JPEG"))] * 2)
    with pytest.raises(DataError, match="stored as JPEG"):
        Trainer(tiny_options(tmp_path, data=str(lossy)), config=TINY, device="cpu")
    trainer = Trainer(tiny_options(tmp_path, data=str(lossy), allow_lossy_masks=True), config=TINY, device="cpu")
    assert len(trainer.dataset) == 2 and trainer.dataset[0]["mask"].shape == (3, 16, 16)


# --- every bad row in one report: sizes, missing masks ----------------------------------------------------------


def sized_folder(root, sizes):
    """images/ and masks/ with one noise image (and a same-size zero mask) per (width, height)."""
    rng = np.random.default_rng(3)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, (width, height) in enumerate(sizes):
        Image.fromarray(noise(rng, height, width)).save(root / "images" / f"face{i}.png")
        Image.fromarray(np.zeros((height, width), np.uint8)).save(root / "masks" / f"face{i}.png")
    return root


def test_every_image_of_another_size_is_listed_before_training_without_resize(tmp_path, capsys):
    root = sized_folder(tmp_path / "data", [(16, 16), (32, 32), (16, 24), (8, 8)])
    with pytest.raises(DataError) as error:
        open_dataset(root, 16, 1, resize=False)
    message = str(error.value)
    assert "3 of 4 dataset rows are bad" in message and "face0" not in message
    assert "face1.png): image is 32x32 but the model's size is 16x16; resize=True" in message
    assert "face2.png): image is 16x24 (not square) but the model's size is 16x16" in message
    assert "face3.png): image is 8x8 but the model's size is 16x16" in message
    assert len(open_dataset(root, 16, 1, resize=True)) == 4  # resized and centre-cropped: fine
    # the cached scan is reused at another size, and the size is applied when it is read
    with pytest.raises(DataError, match=r"3 of 4 dataset rows are bad") as error:
        open_dataset(root, 32, 1, resize=False)
    assert "face1" not in str(error.value) and "face0.png): image is 16x16 but the model's size is 32x32" in str(
        error.value)
    # check-data --size says the same, and how train treats them
    assert cli_main(["check-data", str(root), "--size", "16"]) == 1
    out = capsys.readouterr().out
    assert "3 of 4 dataset rows are bad" in out and "(not square)" in out and "unless given --resize" in out
    assert cli_main(["check-data", str(root)]) == 0  # no model size: nothing to compare
    assert "no problems found" in capsys.readouterr().out


def test_missing_masks_and_orphan_masks_are_all_listed_with_the_other_bad_rows(tmp_path, capsys):
    root = write_folder(tmp_path / "data", [np.zeros((16, 16), np.uint8)] * 4 + [np.full((16, 16), 9, np.uint8)])
    (root / "masks" / "face1.png").unlink()
    (root / "masks" / "face3.png").unlink()
    (root / "images" / "face2.png").unlink()
    with pytest.raises(DataError) as error:
        open_dataset(root, 16, 3)
    message = str(error.value)
    assert "4 of 5 dataset rows are bad" in message
    assert "row 1 mask: missing (image (" in message and "face1.png) has no mask file of the same name)" in message
    assert "face3.png) has no mask file" in message
    assert "row 2 image: missing (mask (" in message and "face2.png) has no image file of the same name)" in message
    assert "face4.png): label value 9" in message
    assert cli_main(["check-data", str(root), "--classes", "3"]) == 1  # bad rows: exit 1, not 2
    out = capsys.readouterr().out
    assert "face1.png) has no mask" in out and "face2.png) has no image" in out and "face3.png) has no mask" in out
    assert len(folder_dataset(root / "images", root / "masks")) == 5


def test_check_data_classes_take_names_or_a_count_and_are_checked_as_train_checks_them(tmp_path, capsys):
    root = write_folder(tmp_path / "data", [np.full((16, 16), k, np.uint8) for k in range(3)])
    assert cli_main(["check-data", str(root), "--classes", "sky,road,car"]) == 0
    out = capsys.readouterr().out
    assert "    2  car" in out and "no problems found" in out
    assert cli_main(["check-data", str(root), "--classes", "sky,road,car,tree"]) == 1  # as train: names unseen classes
    assert "values 0..2 (3 classes) but the model has 4 classes" in capsys.readouterr().out
    assert cli_main(["check-data", str(root), "--classes", "sky,road"]) == 1
    assert "label value 2 (256 px) outside 0..1" in capsys.readouterr().out
    assert cli_main(["check-data", str(root), "--classes", "0"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "0" in err
    train_error = cli_main(["train", "--data", str(root), "--classes", "0", "--dry-run"])
    assert train_error == 2 and capsys.readouterr().err.split("error: ")[1] == err.split("error: ")[1]
    assert cli_main(["check-data", str(root), "--size", "48"]) == 2
    err = capsys.readouterr().err
    assert "size=48 must be a power of two" in err
    assert cli_main(["train", "--data", str(root), "--size", "48", "--dry-run"]) == 2
    assert capsys.readouterr().err.split("error: ")[1] == err.split("error: ")[1]


def test_cli_warnings_are_plain_lines(capsys, monkeypatch):
    import ssgan.cli as cli

    def warns(args):
        warnings.warn("images will be upsampled", UpsamplingWarning, stacklevel=1)
        warnings.warn("another", UserWarning, stacklevel=1)
        return 0

    import argparse

    parser = argparse.ArgumentParser(prog="ssgan")
    parser.add_subparsers(dest="command").add_parser("demo").set_defaults(run=warns)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert cli.main(["demo"]) == 0
    err = capsys.readouterr().err
    assert err == "warning: images will be upsampled\nwarning: another\n"
    assert warnings.showwarning is not cli._show_warning  # restored after the command
