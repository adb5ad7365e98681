"""CIFAR-10 and ImageFolder data as uint8 tensors in memory, with batch augmentation on the device.

Sources (`--data`):
- "cifar10": torchvision's CIFAR-10, downloaded into the cache folder.
- a folder holding torchvision's extracted `cifar-10-batches-py` (or that folder itself).
- an ImageFolder root with train/ and test/ (one sub-folder per class, any image format and size),
  or a .tar.gz/.tgz/.tar of such a tree, read straight from the archive.
Whatever the source, the images are decoded once to [N, 32, 32, 3] uint8 RGB and cached, keyed by
the source's path, size and modification time, so a second run starts in seconds.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .errors import DataError
from .utils import atomic_path, default_cache_dir

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
OFFLINE_HINT = ("pass --data PATH: a cifar-10-batches-py folder, an ImageFolder root with train/ and test/, "
                "or a .tar.gz of one")


@dataclass
class Splits:
    """Decoded images (uint8 NHWC numpy) and labels, plus where they came from."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]
    source: str
    fingerprint: str
    val_x: np.ndarray | None = None
    val_y: np.ndarray | None = None

    def describe(self) -> dict:
        return {"source": self.source, "fingerprint": self.fingerprint, "classes": self.classes,
                "train": int(len(self.train_y)), "val": int(len(self.val_y)) if self.val_y is not None else 0,
                "test": int(len(self.test_y))}


