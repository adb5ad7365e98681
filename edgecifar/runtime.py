"""The device side: load an exported .onnx or .xml and classify images, with only a runtime (onnxruntime or
openvino), numpy and Pillow installed. Never imports torch, timm or torchvision.

    python -m edgecifar.runtime cat.jpg dog.png --model exported/scratch_cnn/scratch_cnn-int8.onnx [--json]

API: `load_artifact(path).run(images)` (uint8 [N, 32, 32, 3] -> float32 logits [N, C]) is also what the
benchmarks time, so it does nothing per call beyond checking the input and running the graph.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .backends import Backend, Session, backend_for
from .errors import ArtifactError, DataError, EdgecifarError
from .images import INPUT_SIZE as INPUT_HW
from .images import read_image  # the one decoder, shared with training: the same file gives the same pixels
from .manifest import check_artifact


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

    def run(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, 32, 32, 3] RGB -> float32 logits [N, C]."""
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 \
                or images.shape[1:] != (INPUT_HW, INPUT_HW, 3):
            got = f"{images.dtype} {list(images.shape)}" if isinstance(images, np.ndarray) else type(images).__name__
            raise DataError(f"the model takes uint8 [N, 32, 32, 3] images, got {got}")
        return self.backend.run(self.session, np.ascontiguousarray(images))


def load_artifact(path: Path | str, threads: int | None = None, precision: str | None = None) -> Artifact:
    """Load an exported model and check it against the input contract and its own metadata.

    threads: the runtime's intra-op threads (None: its default). precision: OpenVINO's inference precision
    hint (None pins f32, so FP32/FP16 files compute in FP32; "bf16" or "auto" for variants).
    """
    path = Path(path)
    if path.is_dir():
        raise ArtifactError(f"{path} is a directory, not a model file")
    if not path.is_file():
        raise ArtifactError(f"model file not found: {path}")
    backend = backend_for(path)
    if path.stat().st_size == 0:
        raise ArtifactError(f"{path} is empty")
    session = backend.load(path, threads=threads, precision=precision)
    metadata = _parse_metadata(path, session)
    return Artifact(path, backend.name, metadata, backend, session)


def _parse_metadata(path: Path, session: Session) -> dict[str, Any]:
    if session.input_type != "uint8" or session.input_shape[1:] != [INPUT_HW, INPUT_HW, 3]:
        raise ArtifactError(f"{path} does not take uint8 [N, 32, 32, 3] images (it takes {session.input_type} "
                            f"{session.input_shape}): not an edgecifar export")
    meta: dict[str, Any] = dict(session.metadata)
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


def predict(paths: Sequence[Path | str], model_path: Path | str, topk: int = 3, threads: int | None = None,
            on_warning: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Top-k classes of each image. Checks the model against a manifest beside it (or above it) first, and
    reports a checksum mismatch through `on_warning` (default: a line on stderr)."""
    if not paths:
        raise DataError("no images given")
    if topk < 1:
        raise DataError(f"--topk must be at least 1, got {topk}")
    model_path = Path(model_path)
    images = np.stack([read_image(p) for p in paths])  # every image is checked before the model loads
    artifact = load_artifact(model_path, threads=threads)
    check = check_artifact(model_path)
    if check["status"] == "mismatch":
        (on_warning or _stderr)(f"warning: {model_path} does not match its manifest ({check['detail']})")
    logits = artifact.run(images)
    if not np.isfinite(logits).all():  # never a "nan%" probability, nor NaN in --json
        raise ArtifactError(f"{model_path} gives NaN or infinite outputs: it is broken (a diverged training?)")
    probs = softmax(logits)
    k = min(topk, probs.shape[1])
    results = []
    for path, row in zip(paths, probs):
        order = np.argsort(-row, kind="stable")[:k]
        results.append({"image": str(path), "model": str(model_path), "checksum": check["status"],
                         "predictions": [{"class": artifact.classes[i], "index": int(i),
                                          "probability": float(row[i])} for i in order]})
    return results


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def format_results(results: list[dict[str, Any]]) -> str:
    lines = []
    for r in results:
        top = ", ".join(f"{p['class']} {p['probability']:.1%}" for p in r["predictions"])
        lines.append(f"{r['image']}: {top}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgecifar.runtime",
                                     description="Classify images with an exported edgecifar model (.onnx or .xml).")
    parser.add_argument("images", nargs="+", type=Path, help="image files (any size, any common format)")
    parser.add_argument("--model", required=True, type=Path, help="an exported .onnx or OpenVINO .xml file")
    parser.add_argument("--topk", type=int, default=3, help="classes to show per image (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="runtime threads (default: the runtime's)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    try:
        results = predict(args.images, args.model, args.topk, args.threads)
    except EdgecifarError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(json.dumps(results, indent=2) if args.json else format_results(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
