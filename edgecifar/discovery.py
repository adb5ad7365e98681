"""Dataset discovery: which files of a `--data` folder or archive are the dataset, and of which class.

One rule, applied the same way to a folder and to a .tar/.tar.gz/.tgz of it (README, "Data"):
- Skipped, never a class and never an error (and counted in the data summary): hidden files and folders
  (a name starting with "."), macOS AppleDouble files ("._name") and "__MACOSX" folders.
- Links are followed. In a folder, symlinked files and folders are followed wherever they point (a loop is
  skipped). In an archive, symlink and hard-link members resolve to the member they name inside the
  archive, never to anything outside it (such a link is skipped); nothing is ever extracted to disk.
- The dataset root is the shallowest folder that holds `train/<class>/<file>` or CIFAR-10's `data_batch_1`.
- ImageFolder: every file under root/train/<class>/ or root/test/<class>/ (sub-folders included) whose
  name ends in an image extension (any case) is an image of <class> (the name NFC-normalized, so names that
  macOS and Linux write differently are one class); other files there are skipped and counted; files
  beside train/ and test/ (a README) are ignored.
"""

from __future__ import annotations

import os
import posixpath
import stat
import tarfile
import unicodedata
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import DataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".bmp", ".dib", ".gif", ".webp",
                              ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm", ".avif"})
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
SPLITS = ("train", "test")
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
                target = _inside(posixpath.join(current, value) if kind == "symlink" else value,
                                 absolute_ok=kind == "hardlink")
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

def find_root(tree: Tree) -> tuple[str, str]:
    """-> (layout, root): ("cifar", folder holding data_batch_1) or ("imagefolder", folder holding train/)."""
    found: dict[str, str] = {}
    for path in tree.files:
        parts = path.split("/")
        if parts[-1] == CIFAR_MARKER:
            found.setdefault("/".join(parts[:-1]), "cifar")
        for i, part in enumerate(parts[:-2]):
            if part == "train":
                found.setdefault("/".join(parts[:i]), "imagefolder")
    if not found:
        raise DataError(f"{tree.where}: no images under train/<class>/ and no CIFAR-10 batches (expected an "
                        f"ImageFolder tree with train/ and test/, or a cifar-10-batches-py folder){skip_note(tree)}")
    depth = min(_depth(root) for root in found)
    roots = sorted(root for root in found if _depth(root) == depth)
    if len(roots) > 1:
        raise DataError(f"{tree.where} holds several datasets ({', '.join(r + '/' for r in roots)}): pass one of "
                        f"them as --data")
    return found[roots[0]], roots[0]


def skip_note(tree: Tree) -> str:
    """What was skipped, for a message that refuses the dataset (empty when nothing was)."""
    if not tree.skipped:
        return ""
    note = "; skipped: " + ", ".join(f"{reason}: {len(paths):,} (e.g. {paths[0]})" for reason, paths in
                                     tree.skipped.items())
    if OUTSIDE in tree.skipped:
        note += "; archive the files themselves (tar --dereference) or the folders they point to"
    return note


def _depth(root: str) -> int:
    return root.count("/") + 1 if root else 0


def image_folder(tree: Tree, root: str) -> dict[str, list[tuple[str, str, Reader]]]:
    """-> {"train": [(class, path, read), ...], "test": [...]} sorted by path; skips recorded in tree."""
    prefix = f"{root}/" if root else ""
    items: dict[str, list[tuple[str, str, Reader]]] = {split: [] for split in SPLITS}
    for path, read in tree.files.items():
        if not path.startswith(prefix):
            continue
        rest = path[len(prefix):].split("/")
        if rest[0] not in items:
            continue  # a README beside train/ and test/ is not part of the dataset
        if len(rest) == 2:
            tree.skipped[f"file directly in {rest[0]}/ (not in a class folder)"].append(path)
        elif Path(rest[-1]).suffix.lower() not in IMAGE_EXTENSIONS:
            tree.skipped["not an image file name"].append(path)
        else:
            items[rest[0]].append((class_name(rest[1]), path, read))
    for split in SPLITS:
        if not items[split]:
            raise DataError(f"{tree.where}: no images under {prefix}{split}/<class>/ (expected an ImageFolder tree "
                            f"with train/ and test/){skip_note(tree)}")
        items[split].sort(key=lambda item: item[1])
    return items
