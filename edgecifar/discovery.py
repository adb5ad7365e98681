"""Dataset discovery: which files of a `--data` folder or archive are the dataset, and of which class.

One rule, applied the same way to a folder and to a .tar/.tar.gz/.tgz of it (README, "Data"):
- Skipped, never a class and never an error (and counted in the data summary): hidden files and folders
  (a name starting with "."), macOS AppleDouble files ("._name") and "__MACOSX" folders.
- Links are followed. In a folder, symlinked files and folders are followed wherever they point (a loop is
  skipped). In an archive, symlink and hard-link members resolve to the member they name inside the
  archive, never to anything outside it (such a link is skipped); nothing is ever extracted to disk.
- The dataset root is the shallowest folder that holds `train/<class>/<file>` (or training/) or CIFAR-10's
  `data_batch_1`.
- The splits (SPLIT_NAMES, any case): train/ (or training/), test/ (or testing/), and a validation folder,
  val/, valid/ or validation/. Without a test folder, the validation folder is the test split (the train/ +
  val/ trees of Ultralytics, Kaggle and Roboflow); beside a test folder it is the validation split (Roboflow's
  train/ + valid/ + test/). Two folders of one split (val/ and valid/) are refused; the summary says which
  folder each split came from.
- ImageFolder: every file under root/<split>/<class>/ (sub-folders included) whose name ends in an image
  extension (any case) that can be decoded here is an image of <class> (the name NFC-normalized, so names
  that macOS and Linux write differently are one class); other files there are skipped and counted, a known
  image format that cannot be decoded here (HEIC without pillow-heif, RAW) under its own name and how to read
  it. Files beside the split folders (a README, a labels CSV) are ignored; images in other folders there are
  skipped and counted. A refusal says what was found instead (images directly in train/, a split folder
  passed instead of its parent, the folders there).
"""

from __future__ import annotations

import os
import posixpath
import stat
import tarfile
import unicodedata
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import DataError
from .images import image_extensions, unreadable_format

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
SPLITS = ("train", "test")  # the splits every ImageFolder needs; "val" is optional
# the split folders' names (any case), the first the usual one. A tree without a test folder takes its
# validation folder as the test split: Ultralytics (train/ + val/), Kaggle and Roboflow exports do so
SPLIT_NAMES = {"train": ("train", "training"), "test": ("test", "testing"), "val": ("val", "valid", "validation")}
CIFAR_MARKER = "data_batch_1"
MAX_LINK_HOPS = 40
OUTSIDE = "link pointing outside the archive"
Reader = Callable[[], bytes]


@dataclass
class Tree:
    """The visible files of a folder or an archive by '/'-separated relative path (links resolved), the
    entries the rule skipped (reason -> paths), and each file's "path:size:mtime" stamp (folders only)."""

    where: str
    in_archive: bool
    files: dict[str, Reader] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    stamps: list[str] = field(default_factory=list)

    def name_of(self, path: str) -> str:
        """How messages call a file of this tree."""
        return f"{path} in {self.where}" if self.in_archive else f"{self.where}/{path}"


def skip_reason(name: str) -> str | None:
    """Why a file or folder name is skipped wherever it appears, or None."""
    if name.startswith("._"):
        return "macOS AppleDouble file (._*)"
    if name == "__MACOSX":
        return "macOS __MACOSX folder"
    if name.startswith("."):
        return "hidden file or folder"
    return None


def class_name(folder: str) -> str:
    return unicodedata.normalize("NFC", folder)


def read_tree(path: Path) -> Tree:
    """Walk a folder or read an archive into a Tree, applying the skip and link rules."""
    if path.is_file():
        if not path.name.lower().endswith(ARCHIVE_SUFFIXES):
            raise DataError(f"{path} is a file but not a .tar.gz/.tgz/.tar archive")
        source: _Folder | _Archive = _Archive(path)
    else:
        source = _Folder(path)
    tree = source.tree
    limit = source.max_entries
    seen = 0

    def visit(folder: str, ancestors: tuple[Any, ...]) -> None:
        nonlocal seen
        for name in source.list(folder):
            path_ = f"{folder}/{name}" if folder else name
            seen += 1
            if limit and seen > limit:
                raise DataError(f"{tree.where}: its links expand to more than {limit:,} entries; refusing it")
            reason = skip_reason(name)
            if reason:
                tree.skipped[reason].append(path_)
                continue
            kind, value = source.stat(path_)
            if kind == "dir" and value in ancestors:
                tree.skipped["link loop"].append(path_)
            elif kind == "dir":
                visit(path_, ancestors + (value,))
            elif kind == "file":
                tree.files[path_] = value
            else:
                tree.skipped[value].append(path_)

    visit("", (source.stat("")[1],))
    return tree


