"""LiteRT backend (formerly TensorFlow Lite), files `.tflite`: FP32 by litert-torch, FP16 weights by ai-edge-quantizer's
float casting of that file, full-integer INT8 by litert-torch's PT2E quantizer (static, calibrated) with the uint8
NHWC input kept; load and run with ai-edge-litert's interpreter, which needs neither torch nor TensorFlow.

Our metadata (class names, the contract) rides in the file as a TFLite `Model.metadata` entry named "edgecifar"
whose buffer holds JSON: written and read with the flatbuffers schema that ai-edge-litert ships.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, ExportError
from ..quiet import c_stderr_filtered, quiet_libraries
from .base import Calibration, Session, error_text, float_graph
from .pt2e import calibrated, global_max_pools_as_amax, quantizer_with_fused_relu6, with_minmax_activations

METADATA_NAME = "edgecifar"
quiet_libraries()


class LiteRtBackend:
    name, label = "litert", "LiteRT"
    suffixes = (".tflite",)
    runtime = "ai_edge_litert"
    libraries = ("torch", "litert-torch", "ai-edge-quantizer", "ai-edge-litert")
    precisions = ("fp32", "fp16", "int8")
    # activation observers of the PT2E quantizer (weights: per-channel min/max either way)
    calib_methods = {"minmax": "MinMaxObserver", "default": "HistogramObserver"}
    exec_precision = "model"  # the interpreter computes in the file's own types
    exec_hints = ()
    install = "uv sync --extra litert (pip install litert-torch ai-edge-litert)"
    startup_s = 0.5
    int8_isa_rule = False
    accuracy_control = False
    qat = "twin"  # a QAT run: its float twin, quantized with the learned grids and ranges

    def metadata(self) -> dict[str, str]:
        return {}

    def threads_used(self, session: Session) -> int | None:
        return session.extra["threads"]

    # ------------------------------------------------------------ export (host side: torch, litert-torch)

    def export(
        self, model: Any, path: Path, precision: str, calibration: Calibration | None, metadata: dict[str, str]
    ) -> list[Path]:
        if precision == "fp32":
            data = with_metadata(_fp32(model), metadata)
        elif precision == "fp16":  # the quantizer keeps the metadata entry (and stores weights past the flatbuffer)
            data = _fp16_weights(with_metadata(_fp32(model), metadata))
        elif precision == "int8":
            if calibration is None:
                raise ExportError("INT8 export needs calibration images")
            data = with_metadata(_int8(*float_graph(model), calibration), metadata)
        else:
            raise ExportError(f"litert: unknown precision '{precision}'")
        check_any_batch(data, _example(model)[0].shape[1:])
        path.write_bytes(data)
        return [path]

    # ------------------------------------------------------------ device side (ai-edge-litert + numpy)

    def load(self, path: Path, threads: int | None = None, precision: str | None = None) -> Session:
        if precision not in (None, "f32"):
            raise ArtifactError(f"the LiteRT interpreter takes no precision hint ('{precision}')")
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as e:
            raise ArtifactError(f"ai-edge-litert is not installed: {self.install}") from e
        data = path.read_bytes()
        metadata = read_metadata(path, data)  # also checks, in Python, that the flatbuffer is whole
        try:
            with c_stderr_filtered():  # the XNNPACK delegate's INFO line
                interpreter = Interpreter(model_content=data, num_threads=threads)
                interpreter.allocate_tensors()
        except Exception as e:  # ValueError/RuntimeError with the interpreter's own words
            raise ArtifactError(f"cannot load {path} with ai-edge-litert: {error_text(e)}") from e
        inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ArtifactError(f"{path}: expected one input and one output, found {len(inputs)} and {len(outputs)}")
        # the file holds batch 1; the interpreter is resized to each batch it is given
        return Session(
            handle=interpreter,
            metadata=metadata,
            input_type=np.dtype(inputs[0]["dtype"]).name,
            input_shape=[None, *map(int, inputs[0]["shape"][1:])],
            output_shape=[None, *map(int, outputs[0]["shape"][1:])],
            extra={
                "input": inputs[0]["index"],
                "output": outputs[0]["index"],
                "batch": 1,
                "output_quantization": tuple(outputs[0]["quantization"]),
                "threads": threads,
                "image_shape": [int(d) for d in inputs[0]["shape"][1:]],
            },
        )

    def run(self, session: Session, images: np.ndarray) -> np.ndarray:
        extra = session.extra
        if extra["batch"] != len(images) and not _resize(session.handle, extra, len(images)):
            # a graph whose reshapes hold batch 1 (a file made elsewhere, or before `batch_free`) runs image by image
            return np.concatenate([self._invoke(session, images[i : i + 1]) for i in range(len(images))])
        return self._invoke(session, images)

    @staticmethod
    def _invoke(session: Session, images: np.ndarray) -> np.ndarray:
        interpreter, extra = session.handle, session.extra
        interpreter.set_tensor(extra["input"], images)
        interpreter.invoke()
        logits = np.array(interpreter.get_tensor(extra["output"]), dtype=np.float32, copy=True)
        scale, zero_point = extra["output_quantization"]
        # a full-integer INT8 file (what TFLite Micro runs) ends with int8 logits: real = scale * (q - zero_point)
        return (logits - zero_point) * scale if scale else logits


def _resize(interpreter: Any, extra: dict[str, Any], batch: int) -> bool:
    """Resize the interpreter to `batch` images; False (and back at batch 1) when the graph cannot take it."""
    shape = [batch, *extra["image_shape"]]
    try:
        interpreter.resize_tensor_input(extra["input"], shape)
        interpreter.allocate_tensors()
        extra["batch"] = batch
        return True
    except (RuntimeError, ValueError):
        interpreter.resize_tensor_input(extra["input"], [1, *extra["image_shape"]])
        interpreter.allocate_tensors()
        extra["batch"] = 1
        return False


# ---------------------------------------------------------------- metadata in the flatbuffer


def with_metadata(data: bytes, metadata: dict[str, str]) -> bytes:
    """The .tflite bytes with our metadata entry (replacing an earlier one)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata, sort_keys=True).encode(), dtype=np.uint8)
    model.buffers = list(model.buffers or []) + [buffer]
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if _name(m.name) != METADATA_NAME] + [entry]
    builder = flatbuffers.Builder(len(data) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def read_metadata(path: Path, data: bytes) -> dict[str, str]:
    """Our metadata entry of a .tflite file ({} when it has none); ArtifactError when the bytes are not a whole
    TFLite flatbuffer (a truncated file reads past its end here, in Python, not in the C++ interpreter)."""
    from ai_edge_litert import schema_py_generated as schema

    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ArtifactError(f"cannot load {path}: not a TFLite flatbuffer (no TFL3 identifier)")
    found: dict[str, str] = {}
    try:
        model = schema.Model.GetRootAs(data, 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if _name(entry.Name()) == METADATA_NAME:
                raw = model.Buffers(entry.Buffer()).DataAsNumpy()
                found = {str(k): str(v) for k, v in json.loads(bytes(raw).decode()).items()}
        for i in range(model.BuffersLength()):  # touch every buffer: a cut file fails here
            buffer = model.Buffers(i)
            if buffer.Offset() > 1 and buffer.Offset() + buffer.Size() > len(data):  # stored past the flatbuffer
                raise ValueError(f"buffer {i} ends past the end of the file")
            buffer.DataLength()
    except Exception as e:  # struct.error / IndexError past the end, ValueError from bad JSON
        raise ArtifactError(f"cannot load {path}: a damaged or truncated TFLite file ({error_text(e)})") from e
    return found


def _name(name: Any) -> str:
    return name.decode() if isinstance(name, bytes) else str(name or "")


# ---------------------------------------------------------------- conversion


@contextlib.contextmanager
def _quiet():
    """litert-torch reports progress on stdout/stderr and TensorFlow's C++ logs at import: keep the CLI's
    output ours (edgecifar.quiet)."""
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
        c_stderr_filtered(),
    ):
        warnings.simplefilter("ignore")
        yield


def _example(model: Any, batch: int = 1) -> Any:
    """A uint8 NHWC example at the model's input size (batch 1: the interpreter resizes it per call)."""
    import torch

    from ..contract import model_size

    return (torch.zeros(batch, *model_size(model.meta), 3, dtype=torch.uint8),)


_FP32_CACHE: dict[tuple[int, str], bytes] = {}  # one conversion per model, reused by FP16


def _fp32(model: Any) -> bytes:
    key = (id(model), model.meta.source_sha256 or "")
    if key not in _FP32_CACHE:
        _FP32_CACHE.clear()  # hold one model's bytes at most
        _FP32_CACHE[key] = _convert(global_max_pools_as_amax(model), _example(model))
    return _FP32_CACHE[key]


def check_any_batch(data: bytes, image_shape: Any, batch: int = 3) -> None:
    """Refuse (ExportError) a .tflite file that cannot take `batch` images at once, or gives them other logits
    than one by one: every file's metadata says its input is [N, H, W, 3]."""
    from ai_edge_litert.interpreter import Interpreter

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, *image_shape), dtype=np.uint8)
    try:
        with c_stderr_filtered():
            interpreter = Interpreter(model_content=data, num_threads=1)
            interpreter.allocate_tensors()
        extra = {
            "input": interpreter.get_input_details()[0]["index"],
            "image_shape": list(image_shape),
            "batch": 1,
            "output": interpreter.get_output_details()[0]["index"],
            "output_quantization": (0.0, 0),
        }
        session = Session(
            handle=interpreter, metadata={}, input_type="uint8", input_shape=[], output_shape=[], extra=extra
        )
        alone = np.concatenate([LiteRtBackend._invoke(session, images[i : i + 1]) for i in range(batch)])
        resized = _resize(interpreter, extra, batch)
        together = LiteRtBackend._invoke(session, images) if resized else None
    except Exception as e:
        raise ExportError(f"the converted .tflite file does not run: {error_text(e)}") from e
    if together is None or together.shape != alone.shape or not np.allclose(together, alone, atol=1e-4):
        raise ExportError(
            f"the converted .tflite file fixes its batch at 1 (a batch of {batch} "
            f"{'fails' if together is None else 'gives other logits'}), while its metadata says "
            f"[N, {', '.join(map(str, image_shape))}]; nothing was written"
        )


