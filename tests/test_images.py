"""Issue #11 item 7: photos as phones and editors write them read the same way by inversion and the training data."""
import io
import warnings

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from ssgan import inversion as I
from ssgan.images import TRANSPARENT_BACKGROUND, UpsamplingWarning, read_image, to_rgb
from ssgan.train.data import SegmentationDataset, open_dataset

datasets.disable_progress_bars()
ROTATE = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SSGAN_CACHE", str(tmp_path / "cache"))


def upright(size=32):
    """A photo whose orientation shows: a red top-left quadrant, a blue top-right one, the rest grey."""
    pixels = np.full((size, size, 3), 128, np.uint8)
    pixels[: size // 2, : size // 2] = (220, 30, 30)
    pixels[: size // 2, size // 2 :] = (30, 30, 220)
    return pixels


def as_stored_by_a_phone(pixels, orientation, path, fmt):
    """Save the sensor's view (the upright photo turned the other way) with the EXIF tag that turns it back."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    options = {"quality": 98, "subsampling": 0} if fmt == "JPEG" else {}  # full-resolution colour: sharp edges
    Image.fromarray(pixels).transpose(ROTATE[orientation]).save(path, format=fmt, exif=exif, **options)
    return path


def to_pixels(x):
    """[3,H,W] in [-1,1] -> uint8-like float [H,W,3]."""
    return ((x.permute(1, 2, 0) + 1) * 127.5).numpy()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_exif_orientation_is_applied_everywhere(tmp_path, orientation, fmt):
    path = as_stored_by_a_phone(upright(), orientation, tmp_path / f"phone.{fmt.lower()}", fmt)
    tolerance = 6 if fmt == "JPEG" else 0
    assert np.abs(np.asarray(read_image(path), np.float32) - upright()).max() <= tolerance
    assert np.abs(to_pixels(I.load_image(path, 32)) - upright()).max() <= tolerance + 1e-3  # inversion and encoder

    # training data (and the metrics' real images, which are read from it): the label map turns with its image
    labels = np.zeros((32, 32), np.uint8)
    labels[:16, :16] = 1
    exif = Image.Exif()
    exif[0x0112] = orientation
    mask = io.BytesIO()
    Image.fromarray(labels).transpose(ROTATE[orientation]).save(mask, format="PNG", exif=exif)
    features = datasets.Features(image=datasets.Image(), mask=datasets.Image())
    rows = {"image": [{"bytes": path.read_bytes(), "path": path.name}], "mask": [{"bytes": mask.getvalue(), "path": "m"}]}
    item = SegmentationDataset(datasets.Dataset.from_dict(rows, features=features), 32, 2)[0]
    assert np.abs(to_pixels(item["image"]) - upright()).max() <= tolerance + 1e-3
    assert np.array_equal(item["mask"].argmax(0).numpy(), labels)


def test_a_sideways_photo_without_its_tag_would_differ(tmp_path):
    """The example of the issue: without the tag applied, orientation 6 comes out sideways."""
    path = as_stored_by_a_phone(upright(), 6, tmp_path / "phone.png", "PNG")
    stored = np.asarray(Image.open(path).convert("RGB"))
    assert not np.array_equal(stored, upright()) and np.array_equal(np.asarray(read_image(path)), upright())


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3] = (255, 0, 0)  # red hidden under transparency
    rgba[:4, :, 3] = 255  # top half opaque red
    rgba[4:6, :, 3] = 128  # half-transparent red
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cut-out.png")
    got = np.asarray(read_image(tmp_path / "cut-out.png")).astype(int)
    assert TRANSPARENT_BACKGROUND == (255, 255, 255)
    assert (got[:4] == (255, 0, 0)).all() and (got[6:] == 255).all()  # the hidden red never shows
    assert (np.abs(got[4:6] - (255, 127, 127)) <= 1).all()
    x = I.load_image(tmp_path / "cut-out.png", 8)
    assert torch.allclose(x[:, 6:], torch.ones(3, 2, 8))

    la = np.zeros((8, 8, 2), np.uint8)
    la[..., 0], la[:4, :, 1] = 10, 255  # dark grey, transparent below row 4
    assert (np.asarray(to_rgb(Image.fromarray(la, "LA")))[4:] == 255).all()
    palette = Image.fromarray(np.repeat([[0], [1]], 4, axis=0).repeat(8, axis=1).astype(np.uint8), "P")
    palette.putpalette([0, 255, 0, 0, 0, 255] + [0] * 762)
    palette.info["transparency"] = 1  # index 1 (blue) is transparent
    palette.save(tmp_path / "palette.png")
    got = np.asarray(read_image(tmp_path / "palette.png"))
    assert (got[:4] == (0, 255, 0)).all() and (got[4:] == 255).all()
    assert (np.asarray(to_rgb(Image.fromarray(rgba, "RGBA").convert("RGBa")))[6:] == 255).all()


def test_transparent_training_images_match_inversion(tmp_path):
    rgba = np.random.default_rng(0).integers(0, 256, (16, 16, 4), dtype=np.uint8)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(rgba, "RGBA").save(tmp_path / "images" / "a.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "masks" / "a.png")
    item = open_dataset(tmp_path, 16, 1)[0]
    assert torch.equal(item["image"], I.load_image(tmp_path / "images" / "a.png", 16))


def test_small_photos_warn_when_upsampled(tmp_path):
    Image.fromarray(upright(16)).save(tmp_path / "small.png")
    with pytest.warns(UpsamplingWarning, match=r"small.png: the photo is 16x16, smaller than the model's 32x32"):
        assert I.load_image(tmp_path / "small.png", 32).shape == (3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        I.load_image(tmp_path / "small.png", 16)
        I.load_image(tmp_path / "small.png", 8)  # downsampling is fine
    with pytest.raises(ValueError, match="cannot be converted to RGB"):
        to_rgb(Image.fromarray(np.zeros((4, 4), np.float32)))