class _Folder:
    """A folder on disk; links followed wherever they point (the user's own disk)."""

    max_entries = 0

    def __init__(self, root: Path):
        self.root = root
        self.tree = Tree(str(root), in_archive=False)

    def list(self, folder: str) -> list[str]:
        try:
            return sorted(os.listdir(self.root / folder))
        except OSError as e:
            raise DataError(f"cannot read folder {self.root / folder}: {e.strerror or e}") from None

    def stat(self, path: str) -> tuple[str, Any]:
        full = self.root / path
        try:
            st = full.stat()  # follows symlinks
        except OSError:
            return "skip", "broken link" if full.is_symlink() else "unreadable"
        if stat.S_ISDIR(st.st_mode):
            return "dir", (st.st_dev, st.st_ino)
        if stat.S_ISREG(st.st_mode):
            if path:
                self.tree.stamps.append(f"{path}:{st.st_size}:{st.st_mtime_ns}")
            return "file", full.read_bytes
        return "skip", "not a regular file"


class _Archive:
    """A tar archive read in one pass into memory; links resolve inside it only."""

    def __init__(self, archive: Path):
        self.tree = Tree(str(archive), in_archive=True)
        self.entries: dict[str, tuple[str, Any]] = {"": ("dir", None)}
        self.children: dict[str, set[str]] = defaultdict(set)
        try:
            with tarfile.open(archive) as tar:
                for member in tar:
                    self._add(member, tar)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            raise DataError(f"corrupt or unreadable archive {archive}: {e}") from None
        self.max_entries = 4 * len(self.entries) + 1000  # links may repeat members, not explode them

    def _add(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        path = _inside(member.name)
        if path is None:
            self.tree.skipped["member path outside the archive"].append(member.name)
            return
        if member.isreg():
            data = tar.extractfile(member).read()
            entry: tuple[str, Any] = ("file", lambda data=data: data)
        elif member.isdir():
            entry = ("dir", None)
        elif member.issym():
            entry = ("symlink", member.linkname)
        elif member.islnk():
            entry = ("hardlink", member.linkname)
        else:
            entry = ("other", None)
        self.entries[path] = entry
        while path:  # every parent is a folder, listed or not
            parent, name = posixpath.split(path)
            self.children[parent].add(name)
            self.entries.setdefault(parent, ("dir", None))
            path = parent

    def list(self, folder: str) -> list[str]:
        resolved, problem = self._resolve(folder)
        return [] if problem else sorted(self.children.get(resolved, ()))

    def stat(self, path: str) -> tuple[str, Any]:
        resolved, problem = self._resolve(path)
        if problem:
            return "skip", problem
        kind, value = self.entries[resolved]
        if kind in ("dir", "file"):
            return kind, resolved if kind == "dir" else value
        return "skip", "not a regular file"

    def _resolve(self, path: str, hops: int = 0) -> tuple[str, str | None]:
        """A path inside the archive with every link along it followed -> (member path, problem or None)."""
        current = ""
        for part in path.split("/") if path else []:
            candidate = f"{current}/{part}" if current else part
            kind, value = self.entries.get(candidate, (None, None))
            if kind in ("symlink", "hardlink"):
                hops += 1
                if hops > MAX_LINK_HOPS:
                    return "", "link loop"
                # a symlink is relative to its folder; a hard link names a member from the archive's top
                target = _inside(
                    posixpath.join(current, value) if kind == "symlink" else value, absolute_ok=kind == "hardlink"
                )
                if target is None:
                    return "", OUTSIDE
                current, problem = self._resolve(target, hops)
                if problem:
                    return "", problem
            elif kind is None:
                return "", "broken link"
            else:
                current = candidate
        return current, None


def _inside(name: str, absolute_ok: bool = True) -> str | None:
    """An archive path normalized ('./a/../b' -> 'b', the top -> ''), or None if it leaves the archive."""
    if name.startswith("/") and not absolute_ok:
        return None
    path = posixpath.normpath(name.lstrip("/")) if name.strip("/") else "."
    if path == ".." or path.startswith("../"):
        return None
    return "" if path == "." else path


# ---------------------------------------------------------------- layouts


def split_role(folder: str) -> str | None:
    """ "train", "test" or "val" for a split folder's name (any case), else None (SPLIT_NAMES)."""
    name = folder.lower()
    return next((role for role, names in SPLIT_NAMES.items() if name in names), None)


def find_root(tree: Tree) -> tuple[str, str]:
    """-> (layout, root): ("cifar", folder holding data_batch_1) or ("imagefolder", folder holding train/).
    DataError when there is neither, saying what was found instead."""
    found: dict[str, str] = {}
    for path in tree.files:
        parts = path.split("/")
        if parts[-1] == CIFAR_MARKER:
            found.setdefault("/".join(parts[:-1]), "cifar")
        for i, part in enumerate(parts[:-2]):
            if split_role(part) == "train":
                found.setdefault("/".join(parts[:i]), "imagefolder")
    if not found:
        raise DataError(
            f"{tree.where}: no images under train/<class>/ and no CIFAR-10 batches{_what_is_there(tree)}"
            f"{skip_note(tree)}"
        )
    depth = min(_depth(root) for root in found)
    roots = sorted(root for root in found if _depth(root) == depth)
    if len(roots) > 1:
        raise DataError(
            f"{tree.where} holds several datasets ({', '.join(r + '/' for r in roots)}): pass one of them as --data"
        )
    return found[roots[0]], roots[0]


def _what_is_there(tree: Tree) -> str:
    """For a source without train/<class>/: images directly in a split folder (labels in a CSV), a split
    folder passed instead of its parent, class folders without splits, or else the top of what was found."""
    images = [p for p in tree.files if Path(p).suffix.lower() in image_extensions()]
    flat = Counter(p.split("/")[-2] for p in images if len(p.split("/")) >= 2 and split_role(p.split("/")[-2]))
    if flat:
        where = ", ".join(f"{n:,} images directly in {name}/" for name, n in flat.most_common(3))
        return (
            f": {where}, outside any class folder (labels in a CSV file are not read): put each image in "
            f"train/<class>/ and test/<class>/"
        )
    classes = sorted({p.split("/")[0] for p in images if len(p.split("/")) == 2})
    if classes:
        here = Path(tree.where).name
        folders = _names([c + "/" for c in classes])
        if not tree.in_archive and split_role(here):
            return (
                f": {tree.where} looks like one split itself (its folders {folders} hold images): pass the "
                f"folder above it, {Path(tree.where).parent}, as --data"
            )
        return (
            f": its folders {folders} hold images, but are not inside train/ and test/: arrange them as "
            f"ROOT/train/<class>/ and ROOT/test/<class>/ and pass ROOT"
        )
    top = sorted({p.split("/")[0] + ("/" if "/" in p else "") for p in tree.files})
    found = f"found {_names(top, 8)}" if top else "it is empty"
    return (
        f" (expected an ImageFolder tree with train/<class>/ and test/<class>/, or a cifar-10-batches-py "
        f"folder; {found})"
    )


def _names(names: list[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def skip_note(tree: Tree) -> str:
    """What was skipped, for a message that refuses the dataset (empty when nothing was)."""
    if not tree.skipped:
        return ""
    note = "; skipped: " + ", ".join(
        f"{reason}: {len(paths):,} (e.g. {paths[0]})" for reason, paths in tree.skipped.items()
    )
    if OUTSIDE in tree.skipped:
        note += "; archive the files themselves (tar --dereference) or the folders they point to"
    return note


def _depth(root: str) -> int:
    return root.count("/") + 1 if root else 0


Item = tuple[str, str, Reader]  # (class, path, read)


@dataclass
class ImageFolder:
    """The splits of an ImageFolder root: {"train": items, "test": items, "val": items (only when the tree has
    both a test and a validation folder)}, each sorted by path, and the folder each was read from."""

    items: dict[str, list[Item]]
    folders: dict[str, str]

    @property
    def layout(self) -> str:
        """How the summary names the layout: "ImageFolder", with the folders when they are not train/ + test/
        ("ImageFolder; train/, val/ as test")."""
        if self.folders == {"train": "train", "test": "test"}:
            return "ImageFolder"
        order = ("train", "val", "test")
        return "ImageFolder; " + ", ".join(
            f"{self.folders[r]}/" + ("" if self.folders[r] == r else f" as {'validation' if r == 'val' else r}")
            for r in order
            if r in self.folders
        )


def image_folder(tree: Tree, root: str) -> ImageFolder:
    """The splits under `root` by SPLIT_NAMES; skips are recorded in tree. DataError, naming what was found,
    when a split is missing or two folders claim it."""
    prefix = f"{root}/" if root else ""
    readable = image_extensions()
    by_folder: dict[str, list[Item]] = defaultdict(list)
    beside: dict[str, list[str]] = defaultdict(list)  # images in folders beside the splits
    for path, read in tree.files.items():
        if not path.startswith(prefix):
            continue
        rest = path[len(prefix) :].split("/")
        if len(rest) == 1:
            continue  # a README or a labels CSV beside train/ and test/ is not part of the dataset
        top, name = rest[0], rest[-1]
        if split_role(top) is None:
            if Path(name).suffix.lower() in readable:
                beside[top].append(path)
            continue
        if len(rest) == 2:
            tree.skipped[f"file directly in {top}/ (not in a class folder)"].append(path)
        elif Path(name).suffix.lower() in readable:
            by_folder[top].append((class_name(rest[1]), path, read))
        else:
            tree.skipped[unreadable_format(name) or "not an image file name"].append(path)
    for folder, paths in sorted(beside.items()):
        tree.skipped[f"images in {folder}/, beside the split folders (not a split name)"] += paths
    folders = {role: _the_folder(tree, prefix, role, by_folder) for role in SPLIT_NAMES}
    if folders["test"] is None:  # Ultralytics, Kaggle and Roboflow trees: train/ + val/ (the test split)
        folders["test"], folders["val"] = folders["val"], None
    for role in SPLITS:
        if folders[role] is None:
            raise DataError(
                f"{tree.where}: no images under {prefix}{_accepted(role)}{_found(tree, prefix, by_folder)}"
                f"{skip_note(tree)}"
            )
    chosen = {role: folder for role, folder in folders.items() if folder is not None}
    return ImageFolder(
        {role: sorted(by_folder[folder], key=lambda item: item[1]) for role, folder in chosen.items()}, chosen
    )


def _the_folder(tree: Tree, prefix: str, role: str, by_folder: dict[str, list[Item]]) -> str | None:
    """The one folder of `role` that holds images, or None; DataError when several do."""
    folders = sorted(f for f in by_folder if split_role(f) == role)
    if len(folders) > 1:
        counts = ", ".join(f"{prefix}{f}/ ({len(by_folder[f]):,} images)" for f in folders)
        raise DataError(
            f"{tree.where}: {counts} are {len(folders)} folders of the "
            f"{'validation' if role == 'val' else role} split: keep one (move or rename the others)"
        )
    return folders[0] if folders else None


def _accepted(role: str) -> str:
    """ "test/<class>/ (nor val/<class>/, ...)" for a refusal: the names the rule accepts for a split."""
    names = SPLIT_NAMES[role] + (SPLIT_NAMES["val"] if role == "test" else ())
    return f"{names[0]}/<class>/ (nor {', '.join(n + '/' for n in names[1:])})"


def _found(tree: Tree, prefix: str, by_folder: dict[str, list[Item]]) -> str:
    """ "; found train/ (40 images in 2 class folders), docs/ (3 files)": what the root holds instead."""
    files: Counter[str] = Counter(
        p[len(prefix) :].split("/")[0] + ("/" if "/" in p[len(prefix) :] else "")
        for p in tree.files
        if p.startswith(prefix)
    )
    shown = []
    for entry, n in sorted(files.items()):
        folder = entry.rstrip("/")
        if folder in by_folder:
            classes = len({cls for cls, _, _ in by_folder[folder]})
            shown.append(f"{entry} ({len(by_folder[folder]):,} images in {classes} class folders)")
        else:
            shown.append(f"{entry} ({n:,} files)" if entry.endswith("/") else entry)
    return f"; found {_names(shown, 8)}" if shown else ""
