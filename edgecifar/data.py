"""CIFAR-10 and ImageFolder data as uint8 arrays in memory (augmentation runs later, on the device).

Sources (`--data`):
- "cifar10": torchvision's CIFAR-10 download (cifar-10-python.tar.gz), into the cache folder.
- a folder or a .tar/.tar.gz/.tgz holding CIFAR-10's python batches (`cifar-10-batches-py`), such as the
  official cifar-10-python.tar.gz, read straight from the archive without running code (cifar_batches).
- an ImageFolder root with train/<class>/ and test/<class>/ (any image format and size), or an archive of
  one; val/, valid/ or validation/ stands for test/ where there is none, and is the validation split beside
  it (edgecifar.discovery.SPLIT_NAMES). Which files count is edgecifar.discovery's rule; every image goes through edgecifar.images.
Whatever the source, the images are decoded once to [N, H, W, 3] uint8 RGB at the input size and cached, keyed
by the source's path, size and modification time (every file's, for a folder), the decoder's version and the
input size. The input size is the caller's (`train --input-size`), else 32x32 for CIFAR-10's batches, else,
for an ImageFolder tree, the median height and width of its training images scaled down (aspect kept) to at
most DEFAULT_CAP on the longer side: 32x32 for CIFAR-like data, 96x96 for 96 px photos, 128 px for large ones.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .cifar_batches import TEST_BATCH, TRAIN_BATCHES, read_cifar
from .discovery import ImageFolder, Reader, Tree, find_root, image_folder, read_tree
from .contract import DEFAULT_SIZE, Size, parse_size, size_text
from .errors import DataError, EdgecifarError
from .images import DECODER_VERSION, decode_image, readable_formats, resize
from .utils import CACHE_FIX, atomic_path, default_cache_dir, usable_dir

CACHE_VERSION = f"d{DECODER_VERSION}r3"  # decoder and discovery rule: a change to either makes a new cache
OFFLINE_HINT = (
    "pass --data PATH: a cifar-10-batches-py folder or cifar-10-python.tar.gz, an ImageFolder root "
    "with train/ and test/, or a .tar.gz of one"
)
SMALL_CLASS = 0.01  # a class with fewer images than this fraction of the largest one is worth a warning
SHOWN = 20  # classes listed one per line in the summary (more are summarized)
DEFAULT_CAP = 128  # an ImageFolder's default input size never exceeds this on its longer side (CPU training)
PROBED = 256  # training images whose sizes choose an ImageFolder's default input size


@dataclass
class Splits:
    """Decoded images (uint8 NHWC numpy, labels int64) and where they came from.

    skipped: reason -> {"count", "examples"} for the files that discovery left out.
    """

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]
    source: str
    fingerprint: str
    val_x: np.ndarray | None = None
    val_y: np.ndarray | None = None
    layout: str = ""
    skipped: dict[str, dict[str, Any]] = field(default_factory=dict)
    input_size: Size = DEFAULT_SIZE  # (H, W) every image was decoded to
    size_note: str = "given"  # how the input size was chosen

    def counts(self) -> dict[str, list[int]]:
        """Images per class, per split (val only when held out)."""
        splits = {"train": self.train_y, "val": self.val_y, "test": self.test_y}
        return {
            name: np.bincount(y, minlength=len(self.classes)).tolist() for name, y in splits.items() if y is not None
        }

    def describe(self) -> dict[str, Any]:
        """What train records in config.json: source, classes, images per split and class, skips, warnings."""
        counts = self.counts()
        return {
            "source": self.source,
            "fingerprint": self.fingerprint,
            "layout": self.layout,
            "classes": self.classes,
            "train": int(len(self.train_y)),
            "val": int(len(self.val_y)) if self.val_y is not None else 0,
            "test": int(len(self.test_y)),
            "per_class": {c: {split: n[i] for split, n in counts.items()} for i, c in enumerate(self.classes)},
            "skipped": {reason: info["count"] for reason, info in self.skipped.items()},
            "input_size": list(self.input_size),
            "input_size_chosen": self.size_note,
            "warnings": self.warnings(),
        }

    def warnings(self) -> list[str]:
        """What a user would not expect: files skipped, a class without test images, a tiny class."""
        found = []
        if self.skipped:
            total = sum(info["count"] for info in self.skipped.values())
            found.append(
                f"{total:,} files/folders skipped: "
                + "; ".join(
                    f"{reason}: {info['count']:,} ({', '.join(info['examples'])}{', ...' * (info['count'] > 3)})"
                    for reason, info in self.skipped.items()
                )
            )
        counts = self.counts()
        pool = np.array(counts["train"]) + np.array(counts.get("val", 0))
        no_test = [c for c, n in zip(self.classes, counts["test"]) if n == 0]
        if no_test:
            found.append(f"no test images for class(es) {_names(no_test)}: their test accuracy is n/a")
        small = [f"{c} ({n:,})" for c, n in zip(self.classes, pool) if n < SMALL_CLASS * pool.max()]
        if small:
            found.append(
                f"class(es) with under 1 % of the {int(pool.max()):,} training images of the largest: {_names(small)}"
            )
        return found

    def summary(self) -> list[str]:
        """The lines a run prints: the source, images per split and class, then each warning."""
        counts = self.counts()
        totals = ", ".join(f"{split} {sum(n):,}" for split, n in counts.items())
        lines = [
            f"data: {self.source} ({self.layout}), {len(self.classes)} classes; images: {totals}",
            f"input size: {size_text(self.input_size)} ({self.size_note})",
        ]
        for i, c in enumerate(self.classes[:SHOWN]):
            lines.append(f"  {c}: " + ", ".join(f"{split} {n[i]:,}" for split, n in counts.items()))
        if len(self.classes) > SHOWN:
            lines.append(
                f"  ... {len(self.classes) - SHOWN} more classes: "
                + ", ".join(f"{split} {min(n):,}-{max(n):,} per class" for split, n in counts.items())
            )
        return lines + [f"warning: {w}" for w in self.warnings()]


def _names(names: list[str], shown: int = 10) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def load_data(
    source: str = "cifar10",
    cache_dir: Path | str | None = None,
    val_split: float = 0.0,
    seed: int = 0,
    input_size: Size | int | str | None = None,
    max_upsample: float | None = None,
) -> Splits:
    """Load a data source as uint8 arrays (decoding and caching it on first use); DataError for anything wrong.

    val_split: the fraction of each class's training images held out as validation (seeded, stratified).
    input_size: (H, W) to decode to (an int or "HxW" text too); None: the source's default (module docstring).
    max_upsample: refuse (DataError) a given input size with more than this many times the pixels of the
    images' own (median) size before anything is decoded; None: no bound.
    """
    size = parse_size(input_size) if input_size is not None else None
    if not 0.0 <= val_split < 1.0:
        raise DataError(f"--val-split must be in [0, 1), got {val_split}")
    cache = usable_dir(Path(cache_dir) if cache_dir else default_cache_dir(), "cache folder", CACHE_FIX)
    if source == "cifar10":
        splits = _cached(_torchvision_cifar10(cache), cache, size, max_upsample)
        splits.source, splits.fingerprint = "cifar10", "torchvision-cifar10"
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise DataError(f"data path not found: {path}")
        splits = _cached(path, cache, size, max_upsample)
    trained = len(np.unique(splits.train_y))
    if len(splits.classes) < 2 or trained < 2:
        raise DataError(
            f"{splits.source}: only one class with training images ({_names(splits.classes)}); a "
            f"classifier needs at least two classes"
        )
    if val_split and splits.val_y is not None:
        raise DataError(
            f"--val-split {val_split:g}: {splits.source} has its own validation split ({len(splits.val_y):,} "
            f"images; {splits.layout}): leave --val-split out"
        )
    if val_split:
        _carve_validation(splits, val_split, seed)
    return splits


def _carve_validation(splits: Splits, fraction: float, seed: int) -> None:
    """Hold out round(fraction * n) of each class's n training images; refuse a split that leaves a class
    without validation or without training images."""
    rng = np.random.default_rng(seed)
    held = []
    for label, name in enumerate(splits.classes):
        members = np.flatnonzero(splits.train_y == label)
        n_val = int(np.floor(len(members) * fraction + 0.5))
        if len(members) and not 0 < n_val < len(members):
            need = "no validation image" if n_val == 0 else "no training image"
            raise DataError(
                f"--val-split {fraction:g} leaves class {name} ({len(members)} training images) with "
                f"{need}: use a {'larger' if n_val == 0 else 'smaller'} --val-split, or none"
            )
        held.append(rng.permutation(members)[:n_val])
    val = np.sort(np.concatenate(held))
    train = np.setdiff1d(np.arange(len(splits.train_y)), val)
    splits.val_x, splits.val_y = splits.train_x[val], splits.train_y[val]
    splits.train_x, splits.train_y = splits.train_x[train], splits.train_y[train]


def _torchvision_cifar10(cache: Path) -> Path:
    """torchvision's CIFAR-10 archive in the cache (downloaded and checksummed once), or the folder that
    earlier versions extracted there. Read by our own reader: torchvision's would unpickle it."""
    try:
        from torchvision.datasets import CIFAR10
        from torchvision.datasets.utils import download_url

        root = cache / "torchvision"
        extracted = root / CIFAR10.base_folder
        if all((extracted / name).is_file() for name in TRAIN_BATCHES + (TEST_BATCH,)):
            return extracted
        download_url(CIFAR10.url, str(root), CIFAR10.filename, CIFAR10.tgz_md5)
        return root / CIFAR10.filename
    except Exception as e:  # noqa: BLE001 - URLError, socket timeouts, HTTP errors, bad checksums ...
        raise DataError(f"could not download CIFAR-10 ({type(e).__name__}); {OFFLINE_HINT}") from e


