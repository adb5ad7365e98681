"""The one image decoder: file bytes -> uint8 [H, W, 3] RGB at the run's input size, the same pixels for training,
evaluation, bench, export calibration and `predict`. Imports only numpy and Pillow (the device side uses it).

The rules (also in the README, "Data"):
- EXIF orientation is applied (phone photos store their rotation there).
- Images with more than 8 bits per sample (Pillow modes I;16*, I, F: depth cameras, scientific TIFFs) are
  mapped to 0-255 linearly from their own minimum to their maximum, never clipped; NaN becomes 0.
- Transparency (RGBA, LA, PA, a palette or a colour with tRNS) is composited on white, BACKGROUND.
- Images of more than Pillow's decompression-bomb limit (Image.MAX_IMAGE_PIXELS, 89.5 M pixels) are refused.
- Only raster formats that Pillow decodes itself are opened (FORMATS): never EPS/PostScript, which
  Pillow would hand to Ghostscript, whatever the file's name says. HEIC/HEIF (iPhone photos) is read through
  pillow-heif where it is installed (`pip install pillow-heif`, the `heif` extra), registered on first use.
- A file of an image format that cannot be decoded here (HEIC without pillow-heif, JPEG XL, camera RAW, ...)
  is named as such, with how to read or convert it (`unreadable_format`), never called "not an image".
- Every failure is a DataError that names the file.
- `resize` (bilinear, antialiased when shrinking; the aspect ratio is not kept) brings the image to the input
  size, (height, width) (edgecifar.contract; 32x32 unless the run chose another).
"""

from __future__ import annotations

import functools
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .contract import DEFAULT_SIZE, Size
from .errors import DataError

BACKGROUND = (255, 255, 255)  # what transparent pixels become
DECODER_VERSION = 2  # part of the decoded-data cache key: bump it whenever these rules change
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
FORMATS = ("JPEG", "PNG", "GIF", "BMP", "DIB", "WEBP", "TIFF", "PPM", "AVIF", "ICO", "TGA", "QOI", "JPEG2000")
# file names of the formats above (what discovery takes for an image); the plugin formats' are in PLUGINS
EXTENSIONS = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".apng",
        ".bmp",
        ".dib",
        ".gif",
        ".webp",
        ".tif",
        ".tiff",
        ".ppm",
        ".pgm",
        ".pbm",
        ".pnm",
        ".ico",
        ".tga",
        ".qoi",
    }
)
CONVERT = "convert them to JPEG or PNG"


@dataclass(frozen=True)
class Codec:
    """An image format whose decoder may be missing here: its name, file extensions, the leading bytes that
    identify it (offset, bytes), Pillow's format id once readable, and how to get it read."""

    name: str
    extensions: frozenset[str]
    signatures: tuple[tuple[int, bytes], ...]
    pillow_format: str | None  # None: edgecifar never reads it
    hint: str


def _ftyp(*brands: str) -> tuple[tuple[int, bytes], ...]:
    return tuple((4, b"ftyp" + brand.encode()) for brand in brands)  # ISO base media files (HEIF, AVIF)


