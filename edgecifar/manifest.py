"""`exported/manifest.json`: one entry per artifact (keyed by its path, relative to the manifest), written
atomically and validated against a schema when read (people edit it by hand and merge it). Light on purpose
(no runtime, no torch): the device-side runtime reads it to check checksums.

Which manifest.json is ours: `manifest.json` is a common name (a web app's, a browser extension's), so a file of
that name is edgecifar's only when it says so, "generator": "edgecifar" (written since that key exists), or,
written before, holds both "version" and "artifacts". Another tool's is never read, reported or overwritten: the
lookup above a model file passes it by, and `export --out` into its folder is refused. Only a manifest that is
ours (or a file of that name that is not JSON but mentions our keys) and breaks the schema is an error.

An entry: model, format (onnx | openvino), precision (fp32 | fp16 | int8), path, sha256 (of the main file),
files ({relative path: sha256} for every file of the artifact), classes, bytes, and what export adds
(source run, versions, verification). `regenerate` (a command) marks an artifact that is not committed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from .backends import BACKENDS, PRECISIONS
from .errors import ArtifactError
from .records import Manifest, ManifestEntry, kind
from .utils import atomic_path, sha256_file

MANIFEST = "manifest.json"
VERSION = 1
GENERATOR = "edgecifar"  # the value of "generator" that marks a manifest.json as ours
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ForeignManifest(ArtifactError):
    """A manifest.json that is not edgecifar's (module docstring): never read as ours, never overwritten."""


def read_manifest(path: Path | str) -> Manifest:
    """The manifest at `path`; an empty one if there is none. One that is not valid JSON or breaks the schema
    is an ArtifactError with one line per problem, and is never overwritten; another tool's manifest.json is a
    ForeignManifest (an ArtifactError) that says so."""
    path = Path(path)
    if not path.exists():
        return Manifest(generator=GENERATOR, version=VERSION, artifacts=[])
    try:
        data, problems = _load(path)
    except ForeignManifest as e:
        raise ForeignManifest(
            f"{e}: edgecifar keeps a manifest.json of its own beside what it exports; export to "
            f"another folder (--out), one that holds no other tool's files"
        ) from None
    if problems:
        raise ArtifactError(f"invalid manifest {path} (fix or remove it):\n  " + "\n  ".join(problems))
    return Manifest.from_json(data, str(path))


def read_entries(path: Path | str) -> tuple[list[ManifestEntry], list[str]]:
    """The valid entries of a manifest, and one line per problem with the others (which are left out): a
    hand-edited entry costs its own artifact, not the whole manifest. Raises ArtifactError only when the file
    is unreadable, not JSON, or has no "artifacts" list."""
    data, problems = _load(Path(path))
    valid = [ManifestEntry.from_json(e, str(path)) for e in data["artifacts"] if not entry_problems(e)]
    return valid, problems


def listed_paths(path: Path | str) -> set[str]:
    """Every path a manifest names, in valid entries or not (its files too)."""
    data, _ = _load(Path(path))
    found = set()
    for e in (e for e in data["artifacts"] if isinstance(e, dict)):
        found |= {e["path"]} if isinstance(e.get("path"), str) else set()
        found |= set(e["files"]) if isinstance(e.get("files"), (dict, list)) else set()
    return {f for f in found if isinstance(f, str)}


def is_ours(path: Path | str) -> bool:
    """Whether the file at `path` is edgecifar's manifest (module docstring); a file that is not JSON is if it
    names our marker or both our keys (a hand edit gone wrong), one that cannot be read is not."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return False
    try:
        return _claims_ours(json.loads(text))
    except ValueError:
        return re.search(r'"generator"\s*:\s*"edgecifar"', text) is not None or (
            '"artifacts"' in text and '"version"' in text
        )


def _claims_ours(data: Any) -> bool:
    return isinstance(data, dict) and (data.get("generator") == GENERATOR or {"version", "artifacts"} <= data.keys())


def _load(path: Path) -> tuple[dict[str, Any], list[str]]:
    """The manifest's JSON object as it is (invalid entries too), and one line per problem."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ArtifactError(f"corrupt manifest {path}: {e}; fix or remove it") from e
    if not _claims_ours(data):
        raise ForeignManifest(
            f"{path} is another tool's manifest.json, not edgecifar's (it has no \"generator\": "
            f'"edgecifar", nor "version" and "artifacts")'
        )
    if not isinstance(data.get("artifacts"), list):
        raise ArtifactError(f"corrupt manifest {path}: no 'artifacts' list; fix or remove it")
    problems = []
    for i, entry in enumerate(data["artifacts"]):
        where = f"artifacts[{i}]" + (
            f" ({entry['path']})" if isinstance(entry, dict) and isinstance(entry.get("path"), str) else ""
        )
        problems += [f"{where}: {p}" for p in entry_problems(entry)]
    paths = [e["path"] for e in data["artifacts"] if isinstance(e, dict) and isinstance(e.get("path"), str)]
    problems += [f"{p} is listed {paths.count(p)} times" for p in sorted(set(paths)) if paths.count(p) > 1]
    return data, problems


