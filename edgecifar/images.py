"""The one image decoder: file bytes -> uint8 [H, W, 3] RGB at the run's input size, the same pixels for training,
evaluation, bench, export calibration and `predict`. Imports only numpy and Pillow (the device side uses it).

The rules (also in the README, "Data"):
- EXIF orientation is applied (phone photos store their rotation there).
- Images with more than 8 bits per sample (Pillow modes I;16*, I, F: depth cameras, scientific TIFFs) are
  mapped to 0-255 linearly from their own minimum to their maximum, never clipped; NaN becomes 0.
- Transparency (RGBA, LA, PA, a palette or a colour with tRNS) is composited on white, BACKGROUND.
- Images of more than Pillow's decompression-bomb limit (Image.MAX_IMAGE_PIXELS, 89.5 M pixels) are refused.
- Only raster formats that Pillow decodes itself are opened (FORMATS): never EPS/PostScript, which
  Pillow would hand to Ghostscript, whatever the file's name says.
- Every failure is a DataError that names the file.
- `resize` (bilinear, antialiased when shrinking; the aspect ratio is not kept) brings the image to the input
  size, (height, width) (edgecifar.contract; 32x32 unless the run chose another).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .contract import DEFAULT_SIZE, Size
from .errors import DataError

BACKGROUND = (255, 255, 255)  # what transparent pixels become
DECODER_VERSION = 2  # part of the decoded-data cache key: bump it whenever these rules change
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
FORMATS = ("JPEG", "PNG", "GIF", "BMP", "DIB", "WEBP", "TIFF", "PPM", "AVIF", "ICO", "TGA", "QOI", "JPEG2000")


def read_image(path: Path | str, size: Size | int = DEFAULT_SIZE) -> np.ndarray:
    """An image file -> uint8 [H, W, 3] RGB, size (H, W) (an int: square). Raises DataError (naming the file)
    for anything else."""
    return decode_image(read_file(path), str(path), size)


def read_file(path: Path | str) -> bytes:
    """An image file's bytes; DataError (naming the file) for a folder, a missing or an unreadable file."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a directory, not an image")
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read image {path}: {e.strerror or e}") from None


def decode_image(data: bytes, name: str, size: Size | int = DEFAULT_SIZE) -> np.ndarray:
    """Encoded image bytes -> uint8 [H, W, 3] RGB, size (H, W) (an int: square); `name` is what a DataError calls
    the file."""
    if not data:
        raise DataError(f"{name} is an empty file, not an image")
    try:
        # Pillow only warns between 1x and 2x its pixel limit; here both are refusals (a classifier's input never
        # needs such an image, and decoding one takes gigabytes)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as img:
                _check_pixels(img.size)
                img = ImageOps.exif_transpose(img)
                return np.asarray(resize(to_rgb(img), size), dtype=np.uint8).copy()
    except DataError as e:
        raise DataError(f"{name}: {e}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"{name}: {_first_line(e)}") from None
    except UnidentifiedImageError:
        raise DataError(f"{name} is not an image in a format edgecifar reads ({', '.join(FORMATS)})") from None
    except Exception as e:  # noqa: BLE001 - any decoder failure on untrusted bytes is a data problem
        raise DataError(f"corrupt or unreadable image {name}: {_first_line(e)}") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow image -> mode RGB, by the rules in this module's docstring."""
    if img.mode in ("I", "F") or img.mode.startswith("I;"):
        return Image.fromarray(_stretch_to_uint8(np.asarray(img)), "L").convert("RGB")
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def resize(img: Image.Image, size: Size | int = DEFAULT_SIZE) -> Image.Image:
    """The one resize to the model's input: bilinear, antialiased when shrinking, to size (H, W) (an int:
    square)."""
    height, width = (size, size) if isinstance(size, int) else size
    if img.size == (width, height):  # Pillow's sizes are (width, height)
        return img
    return img.resize((width, height), Image.BILINEAR, reducing_gap=None)


def _stretch_to_uint8(samples: np.ndarray) -> np.ndarray:
    """16/32-bit or float samples -> uint8, linearly from their own finite min..max (a flat image: 0)."""
    values = samples.astype(np.float64)
    finite = values[np.isfinite(values)]
    out = np.zeros(values.shape, dtype=np.uint8)
    if finite.size == 0:
        return out
    low, high = float(finite.min()), float(finite.max())
    if high > low:
        scaled = (np.nan_to_num(values, nan=low, posinf=high, neginf=low) - low) * (255.0 / (high - low))
        out = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return out


def _check_pixels(size: tuple[int, int]) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit and size[0] * size[1] > limit:
        raise DataError(f"{size[0]}x{size[1]} pixels is over the decompression-bomb limit of {limit:,} pixels")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]