PLUGINS = (
    Codec(
        "HEIC/HEIF",
        frozenset({".heic", ".heif", ".hif", ".heics", ".heifs"}),
        _ftyp("heic", "heix", "heim", "heis", "hevc", "hevx", "mif1", "msf1"),
        "HEIF",
        f"`pip install pillow-heif` (edgecifar's `heif` extra) to read them, or {CONVERT}",
    ),
    Codec(
        "AVIF",
        frozenset({".avif", ".avifs"}),
        _ftyp("avif", "avis"),
        "AVIF",
        f"a Pillow built with AVIF (its wheels since 11.3 are) reads them, or {CONVERT}",
    ),
    Codec(
        "JPEG 2000",
        frozenset({".jp2", ".j2k", ".j2c", ".jpc", ".jpf", ".jpx"}),
        ((0, b"\x00\x00\x00\x0cjP  "), (0, b"\xff\x4f\xff\x51")),
        "JPEG2000",
        f"a Pillow built with OpenJPEG (its wheels are) reads them, or {CONVERT}",
    ),
    Codec(
        "JPEG XL", frozenset({".jxl"}), ((0, b"\xff\x0a"), (4, b"JXL ")), None, f"edgecifar does not read it: {CONVERT}"
    ),
    Codec(
        "camera RAW",
        frozenset({".dng", ".cr2", ".cr3", ".nef", ".nrw", ".arw", ".raf", ".orf", ".rw2", ".pef", ".srw", ".raw"}),
        (),
        None,
        f"edgecifar does not read RAW files: develop and {CONVERT}",
    ),
    Codec("Photoshop", frozenset({".psd", ".psb"}), ((0, b"8BPS"),), None, f"edgecifar does not read it: {CONVERT}"),
    Codec(
        "SVG (vector)",
        frozenset({".svg", ".svgz"}),
        (),
        None,
        f"edgecifar reads raster images only: render and {CONVERT}",
    ),
    Codec(
        "PostScript",
        frozenset({".eps", ".ps"}),
        ((0, b"%!PS"),),
        None,
        f"edgecifar never opens them (Pillow would run Ghostscript): {CONVERT}",
    ),
)


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
            with Image.open(io.BytesIO(data), formats=readable_formats()) as img:
                _check_pixels(img.size)
                img = ImageOps.exif_transpose(img)
                return np.asarray(resize(to_rgb(img), size), dtype=np.uint8).copy()
    except DataError as e:
        raise DataError(f"{name}: {e}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"{name}: {_first_line(e)}") from None
    except UnidentifiedImageError:
        codec = _codec_of(data, name)
        if codec is not None and codec.pillow_format not in readable_formats():
            raise DataError(f"{name}: {_unreadable(codec)}") from None
        raise DataError(
            f"{name} is not an image in a format edgecifar reads ({', '.join(readable_formats())})"
        ) from None
    except Exception as e:  # noqa: BLE001 - any decoder failure on untrusted bytes is a data problem
        raise DataError(f"corrupt or unreadable image {name}: {_first_line(e)}") from None


@functools.cache
def readable_formats() -> tuple[str, ...]:
    """Pillow's format ids that decode_image opens here: FORMATS that this Pillow was built with, and HEIF when
    pillow-heif is installed (its opener is registered here, on first use: nothing else imports it)."""
    from PIL import features

    found = [f for f in FORMATS if f not in ("AVIF", "JPEG2000")]
    found += [f for f, feature in (("AVIF", "avif"), ("JPEG2000", "jpg_2000")) if features.check(feature)]
    try:
        from pillow_heif import register_heif_opener

        register_heif_opener()
        found.append("HEIF")
    except ImportError:  # optional: a HEIC file is then named, with how to read it (Codec.hint)
        pass
    return tuple(found)


def image_extensions() -> frozenset[str]:
    """The file extensions (lower case, with the dot) of the images decode_image reads here."""
    plugins = {ext for c in PLUGINS if c.pillow_format in readable_formats() for ext in c.extensions}
    return EXTENSIONS | plugins


def image_name(name: str) -> bool:
    """Whether a file name is an image's: readable here, or of a known format that is not (to be named)."""
    return Path(name).suffix.lower() in image_extensions() or _codec_of(b"", name) is not None


def unreadable_format(name: str) -> str | None:
    """For a file name of a known image format that cannot be decoded here: "HEIC/HEIF image (not readable
    here: install pillow-heif ...)", its name and how to read or convert it; else None (a readable image name,
    or not an image name at all)."""
    codec = _codec_of(b"", name)
    return None if codec is None or codec.pillow_format in readable_formats() else _unreadable(codec)


def _unreadable(codec: Codec) -> str:
    return f"{codec.name} image (not readable here: {codec.hint})"


def _codec_of(data: bytes, name: str) -> Codec | None:
    """The plugin format of a file, by its leading bytes, else by its name's extension; None for neither."""
    for codec in PLUGINS:
        if any(data[offset : offset + len(magic)] == magic for offset, magic in codec.signatures):
            return codec
    suffix = Path(name).suffix.lower()
    return next((c for c in PLUGINS if suffix in c.extensions), None)


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