# ---------------------------------------------------------------- caching


def _cached(path: Path, cache: Path, size: Size | None, max_upsample: float | None = None) -> Splits:
    tree = None if path.is_file() else read_tree(path)  # a folder's walk gives its fingerprint
    key = _fingerprint(path, tree)
    # what can be decoded here (pillow-heif installed since?) decides which files are images: part of the key
    decoders = hashlib.sha256(",".join(readable_formats()).encode()).hexdigest()[:6]
    stem = cache / "decoded" / f"{path.name.split('.')[0]}-{key}-{CACHE_VERSION}-{decoders}"
    note, record, chosen = "given", stem.with_name(stem.name + "-size.json"), size is None
    if chosen:
        size, note, tree = _default_size(path, tree, record)
    # the size is part of the key; 32x32 keeps the name caches had before input sizes existed
    npz = stem.with_name(stem.name + ("" if size == DEFAULT_SIZE else f"-{size_text(size)}") + ".npz")
    if max_upsample is not None and not chosen and not npz.exists():  # before the cost is paid
        tree = _refuse_upsampling(path, tree, record, size, max_upsample)
    if npz.exists():
        with np.load(npz, allow_pickle=False) as z:
            info = json.loads(str(z["info"]))
            val = (z["val_x"], z["val_y"]) if "val_y" in z.files else (None, None)
            return Splits(
                z["train_x"],
                z["train_y"],
                z["test_x"],
                z["test_y"],
                [str(c) for c in z["classes"]],
                str(path),
                key,
                *val,
                layout=info["layout"],
                skipped=info["skipped"],
                input_size=size,
                size_note=note,
            )
    splits = _decode(tree or read_tree(path), size)
    splits.fingerprint, splits.input_size, splits.size_note = key, size, note
    info = json.dumps({"layout": splits.layout, "skipped": splits.skipped})
    if chosen:  # remembered once the data decoded: a refused source leaves no cache behind
        with atomic_path(record) as tmp:
            tmp.write_text(json.dumps({"size": list(size), "note": note}))
    with atomic_path(npz) as tmp:
        with open(tmp, "wb") as f:
            val = {"val_x": splits.val_x, "val_y": splits.val_y} if splits.val_y is not None else {}
            np.savez(
                f,
                train_x=splits.train_x,
                train_y=splits.train_y,
                test_x=splits.test_x,
                test_y=splits.test_y,
                classes=np.array(splits.classes),
                info=np.array(info),
                **val,
            )
    return splits


