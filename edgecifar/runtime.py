"""The device side: load an exported model file (.onnx, .xml, .tflite, .pte) and classify images, with only its
runtime (onnxruntime, openvino, ai-edge-litert or executorch), numpy and Pillow installed. Never imports torch,
timm or torchvision itself (ExecuTorch's Python runtime imports torch: docs/device.md).

    python -m edgecifar.runtime cat.jpg photos/ --model exported/scratch_cnn/scratch_cnn-int8.onnx [--json]

API: `load_artifact(path).run(images)` (uint8 [N, H, W, 3] at the file's `input_size` -> float32 logits [N, C])
is also what the benchmarks time, so it does nothing per call beyond checking the input and running the graph.
Images are decoded at the input size the file takes (its graph's input shape, which its metadata repeats).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .backends import BACKENDS, Backend, Session, artifact_files, backend_for, check_threads, git_lfs_pointer
from .errors import ArtifactError, DataError, EdgecifarError, UsageError
from .contract import Size, recorded_size, shape_text
from .images import decode_image, image_name, read_file, read_image  # noqa: F401 - the one decoder, shared with training:

# the same file gives the same pixels (read_image: part of this module's API)
from .isa import CpuIsa, isa_warning
from .manifest import check_artifact, manifest_entry
from .utils import threads_warning


@dataclass
class Artifact:
    """A loaded model file: `run` it, read its `metadata` (classes as a list, the rest as strings)."""

    path: Path
    format: str
    metadata: dict[str, Any]
    backend: Backend
    session: Session

    @property
    def classes(self) -> list[str]:
        return self.metadata["classes"]

    @property
    def input_size(self) -> Size:
        """(H, W) of the images the file takes."""
        return tuple(self.session.input_shape[1:3])  # type: ignore[return-value]

    @property
    def batch(self) -> int | None:
        """The batch size the file's graph is fixed to (a user's make_dynamic_shape_fixed, OpenVINO's reshape),
        or None when it takes any."""
        return self.session.input_shape[0]

    def run(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] RGB at `input_size` -> float32 logits [N, C], for any N: a graph whose batch axis
        is fixed runs batches of its size in turn (the last one filled up with copies of its last image)."""
        if (
            not isinstance(images, np.ndarray)
            or images.dtype != np.uint8
            or images.ndim != 4
            or images.shape[1:] != (*self.input_size, 3)
        ):
            got = f"{images.dtype} {list(images.shape)}" if isinstance(images, np.ndarray) else type(images).__name__
            raise DataError(f"the model takes {shape_text(self.input_size)} images, got {got}")
        batch = self.batch
        if batch is None or len(images) == batch:
            return self.backend.run(self.session, np.ascontiguousarray(images))
        outputs = []
        for start in range(0, len(images), batch):
            chunk = images[start : start + batch]
            filled = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), axis=0)])
            outputs.append(self.backend.run(self.session, np.ascontiguousarray(filled))[: len(chunk)])
        return np.concatenate(outputs) if outputs else np.zeros((0, len(self.classes)), np.float32)


def load_artifact(path: Path | str, threads: int | None = None, precision: str | None = None) -> Artifact:
    """Load an exported model and check it against the input contract and its own metadata.

    threads: the runtime's intra-op threads (None: its default; otherwise >= 1, or UsageError). precision:
    OpenVINO's inference precision hint (None pins f32, so FP32/FP16 files compute in FP32; "bf16" or "auto"
    for variants). Raises ArtifactError for a missing, empty, unreadable or foreign file (with the runtime's
    own reason, its version and what the file needs) and for a Git LFS pointer.
    """
    path = Path(path)
    threads = check_threads(threads)
    if path.is_dir():
        raise ArtifactError(f"{path} is a directory, not a model file")
    if not path.is_file():
        raise ArtifactError(f"model file not found: {path}")
    backend = backend_for(path)
    if path.stat().st_size == 0:
        raise ArtifactError(f"{path} is empty")
    for file in artifact_files(path, backend):
        if git_lfs_pointer(file):
            raise ArtifactError(
                f"{file} is a Git LFS pointer, not the model itself: fetch the file with "
                f"`git lfs pull` (or download it) and try again"
            )
    try:
        session = backend.load(path, threads=threads, precision=precision)
    except ArtifactError as e:
        raise ArtifactError(f"{e}{_exported_with(path, backend.name)}") from e.__cause__
    metadata = _parse_metadata(path, session)
    return Artifact(path, backend.name, metadata, backend, session)