def batch_free(data: bytes) -> bytes:
    """The .tflite bytes with each RESHAPE that only flattens into a FULLY_CONNECTED removed, that FULLY_CONNECTED
    flattening its input itself (keep_num_dims off: [-1, in_features], the same row-major order).

    Why: litert-torch converts at a fixed batch of 1 (its JAX lowering asserts on a dynamic batch dimension), so
    a flatten before a classifier (scratch_cnn's) becomes RESHAPE to [1, 2048], and the file fails at any other
    batch ("XNNPack delegate failed to reshape"). Without it every op of these graphs takes any batch, as the
    interpreter is resized to it. A RESHAPE keeps its tensor's quantization, so the file computes the same."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    changed = False
    for graph in model.subgraphs:
        readers: dict[int, list[Any]] = {}
        for op in graph.operators:
            for tensor in op.inputs:
                readers.setdefault(int(tensor), []).append(op)
        for op in list(graph.operators):
            if codes[op.opcodeIndex] != schema.BuiltinOperator.RESHAPE:
                continue
            out, users = int(op.outputs[0]), readers.get(int(op.outputs[0]), [])
            if (
                out in set(map(int, graph.outputs))
                or not users
                or len(graph.tensors[out].shape) != 2
                or any(
                    codes[u.opcodeIndex] != schema.BuiltinOperator.FULLY_CONNECTED or int(u.inputs[0]) != out
                    for u in users
                )
            ):
                continue
            for user in users:
                user.inputs[0] = op.inputs[0]
                user.builtinOptions.keepNumDims = False
            graph.operators.remove(op)
            changed = True
    if not changed:
        return data
    import flatbuffers

    builder = flatbuffers.Builder(len(data) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _convert(module: Any, example: Any, quant_config: Any = None) -> bytes:
    import torch

    with _quiet(), torch.no_grad(), tempfile.TemporaryDirectory(prefix="edgecifar-litert-") as tmp:
        try:
            import litert_torch

            edge = litert_torch.convert(module, example, quant_config=quant_config)
            edge.export(str(Path(tmp) / "model.tflite"))
        except Exception as e:
            raise ExportError(f"litert-torch conversion failed: {error_text(e)}") from e
        return batch_free((Path(tmp) / "model.tflite").read_bytes())


def _fp16_weights(fp32: bytes) -> bytes:
    """Weights stored in FP16 and dequantized to FP32 at load (TFLite's float16 quantization): half the size,
    FP32 compute."""
    with _quiet():
        try:
            from ai_edge_quantizer import qtyping, quantizer

            q = quantizer.Quantizer(bytearray(fp32))
            q.update_quantization_recipe(
                regex=".*",
                operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                algorithm_key=quantizer.AlgorithmName.FLOAT_CASTING,
                op_config=qtyping.OpQuantizationConfig(
                    weight_tensor_config=qtyping.TensorQuantizationConfig(
                        num_bits=16, dtype=qtyping.TensorDataType.FLOAT
                    ),
                    compute_precision=qtyping.ComputePrecision.FLOAT,
                    explicit_dequantize=True,
                ),
            )
            return bytes(q.quantize(enable_progress_report=False).quantized_model)
        except Exception as e:
            raise ExportError(f"ai-edge-quantizer FP16 conversion failed: {error_text(e)}") from e


def _int8(model: Any, learned: list, calibration: Calibration) -> bytes:
    """Static INT8 through PT2E: int8 activations and per-channel int8 weights; the uint8 input and the float
    normalization ahead of the first quantize stay as they are, so the file takes the contract's raw pixels.
    A QAT model's `learned` activation ranges replace calibration's where they apply."""
    import torch

    with _quiet():
        from litert_torch.quantize import pt2e_quantizer, quant_config

    config = pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True)
    if calibration.method == "minmax":
        config = with_minmax_activations(config)
    quantizer = quantizer_with_fused_relu6(pt2e_quantizer.PT2EQuantizer)().set_global(config)
    batch = torch.export.Dim("N", min=1, max=max(2, calibration.batch_size))
    try:
        with _quiet(), torch.no_grad():
            graph = torch.export.export(
                global_max_pools_as_amax(model), _example(model, batch=2), dynamic_shapes=({0: batch},)
            ).module()
            converted = calibrated(graph, quantizer, calibration, learned, fold_quantize=False)
    except Exception as e:
        raise ExportError(f"PT2E quantization for LiteRT failed: {error_text(e)}") from e
    return _convert(converted, _example(model), quant_config.QuantConfig(pt2e_quantizer=quantizer))
