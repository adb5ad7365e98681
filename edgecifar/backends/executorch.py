"""ExecuTorch backend, files `.pte`: torch.export -> edge dialect -> the XNNPACK delegate, FP32 and INT8 (the
XNNPACK quantizer through PT2E, static, calibrated), with a dynamic batch axis bounded by MAX_BATCH; load and run
with ExecuTorch's Python runtime. That runtime imports torch (its inputs and outputs are torch tensors): on a
device, ExecuTorch's C++ runtime runs the same file (docs/device.md).

Our metadata (class names, the contract) rides in the program as a constant method, "edgecifar_metadata",
returning the JSON as a uint8 tensor.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..contract import model_size
from ..errors import ArtifactError, ExportError
from ..quiet import c_stderr_filtered
from .base import Calibration, Session, error_text, float_graph
from .pt2e import calibrated, global_max_pools_as_amax, quantizer_with_fused_relu6, with_minmax_activations

METADATA_METHOD = "edgecifar_metadata"
# the batch axis is dynamic up to this bound; the program plans its memory for it, so it is exported from an
# example of this size (exported from a batch of 2, batch 16 failed at run time), and run() splits bigger
# batches into chunks of it
MAX_BATCH = 64


class ExecuTorchBackend:
    name, label = "executorch", "ExecuTorch"
    suffixes = (".pte",)
    runtime = "executorch"
    libraries = ("torch", "executorch")
    precisions = ("fp32", "int8")  # XNNPACK has no FP16 path on x86 worth shipping
    calib_methods = {"minmax": "MinMaxObserver", "default": "HistogramObserver"}
    exec_precision = "model"
    exec_hints = ()
    install = "uv sync --extra executorch (pip install executorch)"
    startup_s = 3.0  # imports torch
    int8_isa_rule = False
    accuracy_control = False
    qat = "twin"  # a QAT run: its float twin, quantized with the learned grids and ranges

    def metadata(self) -> dict[str, str]:
        return {"max_batch": str(MAX_BATCH)}

    def threads_used(self, session: Session) -> int | None:
        from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count

        return int(_threadpool_get_thread_count())

    # ------------------------------------------------------------ export (host side: torch, executorch)

    def export(
        self, model: Any, path: Path, precision: str, calibration: Calibration | None, metadata: dict[str, str]
    ) -> list[Path]:
        import torch

        if precision not in self.precisions:
            raise ExportError(f"executorch: unknown precision '{precision}'")
        model, learned = float_graph(model) if precision == "int8" else (model, [])
        module = global_max_pools_as_amax(model)
        if precision == "int8":
            if calibration is None:
                raise ExportError("INT8 export needs calibration images")
            module = _quantize(module, calibration, learned)
        with _quiet(), torch.no_grad():
            try:
                from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
                from executorch.exir import to_edge_transform_and_lower

                example = (torch.zeros(MAX_BATCH, *model_size(model.meta), 3, dtype=torch.uint8),)
                program = torch.export.export(module, example, dynamic_shapes=({0: _batch_dim()},))
                blob = json.dumps(metadata, sort_keys=True).encode()
                lowered = to_edge_transform_and_lower(
                    program,
                    partitioner=[XnnpackPartitioner()],
                    constant_methods={METADATA_METHOD: torch.tensor(list(blob), dtype=torch.uint8)},
                )
                path.write_bytes(lowered.to_executorch().buffer)
            except Exception as e:
                raise ExportError(f"ExecuTorch lowering failed: {error_text(e)}") from e
        return [path]

    # ------------------------------------------------------------ device side (executorch runtime, torch)

    def load(self, path: Path, threads: int | None = None, precision: str | None = None) -> Session:
        if precision not in (None, "f32"):
            raise ArtifactError(f"the ExecuTorch runtime takes no precision hint ('{precision}')")
        try:
            from executorch.extension.pybindings.portable_lib import (
                _threadpool_get_thread_count,
                _unsafe_reset_threadpool,
            )
            from executorch.runtime import Runtime
        except ImportError as e:
            raise ArtifactError(f"executorch is not installed: {self.install}") from e
        _check_whole(path)
        with c_stderr_filtered():  # the pool's creation logs its cpuinfo probing (edgecifar.quiet)
            _threadpool_get_thread_count()
            if threads is not None:
                _unsafe_reset_threadpool(int(threads))  # XNNPACK's pool: one per process
        try:
            # from the path: loading a program from bytes in memory crashed the process here
            program = Runtime.get().load_program(Path(path))
            method = program.load_method("forward")
            metadata = _read_metadata(program)
        except Exception as e:  # RuntimeError / ValueError with the runtime's error code
            raise ArtifactError(f"cannot load {path} with ExecuTorch: {error_text(e)}") from e
        meta = method.metadata
        if meta.num_inputs() != 1 or meta.num_outputs() != 1:
            raise ArtifactError(f"{path}: expected one input and one output")
        inp, out = meta.input_tensor_meta(0), meta.output_tensor_meta(0)
        return Session(
            handle=method,
            metadata=metadata,
            input_type=_DTYPES.get(str(inp.dtype()), str(inp.dtype())),
            input_shape=[None, *inp.sizes()[1:]],
            output_shape=[None, *out.sizes()[1:]],
            extra={"program": program, "max_batch": int(inp.sizes()[0])},
        )

    def run(self, session: Session, images: np.ndarray) -> np.ndarray:
        import torch

        step = session.extra["max_batch"]
        outs = [
            session.handle.execute([torch.from_numpy(np.ascontiguousarray(images[i : i + step]))])[0]
            for i in range(0, len(images), step)
        ]
        return np.concatenate([o.numpy() for o in outs]).astype(np.float32, copy=False)


_DTYPES = {"ScalarType.BYTE": "uint8", "ScalarType.FLOAT": "float32", "5": "float32", "0": "uint8"}


def _batch_dim() -> Any:
    import torch

    return torch.export.Dim("N", min=1, max=MAX_BATCH)


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _check_whole(path: Path) -> None:
    """A .pte starts with a flatbuffer whose extended header ("eh00") gives the size of the program and of the
    segments after it (the delegate's weights). A file shorter than they say is cut off: refused here, because
    the runtime reads the missing segments as memory."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
        size = path.stat().st_size
    except OSError as e:
        raise ArtifactError(f"cannot read {path}: {e.strerror}") from e
    if len(head) < 8 or head[4:6] != b"ET":
        raise ArtifactError(f"cannot load {path}: not an ExecuTorch program (no ET identifier)")
    at = head.find(b"eh00")
    if at < 0 or len(head) < at + 32:
        return  # no extended header: the runtime's own verification covers a plain flatbuffer
    header_len = int.from_bytes(head[at + 4 : at + 8], "little")
    program_size, segment_base, segment_size = (
        int.from_bytes(head[at + 8 + 8 * i : at + 16 + 8 * i], "little") for i in range(3)
    )
    needed = max(program_size, segment_base + segment_size if segment_size else 0)
    if header_len >= 32 and size < needed:
        raise ArtifactError(f"cannot load {path}: the file is cut off ({size} bytes of the {needed} its header gives)")


def _read_metadata(program: Any) -> dict[str, str]:
    if METADATA_METHOD not in program.method_names:
        return {}
    value = program.load_method(METADATA_METHOD).execute([])[0]
    found = json.loads(bytes(value.numpy().astype(np.uint8)).decode())
    return {str(k): str(v) for k, v in found.items()}


def _quantize(model: Any, calibration: Calibration, learned: list) -> Any:
    """XNNPACK's PT2E quantizer: per-channel symmetric int8 weights, int8 activations; observers see the
    calibration batches, except where a QAT model learned the range (`learned`)."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    config = get_symmetric_quantization_config(is_per_channel=True)
    if calibration.method == "minmax":
        config = with_minmax_activations(config)
    try:
        with _quiet(), torch.no_grad():
            graph = torch.export.export(
                model,
                (torch.zeros(2, *model_size(model.meta), 3, dtype=torch.uint8),),
                dynamic_shapes=({0: _batch_dim()},),
            ).module()
            return calibrated(
                graph, quantizer_with_fused_relu6(XNNPACKQuantizer)().set_global(config), calibration, learned
            )
    except Exception as e:
        raise ExportError(f"PT2E quantization for ExecuTorch failed: {error_text(e)}") from e