def load_data(source: str = "cifar10", cache_dir: Path | str | None = None, val_split: float = 0.0,
              seed: int = 0) -> Splits:
    """Load a data source as uint8 arrays (decoding and caching it on first use)."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if source == "cifar10":
        splits = _torchvision_cifar10(cache)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise DataError(f"data path not found: {path}")
        splits = _cached(path, cache)
    if not 0.0 <= val_split < 1.0:
        raise DataError(f"--val-split must be in [0, 1), got {val_split}")
    if val_split:
        _carve_validation(splits, val_split, seed)
    return splits


def _carve_validation(splits: Splits, fraction: float, seed: int) -> None:
    order = np.random.default_rng(seed).permutation(len(splits.train_y))
    n_val = int(round(len(order) * fraction))
    val, train = order[:n_val], order[n_val:]
    splits.val_x, splits.val_y = splits.train_x[val], splits.train_y[val]
    splits.train_x, splits.train_y = splits.train_x[train], splits.train_y[train]


# ---------------------------------------------------------------- caching

def _fingerprint(path: Path) -> str:
    """Path + size + mtime of the source (every file of it, for a folder)."""
    digest = hashlib.sha256(str(path.resolve()).encode())
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        st = f.stat()
        digest.update(f"{f.relative_to(path) if f != path else f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _cached(path: Path, cache: Path) -> Splits:
    key = _fingerprint(path)
    npz = cache / "decoded" / f"{path.name.split('.')[0]}-{key}.npz"
    if npz.exists():
        with np.load(npz, allow_pickle=False) as z:
            return Splits(z["train_x"], z["train_y"], z["test_x"], z["test_y"], [str(c) for c in z["classes"]],
                          str(path), key)
    splits = _decode(path)
    splits.fingerprint = key
    with atomic_path(npz) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, train_x=splits.train_x, train_y=splits.train_y, test_x=splits.test_x,
                     test_y=splits.test_y, classes=np.array(splits.classes))
    return splits


def _decode(path: Path) -> Splits:
    if path.is_file():
        if not path.name.endswith(ARCHIVE_SUFFIXES):
            raise DataError(f"{path} is a file but not a .tar.gz/.tgz/.tar archive")
        return _image_tree(_archive_members(path), str(path))
    batches = path / "cifar-10-batches-py"
    if (batches / "data_batch_1").exists():
        return _cifar_batches(batches)
    if (path / "data_batch_1").exists():
        return _cifar_batches(path)
    return _image_tree(_folder_members(path), str(path))


# ---------------------------------------------------------------- CIFAR python batches

def _read_batch(file: Path) -> dict:
    try:
        with open(file, "rb") as f:
            return pickle.load(f, encoding="latin1")  # the format torchvision and CIFAR's authors use
    except FileNotFoundError as e:
        raise DataError(f"missing CIFAR batch file {file}") from e
    except Exception as e:
        raise DataError(f"corrupt CIFAR batch file {file}: {e}") from e


def _cifar_batches(folder: Path) -> Splits:
    def split(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        batches = [_read_batch(folder / n) for n in names]
        x = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])
        y = np.concatenate([np.asarray(b.get("labels", b.get("fine_labels")), dtype=np.int64) for b in batches])
        return x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), y

    train_x, train_y = split([f"data_batch_{i}" for i in range(1, 6)])
    test_x, test_y = split(["test_batch"])
    meta = folder / "batches.meta"
    classes = list(_read_batch(meta)["label_names"]) if meta.exists() else [str(i) for i in range(10)]
    return Splits(train_x, train_y, test_x, test_y, classes, str(folder), "")


def _torchvision_cifar10(cache: Path) -> Splits:
    from torchvision.datasets import CIFAR10

    root = cache / "torchvision"
    try:
        train = CIFAR10(str(root), train=True, download=True)
        test = CIFAR10(str(root), train=False, download=True)
    except Exception as e:  # URLError, socket timeouts, HTTP errors, bad checksums ...
        raise DataError(f"could not download CIFAR-10 ({type(e).__name__}); {OFFLINE_HINT}") from e
    return Splits(train.data, np.asarray(train.targets, dtype=np.int64), test.data,
                  np.asarray(test.targets, dtype=np.int64), list(train.classes), "cifar10",
                  "torchvision-cifar10")


# ---------------------------------------------------------------- ImageFolder trees (folder or archive)

Member = tuple[str, Callable[[], bytes]]  # (path inside the tree, read its bytes)


def _folder_members(root: Path) -> Iterator[Member]:
    for file in sorted(root.rglob("*")):
        if file.is_file():
            yield file.relative_to(root).as_posix(), file.read_bytes


def _archive_members(archive: Path) -> Iterator[Member]:
    try:
        with tarfile.open(archive) as tar:
            for member in tar:  # one streaming pass over the archive
                if member.isfile():
                    data = tar.extractfile(member).read()
                    yield member.name, lambda data=data: data
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f"corrupt or unreadable archive {archive}: {e}") from e


def _decode_image(name: str, data: bytes) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img = img.convert("RGB")
            if img.size != (32, 32):
                img = img.resize((32, 32), Image.BILINEAR, reducing_gap=None)
            return np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"corrupt or unreadable image {name}: {e}") from e


def _image_tree(members: Iterator[Member], where: str) -> Splits:
    """Decode every `.../<train|test>/<class>/<image>` of a tree; other files are ignored."""
    items: dict[str, list[tuple[str, str, bytes]]] = {"train": [], "test": []}
    for name, read in members:
        parts = name.split("/")
        if len(parts) >= 3 and parts[-3] in items and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
            items[parts[-3]].append((parts[-2], name, read()))
    for split in ("train", "test"):
        if not items[split]:
            raise DataError(f"{where}: no images under {split}/<class>/ (expected an ImageFolder tree with "
                            f"train/ and test/)")
        items[split].sort(key=lambda item: item[1])
    classes = sorted({cls for cls, _, _ in items["train"]})
    unknown = sorted({cls for cls, _, _ in items["test"]} - set(classes))
    if unknown:
        raise DataError(f"{where}: test/ has classes missing from train/: {', '.join(unknown)}")
    index = {c: i for i, c in enumerate(classes)}
    arrays = []
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # PIL decodes without the GIL
        for split in ("train", "test"):
            x = np.stack(list(pool.map(lambda it: _decode_image(it[1], it[2]), items[split])))
            y = np.array([index[cls] for cls, _, _ in items[split]], dtype=np.int64)
            arrays += [x, y]
    return Splits(*arrays, classes, where, "")
