"""The one image decoder (edgecifar.images): the same pixels for training and for `predict`, whatever the file."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
from PIL import Image

from edgecifar import runtime
from edgecifar.data import load_data
from edgecifar.errors import DataError
from edgecifar.images import BACKGROUND, decode_image, read_image

from conftest import huge_png, small_tree

GRADIENT = np.linspace(0, 1, 64)[None, :].repeat(64, 0)  # 64x64, black to white, left to right


def gradient_files(folder) -> dict[str, object]:
    """The same gradient at 8, 16 (both byte orders) and 32 bits, and as floats (two value ranges)."""
    folder.mkdir(parents=True, exist_ok=True)
    images = {
        "gray8.png": Image.fromarray((GRADIENT * 255).astype(np.uint8)),
        "gray16.png": Image.fromarray((GRADIENT * 65535).astype(np.uint16)),  # mode I;16
        "gray16b.tif": Image.fromarray((GRADIENT * 65535).astype(">u2")),  # mode I;16B
        "int32.tif": Image.fromarray((GRADIENT * 4_000_000).astype(np.int32), "I"),
        "float01.tif": Image.fromarray(GRADIENT.astype(np.float32), "F"),
        "float_depth.tif": Image.fromarray((GRADIENT * 5.5 + 0.5).astype(np.float32), "F"),  # metres
    }
    for name, img in images.items():
        img.save(folder / name)
    return {name: folder / name for name in images}


def test_high_bit_depth_images_keep_their_gradient(tmp_path):
    files = gradient_files(tmp_path)
    reference = read_image(files["gray8.png"]).astype(int)
    assert reference[16, 0, 0] < 10 and reference[16, -1, 0] > 245  # a real gradient, not a flat picture
    for name, path in files.items():
        decoded = read_image(path)
        assert decoded.shape == (32, 32, 3) and decoded.dtype == np.uint8
        assert np.abs(decoded.astype(int) - reference).max() <= 2, name  # not clipped to white or black


def test_float_image_with_nan_and_a_flat_16_bit_image(tmp_path):
    values = GRADIENT.astype(np.float32).copy()
    values[:, :8] = np.nan
    Image.fromarray(values, "F").save(tmp_path / "nan.tif")
    decoded = read_image(tmp_path / "nan.tif")
    assert decoded[:, :4].max() == 0 and decoded[:, -1].min() > 240
    Image.fromarray(np.full((40, 40), 1234, np.uint16)).save(tmp_path / "flat.png")
    assert read_image(tmp_path / "flat.png").max() == 0  # no range to map: one documented value


def oriented_jpeg(path, orientation: int) -> None:
    """A 48x64 photo stored sideways: left half red, right half blue, with an EXIF orientation tag."""
    pixels = np.zeros((48, 64, 3), np.uint8)
    pixels[:, :32] = (220, 30, 30)
    pixels[:, 32:] = (30, 30, 220)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, exif=exif.tobytes(), quality=95)


def test_exif_orientation_is_applied(tmp_path):
    oriented_jpeg(tmp_path / "phone.jpg", 6)  # "rotate 90 degrees clockwise to view": the red half goes on top
    upright = read_image(tmp_path / "phone.jpg").astype(int)
    assert upright[:12].mean(axis=(0, 1)).argmax() == 0 and upright[-12:].mean(axis=(0, 1)).argmax() == 2
    oriented_jpeg(tmp_path / "plain.jpg", 1)
    plain = read_image(tmp_path / "plain.jpg").astype(int)
    assert plain[:, :12].mean(axis=(0, 1)).argmax() == 0


def test_transparency_is_composited_on_the_documented_background(tmp_path):
    colour = np.zeros((40, 40, 4), np.uint8)
    colour[..., 0] = 200  # red where opaque
    colour[:, 20:, 3] = 255  # left half fully transparent
    hidden_green = colour.copy()
    hidden_green[:, :20, :3] = (0, 255, 0)  # looks the same: the transparent pixels' colour is invisible
    Image.fromarray(colour, "RGBA").save(tmp_path / "a.png")
    Image.fromarray(hidden_green, "RGBA").save(tmp_path / "b.png")
    a, b = read_image(tmp_path / "a.png"), read_image(tmp_path / "b.png")
    assert np.array_equal(a, b)
    assert tuple(a[16, 2]) == BACKGROUND and tuple(a[16, -2]) == (200, 0, 0)

    la = np.zeros((40, 40, 2), np.uint8)  # grey + alpha, fully transparent
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    palette = Image.new("P", (40, 40), 0)
    palette.putpalette([0, 0, 0] * 256)
    palette.save(tmp_path / "trns.png", transparency=0)  # palette with tRNS
    Image.fromarray(np.full((40, 40, 3), 7, np.uint8)).save(tmp_path / "rgb.png", transparency=(7, 7, 7))
    for name in ("la.png", "trns.png", "rgb.png"):
        assert (read_image(tmp_path / name) == np.array(BACKGROUND, np.uint8)).all(), name


def test_decompression_bomb_is_a_data_error_naming_the_file(tmp_path, monkeypatch):
    tree = small_tree(tmp_path / "tree")
    huge_png(tree / "train" / "cat" / "panorama.png")
    for load in (
        lambda: load_data(str(tree), tmp_path / "cache"),
        lambda: runtime.read_image(tree / "train" / "cat" / "panorama.png"),
    ):
        with pytest.raises(DataError, match=r"panorama\.png.*(limit|bomb)") as error:
            load()
        assert "\n" not in str(error.value)
    # between Pillow's limit and twice it Pillow only warns: refused all the same
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "1600px.png")
    with pytest.raises(DataError, match="1600px.png"):
        read_image(tmp_path / "1600px.png")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + b"\x00" * 200, "not an image"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n", "PostScript image .*never opens"),  # never Ghostscript
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "x.png"),
        (b"GIF89a\xff\xff\xff\xff", "x.png"),
    ],
)
def test_any_decode_failure_is_one_line_naming_the_file(tmp_path, content, message):
    (tmp_path / "x.png").write_bytes(content)
    with pytest.raises(DataError, match=message) as error:
        read_image(tmp_path / "x.png")
    assert "x.png" in str(error.value) and "\n" not in str(error.value) and "BytesIO" not in str(error.value)


def test_truncated_jpeg_names_the_file(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "a.jpg")
    data = (tmp_path / "a.jpg").read_bytes()
    with pytest.raises(DataError, match="cut.jpg"):
        decode_image(data[: len(data) // 2], "cut.jpg")


def test_training_and_predict_decode_every_kind_of_file_alike(tmp_path):
    """One decoder: the pixels load_data gives training are the pixels runtime.read_image gives predict."""
    tree = small_tree(tmp_path / "tree")
    odd = tree / "test" / "cat"
    oriented_jpeg(odd / "zz-phone.jpg", 6)
    for name, path in gradient_files(tmp_path / "grads").items():
        (odd / f"zz-{name}").write_bytes(path.read_bytes())
    rgba = np.random.default_rng(1).integers(0, 255, (50, 70, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(odd / "zz-rgba.png")
    Image.fromarray(rgba[..., :3]).convert("CMYK").save(odd / "zz-cmyk.jpg")
    Image.fromarray(rgba[..., :3]).convert("P").save(odd / "zz-palette.gif")
    splits = load_data(str(tree), tmp_path / "cache")
    names = sorted(p.name for p in odd.iterdir())
    cat_rows = np.flatnonzero(splits.test_y == splits.classes.index("cat"))
    assert len(cat_rows) == len(names)
    for row, name in zip(cat_rows, names):
        assert np.array_equal(splits.test_x[row], runtime.read_image(odd / name)), name


def test_the_decoder_is_light():
    """The device side uses it: numpy and Pillow only, never torch."""
    import json
    import subprocess
    import sys

    code = (
        "import json, sys; import edgecifar.images, edgecifar.discovery, edgecifar.cifar_batches; "
        "print(json.dumps([m for m in ('torch', 'torchvision', 'timm') if m in sys.modules]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


# ---------------------------------------------------------------- formats that need a plugin (HEIC) or none here


def _heic_bytes(image: np.ndarray) -> bytes:
    from pillow_heif import register_heif_opener

    register_heif_opener()
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="HEIF", quality=95)
    return buffer.getvalue()


@pytest.fixture
def without_pillow_heif(monkeypatch):
    """This process as if pillow-heif were not installed (its import fails, as it would)."""
    from edgecifar import images

    monkeypatch.setitem(sys.modules, "pillow_heif", None)
    images.readable_formats.cache_clear()
    yield
    images.readable_formats.cache_clear()


def test_heic_is_read_through_pillow_heif(tmp_path):
    pytest.importorskip("pillow_heif")
    image = np.zeros((32, 32, 3), np.uint8)
    image[:, :16] = (220, 40, 40)
    (tmp_path / "IMG_0001.HEIC").write_bytes(_heic_bytes(image))
    decoded = read_image(tmp_path / "IMG_0001.HEIC")
    assert decoded.shape == (32, 32, 3) and abs(int(decoded[16, 4, 0]) - 220) < 20 and decoded[16, 28, 0] < 30


def test_heic_without_pillow_heif_is_named_with_how_to_read_it(tmp_path, without_pillow_heif):
    from edgecifar.images import image_name, unreadable_format

    # the bytes decide, whatever the name says: an iPhone photo renamed .jpg is still named HEIC
    (tmp_path / "photo.jpg").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64)
    with pytest.raises(DataError, match=r"photo\.jpg: HEIC/HEIF image .*pip install pillow-heif.*convert") as error:
        read_image(tmp_path / "photo.jpg")
    assert "\n" not in str(error.value)
    assert image_name("IMG_0001.HEIC") and "pillow-heif" in unreadable_format("IMG_0001.HEIC")


@pytest.mark.parametrize(
    "name, kind", [("a.jxl", "JPEG XL"), ("a.CR2", "camera RAW"), ("a.psd", "Photoshop"), ("a.svg", "SVG")]
)
def test_known_formats_never_decoded_here_are_named(tmp_path, name, kind):
    from edgecifar.images import image_name, unreadable_format

    assert image_name(name) and unreadable_format(name).startswith(kind)
    (tmp_path / name).write_bytes(b"\x00" * 64)
    with pytest.raises(DataError, match=kind):
        read_image(tmp_path / name)


def test_readable_formats_have_no_unreadable_note():
    from edgecifar.images import image_extensions, readable_formats, unreadable_format

    assert all(unreadable_format(f"x{ext}") is None for ext in image_extensions())
    assert unreadable_format("notes.txt") is None and "PNG" in readable_formats()


def test_a_decompression_bomb_in_heic_is_refused(tmp_path, monkeypatch):
    pytest.importorskip("pillow_heif")
    (tmp_path / "big.heic").write_bytes(_heic_bytes(np.zeros((40, 40, 3), np.uint8)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(DataError, match=r"big\.heic.*limit"):
        read_image(tmp_path / "big.heic")