def _exported_with(path: Path, fmt: str) -> str:
    """ "; its manifest says it was exported and verified with onnxruntime 1.32.0": the runtime version known
    to read the file, when a manifest beside it records one."""
    entry = manifest_entry(path)
    versions = entry.versions if entry else None
    backend = BACKENDS.get(fmt)
    runtime = backend.runtime if backend else fmt  # the manifest keys versions by distribution: ai-edge-litert
    library = next((lib for lib in getattr(backend, "libraries", ()) if lib.replace("-", "_") == runtime), runtime)
    if not isinstance(versions, dict) or library not in versions:
        return ""
    return f"; its manifest says it was exported and verified with {library} {versions[library]}"


def _parse_metadata(path: Path, session: Session) -> dict[str, Any]:
    shape = session.input_shape
    if (
        session.input_type != "uint8"
        or len(shape) != 4
        or shape[3] != 3
        or not all(isinstance(s, int) and s > 0 for s in shape[1:3])
        or shape[0] == 0
    ):
        raise ArtifactError(
            f"{path} does not take uint8 [N, H, W, 3] images of a fixed size (it takes "
            f"{session.input_type} {shape}): not an edgecifar export"
        )
    meta: dict[str, Any] = dict(session.metadata)
    recorded = recorded_size(meta.get("input"))  # the graph's shape rules; metadata that contradicts it is wrong
    if recorded is not None and recorded != tuple(shape[1:3]):
        raise ArtifactError(
            f"{path} takes {shape_text(tuple(shape[1:3]))} images but its metadata says "
            f"{shape_text(recorded)}: not an edgecifar export, or edited"
        )
    try:
        classes = json.loads(meta["classes"])
        if not isinstance(classes, list) or not classes:
            raise ValueError
    except (KeyError, ValueError):
        raise ArtifactError(f"{path} has no class names in its metadata: not an edgecifar export") from None
    meta["classes"] = [str(c) for c in classes]
    width = session.output_shape[-1] if session.output_shape else None
    if width is not None and width != len(classes):
        raise ArtifactError(f"{path} outputs {width} logits but its metadata names {len(classes)} classes")
    for key in ("input", "output"):
        if key in meta:
            try:
                meta[key] = json.loads(meta[key])
            except ValueError:
                pass  # free text is fine: these are for people
    return meta


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predict(
    paths: Sequence[Path | str],
    model_path: Path | str,
    topk: int = 3,
    threads: int | None = None,
    on_warning: Callable[[str], None] | None = None,
    allow_checksum_mismatch: bool = False,
    cpu: CpuIsa | None = None,
) -> list[dict[str, Any]]:
    """Top-k classes of each image, in the order given; a folder stands for the images in it (sorted).

    Each result is {"image", "model", "checksum", "predictions": [{"class", "index", "probability"}]}, or
    {"image", "model", "error"} for an image that cannot be read: the other images are still classified.
    The model is checked against a manifest beside it (or above it) first: a checksum mismatch raises
    ArtifactError unless `allow_checksum_mismatch`, when it is a warning. Warnings (that one, an unchecked
    manifest, more threads than cores, an INT8 file made for VNNI on a CPU without it: `cpu`, default this one)
    go to `on_warning` (default: stderr). Raises UsageError for bad
    options and ArtifactError for a model that cannot be used.
    """
    warn = on_warning or _stderr
    if not paths:
        raise UsageError("no images given")
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
        raise UsageError(f"--topk must be at least 1, got {topk!r}")
    if (note := threads_warning(check_threads(threads))) is not None:
        warn(note)
    model_path = Path(model_path)
    files = [_read_file(path) for path in image_paths(paths)]
    if all(data is None for _, data, _ in files):  # nothing to classify: the model is not even loaded
        return [{"image": str(path), "model": str(model_path), "error": error} for path, _, error in files]
    artifact = load_artifact(model_path, threads=threads)
    images = [_decoded(path, data, error, artifact.input_size) for path, data, error in files]
    good = [(path, image) for path, image, _ in images if image is not None]
    if not good:
        return [{"image": str(path), "model": str(model_path), "error": error} for path, _, error in images]
    checksum = _checked(model_path, allow_checksum_mismatch, warn)
    if (note := isa_warning(artifact.metadata, cpu)) is not None:
        warn(note)
    logits = artifact.run(np.stack([image for _, image in good]))
    if not np.isfinite(logits).all():  # never a "nan%" probability, nor NaN in --json
        raise ArtifactError(f"{model_path} gives NaN or infinite outputs: it is broken (a diverged training?)")
    probs = softmax(logits)
    k = min(topk, probs.shape[1])
    answers = {}
    for (path, _), row in zip(good, probs, strict=True):
        order = np.argsort(-row, kind="stable")[:k]
        answers[path] = [{"class": artifact.classes[i], "index": int(i), "probability": float(row[i])} for i in order]
    return [
        {"image": str(path), "model": str(model_path), "checksum": checksum, "predictions": answers[path]}
        if error is None
        else {"image": str(path), "model": str(model_path), "error": error}
        for path, _, error in images
    ]


