"""Export backends: one module per runtime, all behind one small interface.

A backend exports an EdgeModel to its own file format (`export`, the only part that needs torch),
and loads and runs such a file on the device (`load`, `run`: numpy and the runtime only). Adding a
runtime is one new module with a class of these members, registered in `BACKENDS` below.

This package is imported by the light device-side path (`edgecifar.runtime`): keep every heavy
import (torch, onnx, openvino, nncf, onnxruntime) inside the functions that need it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np

from ..errors import ArtifactError

PRECISIONS = ("fp32", "fp16", "int8")
# minmax is the default everywhere: on scratch_cnn nncf's own default (mean of per-image min/max) clipped
# enough to cost 0.1 point of accuracy, minmax nothing
CALIB_METHODS = ("minmax", "percentile", "entropy", "default")
INPUT_NAME, OUTPUT_NAME = "image", "logits"
CONTRACT = ("input 'image': uint8 [N, 32, 32, 3], RGB, NHWC, raw 0-255 pixels (normalization and resize are "
            "inside the graph); output 'logits': float32 [N, C], softmax gives class probabilities")


@dataclass(frozen=True)
class Calibration:
    """INT8 calibration images (uint8 [N, 32, 32, 3], drawn from the training split) and how to use them."""

    images: np.ndarray
    method: str = "minmax"
    batch_size: int = 16  # small batches keep the activations held during calibration to a few MB

    def batches(self) -> Iterator[np.ndarray]:
        for start in range(0, len(self.images), self.batch_size):
            yield np.ascontiguousarray(self.images[start:start + self.batch_size])

    @property
    def num_batches(self) -> int:
        return -(-len(self.images) // self.batch_size)


@dataclass
class Session:
    """A loaded artifact: the runtime's own object plus what the file says about itself."""

    handle: Any
    metadata: dict[str, str]
    input_type: str  # numpy dtype name of the input, "uint8" under the contract
    input_shape: list[int | None]  # None for a dynamic axis
    output_shape: list[int | None]
    extra: dict[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    name: str
    suffixes: tuple[str, ...]  # the first is the file `load` takes; the others travel with it (.bin)

    def export(self, model: Any, path: Path, precision: str, calibration: Calibration | None,
               metadata: dict[str, str]) -> list[Path]:
        """Write `model` (an EdgeModel) to `path` (and its companions); returns every file written."""

    def load(self, path: Path, threads: int | None = None, precision: str | None = None) -> Session:
        """Load a file for inference; raise ArtifactError if it cannot be read."""

    def run(self, session: Session, images: np.ndarray) -> np.ndarray:
        """uint8 [N, 32, 32, 3] -> float32 logits [N, C]."""


def backend_for(path: Path | str) -> Backend:
    """The backend whose main suffix the file has."""
    suffix = Path(path).suffix.lower()
    for backend in BACKENDS.values():
        if suffix == backend.suffixes[0]:
            return backend
    known = ", ".join(b.suffixes[0] for b in BACKENDS.values())
    raise ArtifactError(f"{path}: unknown model format '{suffix or Path(path).name}' (expected {known})")


def artifact_files(path: Path, backend: Backend) -> list[Path]:
    """The main file and its companions (model.xml -> model.xml, model.bin)."""
    return [path] + [path.with_suffix(s) for s in backend.suffixes[1:]]


# OpenVINO's messages start with C++ source locations ("Exception from src/...cpp:84:", "Check '...' failed
# at ...:900:"); the words for people come after them
_LOCATION = re.compile(r"^(Exception from \S+:\d+:?|Check '.*' failed at \S+:\d+:?)$")


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first informative line of a runtime's (often multi-line, C++-flavoured) error message."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not _LOCATION.match(ln)] or lines
    return (useful[0] if useful else type(error).__name__)[:limit]


def _registry() -> dict[str, Backend]:
    from .onnx import OnnxBackend
    from .openvino import OpenVinoBackend

    return {b.name: b for b in (OnnxBackend(), OpenVinoBackend())}


# at the end: the backend modules import the names above
BACKENDS: dict[str, Backend] = _registry()
