"""Export backends: one module per runtime, all behind one small interface.

A backend exports an EdgeModel to its own file format (`export`, the only part that needs torch),
and loads and runs such a file on the device (`load`, `run`: numpy and the runtime only). It also owns every
fact about its format that the rest of edgecifar needs (its name in reports, suffixes, runtime module,
precisions, calibration methods, thread setting, ...): nothing outside this package names a format. Adding a
runtime is one new module with a class of these members, registered in `_registry()` below.

The interface and the helpers the backend modules share live in `base` (re-exported here), so that a backend
module imports its base, never this registry that imports it.

This package is imported by the light device-side path (`edgecifar.runtime`): keep every heavy
import (torch, onnx, openvino, nncf, onnxruntime) inside the functions that need it.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ArtifactError
from .base import (  # noqa: F401 - the package's public names
    CALIB_METHODS,
    INPUT_NAME,
    LFS_HEADER,
    OUTPUT_NAME,
    PRECISIONS,
    Backend,
    Calibration,
    Session,
    artifact_files,
    check_threads,
    error_text,
    float_graph,
    git_lfs_pointer,
    in_all,
    unavailable,
)


def backend_for(path: Path | str) -> Backend:
    """The backend whose main suffix the file's name ends with, the longest such suffix first
    (model.micro.tflite is TFLite Micro's, model.tflite LiteRT's)."""
    name = Path(path).name.lower()
    for backend in sorted(BACKENDS.values(), key=lambda b: -len(b.suffixes[0])):
        if name.endswith(backend.suffixes[0]):
            return backend
    known = ", ".join(b.suffixes[0] for b in BACKENDS.values())
    suffix = Path(path).suffix.lower()
    raise ArtifactError(f"{path}: unknown model format '{suffix or Path(path).name}' (expected {known})")


def _registry() -> dict[str, Backend]:
    from .executorch import ExecuTorchBackend
    from .litert import LiteRtBackend
    from .onnx import OnnxBackend
    from .openvino import OpenVinoBackend
    from .tflm import TflmBackend

    return {b.name: b for b in (OnnxBackend(), OpenVinoBackend(), LiteRtBackend(), ExecuTorchBackend(), TflmBackend())}


BACKENDS: dict[str, Backend] = _registry()