def _fingerprint(path: Path, tree: Tree | None) -> str:
    """The source's resolved path, then path:size:mtime of the archive, or of every file of the folder."""
    digest = hashlib.sha256(str(path.resolve()).encode())
    if tree is None:
        st = path.stat()
        digest.update(f"{path.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    for stamp in tree.stamps if tree else ():
        digest.update(stamp.encode())
    return digest.hexdigest()[:16]


def _default_size(path: Path, tree: Tree | None, record: Path) -> tuple[Size, str, Tree | None]:
    """The input size a source gets when none is given, and why (module docstring). Remembered in `record`
    beside the decoded data (by `_cached`), so a cached archive is not read again to choose it."""
    try:
        found = json.loads(record.read_text())
        return parse_size(found["size"]), str(found["note"]), tree
    except (OSError, ValueError, KeyError, TypeError, EdgecifarError):
        pass
    tree = tree or read_tree(path)
    layout, root = find_root(tree)
    if layout == "cifar":
        size, note = DEFAULT_SIZE, "CIFAR-10's size; --input-size sets another"
    else:
        skipped = copy.deepcopy(tree.skipped)  # image_folder records its skips; decoding records them once
        train = image_folder(tree, root).items["train"]
        tree.skipped = skipped
        size, note = _median_size(tree, [(p, r) for _, p, r in train])
    return size, note, tree


def _refuse_upsampling(path: Path, tree: Tree | None, record: Path, size: Size, limit: float) -> Tree | None:
    """DataError when `size` has more than `limit` times the pixels of the source's own images (their
    default size; images larger than DEFAULT_CAP are not upsampled by any size up to it, and are let through).
    Returns the tree it read, for the decoding that follows."""
    native, _, tree = _default_size(path, tree, record)
    ratio = size[0] * size[1] / (native[0] * native[1])
    if ratio <= limit or max(native) >= DEFAULT_CAP:
        return tree
    per_image = size[0] * size[1] * 3
    raise DataError(
        f"--input-size {size_text(size)} upsamples these {size_text(native)} images {ratio**0.5:.1f}x per side: "
        f"{per_image / 1e3:,.0f} KB per decoded image ({per_image * 60_000 / 1e9:.1f} GB for 60,000, CIFAR-10's "
        f"count) and about {ratio:.0f}x the compute per training step. A pretrained backbone runs at {size[0]} px "
        f"with --backbone-size {size[0]} (resized inside the model; the cache stays at {size_text(native)}); "
        f"--allow-upsample decodes at {size_text(size)} anyway"
    )


def _median_size(tree: Tree, files: list[tuple[str, Reader]]) -> tuple[Size, str]:
    """The median height and width of up to PROBED evenly spaced training images (headers only), scaled down
    together so the longer side is at most DEFAULT_CAP."""
    from PIL import Image

    picked = files[:: max(1, len(files) // PROBED)][:PROBED]
    sizes = []
    for path, reader in picked:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(_read(tree, path, reader)), formats=readable_formats()) as img:
                    w, h = img.size
                    if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF rotations that swap the sides
                        w, h = h, w
            sizes.append((h, w))
        except (OSError, ValueError, DataError, Image.DecompressionBombError):
            continue  # an unreadable file (or a decompression bomb) is reported when the data is decoded
    if not sizes:
        return DEFAULT_SIZE, "no readable training image to measure; --input-size sets another"
    h, w = (float(np.median([s[i] for s in sizes])) for i in (0, 1))
    scale = min(1.0, DEFAULT_CAP / max(h, w))
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    capped = f", scaled down to at most {DEFAULT_CAP} px" if scale < 1 else ""
    return size, (f"the median height and width of {len(sizes)} training images{capped}; --input-size sets another")


def _decode(tree: Tree, size: Size) -> Splits:
    layout, root = find_root(tree)
    prefix = f"{root}/" if root else ""
    if layout == "cifar":

        def read(name: str) -> bytes | None:
            reader = tree.files.get(prefix + name)
            return _read(tree, prefix + name, reader) if reader else None

        *arrays, classes = read_cifar(read, lambda name: tree.name_of(prefix + name))
        if size != DEFAULT_SIZE:  # the batches hold 32x32 pixels: resized as any other image would be
            arrays = [_resized(a, size) if a.ndim == 4 else a for a in arrays]
        splits = Splits(*arrays, classes, tree.where, "", layout="CIFAR-10 python batches")
    else:
        splits = _image_splits(tree, root, size)
    splits.skipped = {reason: {"count": len(paths), "examples": paths[:3]} for reason, paths in tree.skipped.items()}
    return splits


def _resized(images: np.ndarray, size: Size) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(resize(Image.fromarray(image), size)) for image in images])