def entry_problems(entry: Any) -> list[str]:
    """What is wrong with one manifest entry (an object decoded from JSON), one line each (empty: valid, it reads
    as a ManifestEntry)."""
    if not isinstance(entry, dict):
        return [f"an entry must be an object, found {kind(entry)}"]
    problems = []
    for key, wanted in (("model", str), ("format", str), ("precision", str), ("path", str), ("classes", list)):
        if key not in entry:
            problems.append(f"'{key}' is missing")
        elif not isinstance(entry[key], wanted):
            problems.append(f"'{key}' must be {'a string' if wanted is str else 'a list'}, found {kind(entry[key])}")
    if problems:
        return problems
    if entry["format"] not in BACKENDS:
        problems.append(f"format '{entry['format']}' is not one of {', '.join(BACKENDS)}")
    elif not entry["path"].lower().endswith(BACKENDS[entry["format"]].suffixes[0]):
        problems.append(f"a {entry['format']} path must end in {BACKENDS[entry['format']].suffixes[0]}")
    if entry["precision"] not in PRECISIONS:
        problems.append(f"precision '{entry['precision']}' is not one of {', '.join(PRECISIONS)}")
    if not entry["classes"] or not all(isinstance(c, str) for c in entry["classes"]):
        problems.append("'classes' must be a non-empty list of class names")
    if not _relative(entry["path"]):
        problems.append("'path' must be relative to the manifest's folder, inside it")
    files = entry.get("files")
    if files is None and "sha256" not in entry:
        problems.append("needs 'files' ({path: sha256}) or 'sha256'")
    if files is not None and (not isinstance(files, dict) or not files):
        problems.append(f"'files' must be an object mapping each file to its sha256, found {kind(files)}")
    elif files is not None:
        problems += [
            f"'files' entry {name!r}: not a relative path inside the manifest's folder"
            for name in files
            if not _relative(name)
        ]
        problems += [
            f"'files' entry {name!r}: {sha!r} is not a sha256 (64 hex digits)"
            for name, sha in files.items()
            if not (isinstance(sha, str) and _SHA256.match(sha))
        ]
        if entry["path"] not in files:
            problems.append("'files' does not list the artifact's own path")
    if "sha256" in entry and not (isinstance(entry["sha256"], str) and _SHA256.match(entry["sha256"])):
        problems.append(f"'sha256' {entry['sha256']!r} is not a sha256 (64 hex digits)")
    elif isinstance(files, dict) and "sha256" in entry and files.get(entry["path"], entry["sha256"]) != entry["sha256"]:
        problems.append("'sha256' and the artifact's sha256 in 'files' differ")
    if "regenerate" in entry and not isinstance(entry["regenerate"], str):
        problems.append(f"'regenerate' must be a command (a string), found {kind(entry['regenerate'])}")
    return problems or ManifestEntry.problems(entry)  # the types of the other keys


def entry_files(entry: ManifestEntry) -> dict[str, str]:
    """{relative path: sha256} of every file of an entry (old entries list only the main file)."""
    return entry.file_hashes()


def _relative(name: Any) -> bool:
    if not isinstance(name, str) or not name or "\\" in name:
        return False
    path = PurePosixPath(name)
    return not path.is_absolute() and ".." not in path.parts


def update_manifest(path: Path | str, entries: list[ManifestEntry]) -> Manifest:
    """Add `entries`, replacing any with the same path (a re-export), and write the manifest atomically.
    A replaced entry's `regenerate` command is kept (the file is still not committed)."""
    path = Path(path)
    with _locked(path.parent):  # two exports at once must not drop each other's entries
        manifest = read_manifest(path)
        old = {e.path: e for e in manifest.artifacts}
        new = [_regenerated(e, old.get(e.path)) for e in entries]
        kept = [e for p, e in old.items() if p not in {e.path for e in new}]
        artifacts = sorted(kept + new, key=lambda e: e.path)
        add_size_ratios(artifacts)  # an FP16 file exported apart from its FP32 one still gets its ratio
        if manifest.generator is None:  # written before the marker: it goes first
            manifest = Manifest(generator=GENERATOR, version=VERSION, artifacts=artifacts, extra=manifest.extra)
        else:
            manifest = replace(manifest, generator=GENERATOR, version=VERSION, artifacts=artifacts)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(manifest.to_json(), indent=2) + "\n")
            tmp.chmod(0o644)  # a shared listing, not a secret (the temporary file starts as 0600)
    return manifest


