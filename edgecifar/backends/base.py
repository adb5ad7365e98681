"""What every export backend shares and imports: the interface (`Backend`), the calibration and session
records, and the helpers all formats use. It imports nothing from the rest of edgecifar but its low modules
(errors, utils, qat_model), so that the backend modules sit below everything that uses them; the registry that
lists them is `edgecifar.backends` (its __init__), which re-exports these names.

Keep every heavy import (torch, onnx, openvino, nncf, onnxruntime) inside the functions that need it: the
device-side path (edgecifar.runtime) imports this.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np

from ..errors import UsageError

PRECISIONS = ("fp32", "fp16", "int8")  # every precision any backend exports, in report order
# minmax is the default everywhere: nncf's own default (mean of per-image min/max) clips the ranges enough to cost
# accuracy where minmax costs none (docs/export-and-quantization.md)
CALIB_METHODS = ("minmax", "percentile", "entropy", "default")
INPUT_NAME, OUTPUT_NAME = "image", "logits"  # the contract itself (shape, words): edgecifar.contract


@dataclass(frozen=True)
class Calibration:
    """INT8 calibration images (uint8 [N, H, W, 3] at the run's input size, drawn from the training split) and
    how to use them."""

    images: np.ndarray
    method: str = "minmax"
    batch_size: int = 16  # small batches keep the activations held during calibration to a few MB
    isa: str = "x86"  # edgecifar.isa.INT8_ISAS: "x86" (7-bit GEMM weights, exact on every x86 CPU) or "vnni"
    exclude: tuple[str, ...] = ()  # node names left in float (accuracy control)
    control: Any = None  # edgecifar.accuracy_control.Control: INT8 under an accuracy bound (export_controlled)

    def batches(self) -> Iterator[np.ndarray]:
        for start in range(0, len(self.images), self.batch_size):
            yield np.ascontiguousarray(self.images[start : start + self.batch_size])

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
    name: str  # the --format value and the manifest's "format"
    label: str  # the name in reports and bench rows ("ONNX")
    suffixes: tuple[str, ...]  # the first is the file `load` takes; the others travel with it (.bin)
    runtime: str  # the module `load` imports (the device side needs only it, numpy and Pillow)
    libraries: tuple[str, ...]  # distributions `export` uses; the manifest records their versions
    precisions: tuple[str, ...]  # the subset of PRECISIONS it exports
    calib_methods: dict[str, str]  # our INT8 calibration methods it supports -> the library's own name
    exec_precision: str  # what a file computes in when no hint is given: "f32" if pinned, "model" if as stored
    exec_hints: tuple[str, ...]  # the inference precision hints `load` takes besides that (bench's bf16 rows)
    install: str  # what brings its converter and runtime (for messages)
    startup_s: float  # a rough process start + import of its runtime, for the bench's ETA only
    int8_isa_rule: bool  # its INT8 files follow --int8-isa (oneDNN's u8 x s8 kernels saturate without VNNI)
    accuracy_control: bool  # export --max-drop works for it: it has export_controlled (edgecifar.accuracy_control)
    qat: str  # how it exports a QAT run (edgecifar.qat) to INT8: "native" (the quantizers as trained), "twin"
    # (float_graph: the learned weight grids and activation ranges, in its own quantizer's layout), "": not
    # optional members: in_all (bool, default True: `--format all` includes it; see in_all()) and
    # device_figures(session) -> dict (figures bench adds to its rows, e.g. TFLite Micro's exact arena),
    # seconds_per_image (float: how slow its runtime may be, for bench's time limit; default 0.03),
    # check_model(model) (raises UsageError for a model it cannot take: export calls it before loading any data),
    # export_controlled(model, path, calibration, metadata, log) -> (files, outcome) where accuracy_control is
    # True, and isa_switch (str, default "": how bench runs its files on a narrower INT8 path, edgecifar.isa.CAPS:
    # "env", the runtime's own ISA cap in the environment; "emulator", its process under QEMU; "": it cannot)

    def metadata(self) -> dict[str, str]:
        """Format facts every file of this backend carries besides edgecifar's own (e.g. its opset)."""

    def threads_used(self, session: Session) -> int | None:
        """The thread count the runtime reports it will use (None when it does not say)."""

    def export(
        self, model: Any, path: Path, precision: str, calibration: Calibration | None, metadata: dict[str, str]
    ) -> list[Path]:
        """Write `model` (an EdgeModel) to `path` (and its companions); returns every file written."""

    def load(self, path: Path, threads: int | None = None, precision: str | None = None) -> Session:
        """Load a file for inference; raise ArtifactError if it cannot be read."""

    def run(self, session: Session, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] (the file's input size) -> float32 logits [N, C]."""


def unavailable(backend: Backend, export: bool = False) -> str | None:
    """Why this backend cannot load files here (or, with `export`, also cannot write them), or None when it can.
    Looks the runtime module and the export libraries (distributions) up without importing them."""
    import importlib.util

    from ..utils import library_versions

    missing = [] if importlib.util.find_spec(backend.runtime) else [backend.runtime]
    if export:
        found = library_versions(*backend.libraries)
        missing += [lib for lib in backend.libraries if lib not in found]
    return f"not installed: {', '.join(missing)} ({backend.install})" if missing else None


def in_all(backend: Backend) -> bool:
    """Whether `--format all` includes the backend (a backend may declare `in_all = False`: asked for by name)."""
    return getattr(backend, "in_all", True)


def artifact_files(path: Path, backend: Backend) -> list[Path]:
    """The main file and its companions (model.xml -> model.xml, model.bin)."""
    return [path] + [path.with_suffix(s) for s in backend.suffixes[1:]]


# OpenVINO's messages start with C++ source locations ("Exception from src/...cpp:84:", "Check '...' failed
# at ...:900:"); onnxruntime's put one mid-line, followed by the C++ signature of the function that failed
# ("failed:/onnxruntime_src/.../model.cc:256 onnxruntime::Model::Model(...) Unsupported model IR version: ...").
# The words for people come after them.
_LOCATION = re.compile(r"^(Exception from \S+:\d+:?|Check '.*' failed at \S+:\d+:?)$")
_SOURCE = re.compile(r"[\w./\\-]+\.(?:cc|cpp|cxx|c|h|hpp):\d+:?\s*")
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ")


def error_text(error: BaseException, limit: int = 1000) -> str:
    """A runtime's (often multi-line, C++-flavoured) error message as one line for people: source locations
    and C++ signatures dropped, every other line kept. Past `limit` characters the middle is cut, never the
    end, where runtimes put the cause ("Unsupported model IR version: 10, max supported IR version: 9")."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    useful = [_drop_cpp(_ORT_PREFIX.sub("", ln)) for ln in lines if not _LOCATION.match(ln)]
    text = " ".join(ln for ln in useful if ln) or type(error).__name__
    if len(text) > limit:
        text = f"{text[: limit // 3]} ... {text[-(limit - limit // 3 - 5) :]}"
    return text


def _drop_cpp(line: str) -> str:
    """Remove each `file.cc:123 Namespace::Function(args...)` (balanced parentheses) from a line."""
    while (found := _SOURCE.search(line)) is not None:
        end = found.end()
        open_at = line.find("(", end)
        name = line[end:open_at] if open_at != -1 else ""
        if "::" not in name:  # a location without a C++ signature after it
            line = f"{line[: found.start()].rstrip()} {line[end:]}".strip()
            continue
        depth, i = 0, open_at
        for i in range(open_at, len(line)):
            depth += {"(": 1, ")": -1}.get(line[i], 0)
            if depth == 0:
                break
        line = f"{line[: found.start()].rstrip()} {line[i + 1 :].lstrip()}".strip()
    return line


def check_threads(threads: Any) -> int | None:
    """None (the runtime's own default) or a whole number >= 1, the same rule for every runtime (onnxruntime
    took -1 as its default and OpenVINO blamed the model for it). Raises UsageError otherwise."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise UsageError(f"--threads must be a whole number of at least 1, got {threads!r}")
    return int(threads)


def float_graph(model: Any) -> tuple[Any, list]:
    """What an exporter that quantizes a float graph itself takes: (the model, no learned ranges), or for a QAT
    model (edgecifar.qat) its float twin on the learned weight grids and the activation ranges it learned."""
    if model.meta.qat is None:
        return model, []
    from ..qat_model import requantizable

    return requantizable(model)


LFS_HEADER = b"version https://git-lfs.github.com/spec/"


def git_lfs_pointer(path: Path) -> bool:
    """Whether the file is a Git LFS pointer (a clone without `git lfs pull`) rather than the file itself."""
    try:
        with open(path, "rb") as f:
            return f.read(len(LFS_HEADER)) == LFS_HEADER
    except OSError:
        return False