def _read_file(path: Path) -> tuple[Path, bytes | None, str | None]:
    """(path, its bytes, None), or (path, None, why it cannot be read)."""
    try:
        if path.is_dir():
            raise DataError(f"{path} is a folder with no image files in it")
        return path, read_file(path), None
    except EdgecifarError as e:
        return path, None, str(e)


def _decoded(
    path: Path, data: bytes | None, error: str | None, size: Size
) -> tuple[Path, np.ndarray | None, str | None]:
    """(path, uint8 [H, W, 3] at the model's input size, None), or (path, None, why it cannot be decoded)."""
    if data is None:
        return path, None, error
    try:
        return path, decode_image(data, str(path), size), None
    except EdgecifarError as e:
        return path, None, str(e)


def image_paths(paths: Sequence[Path | str]) -> list[Path]:
    """The paths as given, each folder replaced by the image files in it (sorted; hidden files, macOS
    "._" companions and subfolders left out). An image file is one whose name is an image's (images.image_name:
    a format that cannot be decoded here is kept, to be reported by name); a folder with none stays in the
    list, to be reported as such."""
    found: list[Path] = []
    for path in map(Path, paths):
        try:
            members = (
                sorted(f for f in path.iterdir() if f.is_file() and not f.name.startswith(".") and image_name(f.name))
                if path.is_dir()
                else []
            )
        except OSError:  # an unreadable folder: reported as such when it is read
            members = []
        found += members or [path]
    return found


def _checked(model_path: Path, allow_mismatch: bool, warn: Callable[[str], None]) -> str:
    """The checksum status against the manifest; a mismatch stops, unless allowed."""
    check = check_artifact(model_path)
    if check["status"] == "mismatch":
        what = f"{model_path} does not match its manifest ({check['detail']}): changed or corrupted since export"
        if not allow_mismatch:
            raise ArtifactError(f"{what}; re-export it, or pass --allow-checksum-mismatch to use it anyway")
        warn(f"warning: {what}")
    elif check["status"] == "invalid-manifest":
        warn(f"warning: {model_path} not checked against {check['manifest']}: {check['detail']}")
    return check["status"]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def format_results(results: list[dict[str, Any]]) -> str:
    """One line per classified image ("cat.jpg: cat 91.2%, dog 5.0%"); failed ones are left to the caller."""
    lines = []
    for r in results:
        if "predictions" in r:
            top = ", ".join(f"{p['class']} {p['probability']:.1%}" for p in r["predictions"])
            lines.append(f"{r['image']}: {top}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgecifar.runtime",
        description="Classify images with an exported edgecifar model "
        f"({', '.join(b.suffixes[0] for b in BACKENDS.values())}).",
    )
    parser.add_argument(
        "images", nargs="+", type=Path, help="image files or folders of them (any size, any common format)"
    )
    parser.add_argument("--model", required=True, type=Path, help="an exported model file")
    parser.add_argument("--topk", type=int, default=3, help="classes to show per image (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="runtime threads (default: the runtime's)")
    parser.add_argument(
        "--allow-checksum-mismatch",
        action="store_true",
        help="use a model whose sha256 differs from its manifest (default: refuse it)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    try:
        results = predict(
            args.images, args.model, args.topk, args.threads, allow_checksum_mismatch=args.allow_checksum_mismatch
        )
    except EdgecifarError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    for r in results:
        if "error" in r:
            print(f"error: {r['error']}", file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2))
    elif any("predictions" in r for r in results):
        print(format_results(results))
    return DataError.exit_code if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