def add_size_ratios(entries: list[ManifestEntry]) -> None:
    """Set each FP16/INT8 entry's size_vs_fp32: its bytes over those of the same run's FP32 file in the same
    format, where `entries` hold that file (entries of one run share the folder of their path)."""
    fp32 = {(PurePosixPath(e.path).parent, e.format): e.bytes for e in entries if e.precision == "fp32" and e.bytes}
    for e in entries:
        base = fp32.get((PurePosixPath(e.path).parent, e.format))
        if base and e.bytes is not None and e.precision != "fp32":
            e.size_vs_fp32 = round(e.bytes / base, 4)


def _regenerated(entry: ManifestEntry, old: ManifestEntry | None) -> ManifestEntry:
    """`entry`, with the `regenerate` command of the entry it replaces (written last, as a key added to it)."""
    if old is None or old.regenerate is None:
        return entry
    return replace(entry, regenerate=old.regenerate)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive flock on the folder itself (POSIX): no lock file is left behind. A no-op elsewhere."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def find_manifest(artifact: Path | str) -> Path | None:
    """The nearest manifest.json of edgecifar's (is_ours) beside the artifact or in one of its parent folders;
    another tool's manifest.json on the way is passed by."""
    folder = Path(artifact).resolve().parent
    for candidate in (folder, *folder.parents):
        if (candidate / MANIFEST).is_file() and is_ours(candidate / MANIFEST):
            return candidate / MANIFEST
    return None


def manifest_entry(artifact: Path | str) -> ManifestEntry | None:
    """The artifact's valid entry in the nearest manifest, or None (no manifest, not listed, or invalid)."""
    found = _lookup(Path(artifact))
    return ManifestEntry.from_json(found[1]) if found and found[1] is not None and not found[2] else None


def _lookup(artifact: Path) -> tuple[Path, dict[str, Any] | None, list[str]] | None:
    """(manifest, the artifact's entry or None, that entry's problems); None without a manifest. A manifest
    that cannot be read at all counts as problems of the entry."""
    manifest_path = find_manifest(artifact)
    if manifest_path is None:
        return None
    try:
        data, _ = _load(manifest_path)
    except ArtifactError as e:
        return manifest_path, None, [str(e)]
    rel = artifact.resolve().relative_to(manifest_path.parent.resolve()).as_posix()
    entry = next((e for e in data["artifacts"] if isinstance(e, dict) and e.get("path") == rel), None)
    return manifest_path, entry, entry_problems(entry) if entry is not None else []


def check_artifact(artifact: Path | str) -> dict[str, Any]:
    """Compare an artifact's files with its manifest entry.

    status: "ok", "mismatch" (a file's sha256 differs: changed or corrupted since export), "unlisted" (a
    manifest exists but does not list this file), "invalid-manifest" (its entry, or the whole manifest, breaks
    the schema: nothing to compare with), or "no-manifest".
    """
    artifact = Path(artifact).resolve()
    found = _lookup(artifact)
    if found is None:
        return {"status": "no-manifest", "manifest": None, "detail": "no manifest.json beside it or above it"}
    manifest_path, entry, problems = found
    if problems:
        return {"status": "invalid-manifest", "manifest": str(manifest_path), "detail": "; ".join(problems)}
    if entry is None:
        rel = artifact.relative_to(manifest_path.parent.resolve()).as_posix()
        return {"status": "unlisted", "manifest": str(manifest_path), "detail": f"{rel} is not in the manifest"}
    for name, sha in ManifestEntry.from_json(entry).file_hashes().items():
        file = manifest_path.parent / name
        actual = sha256_file(file) if file.is_file() else None
        if actual != sha:
            what = "is missing" if actual is None else f"has sha256 {actual[:12]}..., the manifest {sha[:12]}..."
            return {"status": "mismatch", "manifest": str(manifest_path), "detail": f"{name} {what}"}
    return {"status": "ok", "manifest": str(manifest_path), "detail": f"sha256 matches {manifest_path}"}
