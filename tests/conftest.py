"""Shared fixtures: tiny synthetic data in every supported layout, and the real data when present."""

from __future__ import annotations

import os
import pickle
import shutil
import struct
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CLASSES = ["cat", "dog", "ship"]
SHARED_ARCHIVE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


def pytest_configure(config) -> None:
    """Where Python writes no bytecode (PYTHONDONTWRITEBYTECODE), every process the tests start (a bench worker per
    row, `python -m edgecifar ...`) compiled torch, ExecuTorch and TensorFlow from source again: an ExecuTorch
    worker spent 15.8 s of CPU on that, 7.6 s reading bytecode. The session writes it into a folder of its own
    (PYTHONPYCACHEPREFIX, removed at the end), this process too, so that each module is compiled once; the
    environment's folders are never written. Where bytecode is written, or a prefix is set, nothing changes."""
    if not os.environ.get("PYTHONDONTWRITEBYTECODE") or os.environ.get("PYTHONPYCACHEPREFIX"):
        return
    prefix = tempfile.mkdtemp(prefix="pytest-bytecode-")
    config._edgecifar_pycache = (prefix, os.environ.pop("PYTHONDONTWRITEBYTECODE"))
    os.environ["PYTHONPYCACHEPREFIX"] = prefix
    sys.pycache_prefix, sys.dont_write_bytecode = prefix, False


def pytest_unconfigure(config) -> None:
    saved = getattr(config, "_edgecifar_pycache", None)
    if saved is not None:
        prefix, value = saved
        os.environ.pop("PYTHONPYCACHEPREFIX", None)
        os.environ["PYTHONDONTWRITEBYTECODE"] = value
        sys.pycache_prefix, sys.dont_write_bytecode = None, True
        shutil.rmtree(prefix, ignore_errors=True)


def synthetic_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class is visible (a bright channel per class), so a model can learn them."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(CLASSES)
    images = rng.integers(0, 90, size=(n, 32, 32, 3), dtype=np.uint8)
    images[np.arange(n), :, :, labels] += 150
    return images, labels


def write_images(folder: Path, n: int, label: int, ext: str = "png", seed: int = 0) -> list[Path]:
    """n synthetic 32x32 images of class `label` saved as folder/<label>-<i>.<ext> (Pillow picks the format)."""
    folder.mkdir(parents=True, exist_ok=True)
    images, _ = synthetic_images(n * len(CLASSES), seed)
    paths = []
    for i, image in enumerate(images[label :: len(CLASSES)][:n]):
        paths.append(folder / f"{label}-{i:03d}.{ext}")
        Image.fromarray(image).save(paths[-1])
    return paths


def small_tree(root: Path, counts: dict[str, tuple[int, int]] | None = None) -> Path:
    """root/train/<class>/ and root/test/<class>/ with (train, test) PNGs per class (default 4 and 2 each)."""
    counts = counts or {c: (4, 2) for c in CLASSES}
    for label, (name, (n_train, n_test)) in enumerate(counts.items()):
        for split, n in (("train", n_train), ("test", n_test)):
            write_images(root / split / name, n, label % len(CLASSES), seed=len(split))
    return root


def tar_of(folder: Path, archive: Path) -> Path:
    """folder's contents as a .tar.gz, links stored as links (like `tar czf ARCHIVE -C folder .`)."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=".")
    return archive


def huge_png(path, side: int = 20000) -> None:
    """A tiny file whose header declares side x side pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * (side // 8 + 1) * 16))
        + chunk(b"IEND", b"")
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)


@pytest.fixture(scope="session")
def image_tree(tmp_path_factory) -> Path:
    """An ImageFolder root: train/<class>/*.png (60) and test/<class>/*.jpg (30), some not 32x32."""
    root = tmp_path_factory.mktemp("tree")
    for split, n, ext in (("train", 60, "png"), ("test", 30, "jpg")):
        images, labels = synthetic_images(n, seed=len(split))
        for i, (img, label) in enumerate(zip(images, labels)):
            folder = root / split / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            pil = Image.fromarray(img)
            if i % 7 == 0:  # any size is accepted and resized to 32x32
                pil = pil.resize((48, 40))
            pil.save(folder / f"{i:04d}.{ext}", quality=95)
    return root


@pytest.fixture(scope="session")
def image_archive(image_tree, tmp_path_factory) -> Path:
    """The same tree as a .tar.gz with one top folder, like the shared CIFAR-10 copy."""
    path = tmp_path_factory.mktemp("archive") / "tiny-jpeg.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(image_tree, arcname="tiny-jpeg")
    return path


@pytest.fixture(scope="session")
def cifar_batches(tmp_path_factory) -> Path:
    """torchvision's extracted layout: <root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}."""
    root = tmp_path_factory.mktemp("cifar")
    folder = root / "cifar-10-batches-py"
    folder.mkdir()

    def dump(name: str, n: int, seed: int) -> None:
        images, labels = synthetic_images(n, seed)
        data = images.transpose(0, 3, 1, 2).reshape(n, -1)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels.tolist()}, f)

    for i in range(1, 6):
        dump(f"data_batch_{i}", 12, seed=i)
    dump("test_batch", 15, seed=9)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CLASSES}, f)
    return root


@pytest.fixture()
def cache_dir(tmp_path) -> Path:
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not SHARED_ARCHIVE.exists():
        pytest.skip("../shared/data/cifar10-jpeg.tar.gz is not here")
    return SHARED_ARCHIVE


@pytest.fixture(autouse=True)
def _default_sigint():
    """Each test starts with Python's own Ctrl-C handler. A suite started with SIGINT ignored (a background job of a
    non-interactive shell) passes that on to every subprocess (POSIX), and a CLI sent Ctrl-C by a test would then
    never stop; restored here, the subprocesses start with the default disposition."""
    import signal

    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