def _image_splits(tree: Tree, root: str, size: Size) -> Splits:
    found = image_folder(tree, root)
    items = found.items
    classes = sorted({cls for cls, _, _ in items["train"]})
    for role in ("test", "val"):
        unknown = sorted({cls for cls, _, _ in items.get(role, ())} - set(classes))
        if unknown:
            raise DataError(
                f"{tree.where}: {found.folders[role]}/ has classes missing from "
                f"{found.folders['train']}/: {_names(unknown)}{_why_empty(tree, root, found, unknown)}"
            )
    index = {c: i for i, c in enumerate(classes)}

    def decode(item: tuple[str, str, Reader]) -> np.ndarray:
        return decode_image(_read(tree, item[1], item[2]), tree.name_of(item[1]), size)

    arrays = {}
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # Pillow decodes without the GIL
        for role, members in items.items():
            arrays[role] = (
                np.stack(list(pool.map(decode, members))),
                np.array([index[cls] for cls, _, _ in members], dtype=np.int64),
            )
    val_x, val_y = arrays.get("val", (None, None))
    return Splits(*arrays["train"], *arrays["test"], classes, tree.where, "", val_x, val_y, layout=found.layout)


def _why_empty(tree: Tree, root: str, found: ImageFolder, classes: list[str]) -> str:
    """Why the training folder of these classes gave no image: the files skipped there, by reason."""
    folders = tuple(f"{root}/{found.folders['train']}/{c}/".lstrip("/") for c in classes)
    reasons = {reason: n for reason, paths in tree.skipped.items() if (n := sum(p.startswith(folders) for p in paths))}
    if not reasons:
        return ""
    return (
        f" ({found.folders['train']}/ holds only files that cannot be used for them: "
        + "; ".join(f"{n:,} {reason}" for reason, n in reasons.items())
        + ")"
    )


def _read(tree: Tree, path: str, reader: Reader) -> bytes:
    try:
        return reader()
    except OSError as e:
        raise DataError(f"cannot read {tree.name_of(path)}: {e.strerror or e}") from None
