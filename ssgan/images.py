"""Photos as they come from phones and editors, read the same way by every part of ssgan.

Training data, inversion (`ssgan invert`, with or without the encoder) and the metrics' real images all go through
`to_rgb`, so one photo gives the same pixels everywhere:

- the EXIF orientation tag is applied (`PIL.ImageOps.exif_transpose`): a phone photo stored sideways with
  orientation 6 or 8 comes out upright, as image viewers show it;
- transparency (RGBA, LA, PA, premultiplied modes, or a palette, grey or RGB image with a transparent colour) is
  composited on white, `TRANSPARENT_BACKGROUND`, so the colours hidden under transparent pixels never show;
- modes with no meaning as a photo (float "F", 32-bit "I", 16-bit "I;16") are refused rather than clipped.

`warn_if_upsampled` warns (UpsamplingWarning) when a photo is smaller than the model's resolution: enlarging it
invents detail, and a model trained or inverted on such photos learns blur.
"""
import io
import os
import warnings
from pathlib import Path

TRANSPARENT_BACKGROUND = (255, 255, 255)  # white, as most viewers and editors show transparency on paper
# Pillow modes that hold a picture convertible to RGB.
CONVERTIBLE_MODES = ("RGB", "RGBA", "RGBX", "RGBa", "L", "LA", "La", "P", "PA", "1", "CMYK", "YCbCr", "LAB", "HSV")


class UpsamplingWarning(UserWarning):
    """A photo is smaller than the resolution it is resized to, so it is enlarged."""


def to_rgb(image, where="image"):
    """A PIL image -> an upright RGB PIL image (EXIF orientation applied, transparency composited on white).

    `where` names the image in errors and warnings (a file name, a dataset row). Raises ValueError for a mode with no
    RGB meaning. A broken EXIF block is warned about and the image used as stored.
    """
    from PIL import Image, ImageOps

    if image.mode not in CONVERTIBLE_MODES:
        raise ValueError(f"{where}: image mode {image.mode!r} cannot be converted to RGB "
                         f"(expected one of {', '.join(CONVERTIBLE_MODES)})")  # fmt: skip
    try:
        image = ImageOps.exif_transpose(image)
    except Exception as e:  # noqa: BLE001 (Pillow raises many types for a damaged EXIF block)
        warnings.warn(f"{where}: its EXIF orientation cannot be read ({e}); using the image as stored", stacklevel=2)
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*TRANSPARENT_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def read_image(source, where=None):
    """An image file (a path, bytes or a binary file object) -> an upright RGB PIL image (see `to_rgb`).

    Raises FileNotFoundError for a missing path and ValueError, naming the file, for one that cannot be decoded
    (not an image, truncated, or a mode with no RGB meaning).
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, (str, os.PathLike)):
        where = where or str(source)
        if not Path(source).is_file():
            raise FileNotFoundError(f"no image file {source}")
    elif isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    where = where or "image"
    try:
        with Image.open(source) as image:
            image.load()
            return to_rgb(image, where)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"{where}: not a readable image ({e})") from None


def warn_if_upsampled(width, height, size, where="image"):
    """Warn (UpsamplingWarning) when a width x height photo would be enlarged to cover size x size; True if so."""
    if min(width, height) >= size:
        return False
    warnings.warn(f"{where}: the photo is {width}x{height}, smaller than the model's {size}x{size}, so it is "
                  "upsampled; details are invented, not recovered (use a larger photo if you have one)",
                  UpsamplingWarning, stacklevel=2)  # fmt: skip
    return True
