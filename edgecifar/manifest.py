"""`exported/manifest.json`: one entry per artifact (keyed by its path, relative to the manifest), written
atomically. Light on purpose (stdlib only): the device-side runtime reads it to check checksums."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

from .errors import ArtifactError
from .utils import atomic_path, sha256_file

MANIFEST = "manifest.json"
VERSION = 1


def read_manifest(path: Path | str) -> dict[str, Any]:
    """The manifest at `path`; an empty one if there is none. A corrupt one is an error, never overwritten."""
    path = Path(path)
    if not path.exists():
        return {"version": VERSION, "artifacts": []}
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("artifacts"), list):
            raise ValueError("no 'artifacts' list")
        return data
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ArtifactError(f"corrupt manifest {path}: {e}; fix or remove it") from e


def update_manifest(path: Path | str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Add `entries`, replacing any with the same path (a re-export), and write the manifest atomically."""
    path = Path(path)
    with _locked(path.parent):  # two exports at once must not drop each other's entries
        manifest = read_manifest(path)
        new_paths = {e["path"] for e in entries}
        kept = [e for e in manifest["artifacts"] if e.get("path") not in new_paths]
        manifest["version"] = VERSION
        manifest["artifacts"] = sorted(kept + list(entries), key=lambda e: e["path"])
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(manifest, indent=2) + "\n")
            tmp.chmod(0o644)  # a shared listing, not a secret (the temporary file starts as 0600)
    return manifest


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
    """The nearest manifest.json beside the artifact or in one of its parent folders."""
    folder = Path(artifact).resolve().parent
    for candidate in (folder, *folder.parents):
        if (candidate / MANIFEST).is_file():
            return candidate / MANIFEST
    return None


def check_artifact(artifact: Path | str) -> dict[str, Any]:
    """Compare an artifact's files with its manifest entry.

    status: "ok", "mismatch" (a file's sha256 differs: changed or corrupted since export),
    "unlisted" (a manifest exists but does not list this file), or "no-manifest".
    """
    artifact = Path(artifact).resolve()
    manifest_path = find_manifest(artifact)
    if manifest_path is None:
        return {"status": "no-manifest", "manifest": None, "detail": "no manifest.json beside it or above it"}
    try:
        manifest = read_manifest(manifest_path)
    except ArtifactError as e:
        return {"status": "unlisted", "manifest": str(manifest_path), "detail": str(e)}
    rel = artifact.relative_to(manifest_path.parent.resolve()).as_posix()
    entry = next((e for e in manifest["artifacts"] if e.get("path") == rel), None)
    if entry is None:
        return {"status": "unlisted", "manifest": str(manifest_path), "detail": f"{rel} is not in the manifest"}
    expected = entry.get("files") or {rel: entry.get("sha256")}
    for name, sha in expected.items():
        file = manifest_path.parent / name
        actual = sha256_file(file) if file.is_file() else None
        if actual != sha:
            what = "is missing" if actual is None else f"has sha256 {actual[:12]}..., the manifest {str(sha)[:12]}..."
            return {"status": "mismatch", "manifest": str(manifest_path), "detail": f"{name} {what}"}
    return {"status": "ok", "manifest": str(manifest_path), "detail": f"sha256 matches {manifest_path}"}
