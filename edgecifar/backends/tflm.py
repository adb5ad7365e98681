"""TensorFlow Lite Micro backend, files `.micro.tflite`: a full-integer INT8 `.tflite` that TFLite Micro runs as it
is (int8 input and output, only ops TFLite Micro implements); load and run with the `tflite-micro` Python
interpreter (TFLM's own C++ interpreter and reference kernels), which also finds the file's exact arena size.

The file is the LiteRT backend's INT8 conversion (litert-torch + PT2E) with its leading CAST (uint8 -> float32) and
QUANTIZE cut out of the flatbuffer: the graph input becomes that QUANTIZE's int8 output, quantized with scale 1 and
zero point -128, so the device side applies one rule to the contract's uint8 RGB pixels:

    int8 = uint8 - 128        (the same bits as uint8 ^ 0x80; the normalization stays inside the graph)

and reads the int8 logits as real = scale * (q - zero_point), the output's scale and zero point being in the
file's metadata (`tflm_output`) as well as on its output tensor. A model with an op TFLite Micro has no kernel for
(the airnets' GELU) is refused before anything is converted or written (UsageError, exit 2), naming the op and
the layer. TFLite Micro's op list: the builtin ops of tflite-micro's PythonOpsResolver
(python/tflite_micro/python_ops_resolver.cc), the resolver of the interpreter this backend runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, ExportError, UsageError
from .base import Calibration, Session, error_text, float_graph

# the builtin operators (TFLite schema names) that tflite-micro's PythonOpsResolver registers; its custom ops (audio
# front end, Ethos-U, detection post-processing) are left out: no converter emits them for these nets
TFLM_OPS = frozenset(
    [
        "ABS",
        "ADD",
        "ADD_N",
        "ARG_MAX",
        "ARG_MIN",
        "ASSIGN_VARIABLE",
        "AVERAGE_POOL_2D",
        "BATCH_TO_SPACE_ND",
        "BROADCAST_ARGS",
        "BROADCAST_TO",
        "CALL_ONCE",
        "CAST",
        "CEIL",
        "CONCATENATION",
        "CONV_2D",
        "COS",
        "CUMSUM",
        "DEPTH_TO_SPACE",
        "DEPTHWISE_CONV_2D",
        "DEQUANTIZE",
        "DIV",
        "ELU",
        "EQUAL",
        "EXP",
        "EXPAND_DIMS",
        "FILL",
        "FLOOR",
        "FLOOR_DIV",
        "FLOOR_MOD",
        "FULLY_CONNECTED",
        "GATHER",
        "GATHER_ND",
        "GREATER",
        "GREATER_EQUAL",
        "HARD_SWISH",
        "IF",
        "L2_NORMALIZATION",
        "L2_POOL_2D",
        "LEAKY_RELU",
        "LESS",
        "LESS_EQUAL",
        "LOG",
        "LOGICAL_AND",
        "LOGICAL_NOT",
        "LOGICAL_OR",
        "LOGISTIC",
        "LOG_SOFTMAX",
        "MAX_POOL_2D",
        "MAXIMUM",
        "MEAN",
        "MINIMUM",
        "MIRROR_PAD",
        "MUL",
        "NEG",
        "NOT_EQUAL",
        "PACK",
        "PAD",
        "PADV2",
        "PRELU",
        "QUANTIZE",
        "READ_VARIABLE",
        "REDUCE_MAX",
        "RELU",
        "RELU6",
        "RESHAPE",
        "RESIZE_BILINEAR",
        "RESIZE_NEAREST_NEIGHBOR",
        "ROUND",
        "RSQRT",
        "SELECT_V2",
        "SHAPE",
        "SIN",
        "SLICE",
        "SOFTMAX",
        "SPACE_TO_BATCH_ND",
        "SPACE_TO_DEPTH",
        "SPLIT",
        "SPLIT_V",
        "SQRT",
        "SQUARE",
        "SQUARED_DIFFERENCE",
        "SQUEEZE",
        "STRIDED_SLICE",
        "SUB",
        "SUM",
        "SVDF",
        "TANH",
        "TRANSPOSE",
        "TRANSPOSE_CONV",
        "UNIDIRECTIONAL_SEQUENCE_LSTM",
        "UNPACK",
        "VAR_HANDLE",
        "WHILE",
        "ZEROS_LIKE",
    ]
)

# torch modules -> the TFLite op litert-torch lowers them to: checked against TFLM_OPS on the PyTorch model, so that
# a model TFLite Micro cannot run is refused in a second, before the conversion (the converted file is checked too)
MODULE_OPS = {
    "GELU": "GELU",
    "ReLU": "RELU",
    "ReLU6": "RELU6",
    "Hardswish": "HARD_SWISH",
    "LeakyReLU": "LEAKY_RELU",
    "ELU": "ELU",
    "Sigmoid": "LOGISTIC",
    "Tanh": "TANH",
    "MaxPool2d": "MAX_POOL_2D",
    "AvgPool2d": "AVERAGE_POOL_2D",
    "AdaptiveAvgPool2d": "MEAN",
    "AdaptiveMaxPool2d": "REDUCE_MAX",
    "Conv2d": "CONV_2D",
    "Linear": "FULLY_CONNECTED",
    "Softmax": "SOFTMAX",
    "PReLU": "PRELU",
}

INPUT_SCALE, INPUT_ZERO_POINT = 1.0, -128  # int8 = uint8 - 128: real = 1.0 * (q + 128) = the pixel value
INPUT_RULE = "int8 = uint8 - 128 (scale 1, zero point -128)"
# ops that requantize their input from its own scale and zero point: the graph input may take (1, -128) before them
_REQUANTIZING = {"MUL", "ADD", "SUB", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}
LATENCY_NOTE = "TFLite Micro reference kernels on the host CPU: not a microcontroller figure"
ARENA_CEILING = 1 << 30  # the search's upper bound (bytes)


class TflmBackend:
    name, label = "tflm", "TFLite Micro"
    suffixes = (".micro.tflite",)
    runtime = "tflite_micro"
    libraries = ("torch", "litert-torch", "ai-edge-litert", "tflite-micro")
    precisions = ("int8",)
    calib_methods = {"minmax": "MinMaxObserver", "default": "HistogramObserver"}  # noqa: RUF012 (as LiteRT)
    exec_precision = "model"
    exec_hints = ()
    install = "uv sync --extra tflm (pip install --pre tflite-micro; export also needs litert-torch)"
    startup_s = 0.3
    int8_isa_rule = False
    accuracy_control = False
    qat = "twin"  # as LiteRT: the float twin, quantized with the learned grids and ranges
    in_all = False  # `--format all` leaves it out: ask for it by name (its verification runs reference kernels)
    seconds_per_image = 0.3  # bench's time limit: its reference kernels are slow (tens of ms per image), with room

    def check_model(self, model: Any) -> None:
        """UsageError (exit 2) for a model with a layer TFLite Micro has no kernel for: export calls it first."""
        check_modules(model)

    def metadata(self) -> dict[str, str]:
        return {
            "tflm_input": json.dumps(
                {"dtype": "int8", "scale": INPUT_SCALE, "zero_point": INPUT_ZERO_POINT, "rule": INPUT_RULE}
            )
        }

    def threads_used(self, session: Session) -> int | None:
        return 1  # TFLite Micro runs on one core

    # ------------------------------------------------------------ export (host side: torch, litert-torch)

    def export(
        self, model: Any, path: Path, precision: str, calibration: Calibration | None, metadata: dict[str, str]
    ) -> list[Path]:
        from .litert import _int8, with_metadata

        if precision != "int8":
            raise ExportError(f"tflm: TFLite Micro files are full-integer INT8 only, not {precision}")
        if calibration is None:
            raise ExportError("INT8 export needs calibration images")
        check_modules(model)
        data = micro_graph(_int8(*float_graph(model), calibration))
        output = output_quantization(data)
        arena = arena_size(data)
        data = with_metadata(data, {**metadata, "tflm_output": json.dumps(output), "tflm_arena_bytes": str(arena)})
        path.write_bytes(data)
        return [path]

    # ------------------------------------------------------------ device side (tflite-micro + numpy)

    def load(self, path: Path, threads: int | None = None, precision: str | None = None) -> Session:
        from .litert import read_metadata

        if precision not in (None, "f32"):
            raise ArtifactError(f"the TFLite Micro interpreter takes no precision hint ('{precision}')")
        data = path.read_bytes()
        metadata = read_metadata(path, data)  # checks, in Python, that the flatbuffer is whole
        try:
            recorded = int(metadata.get("tflm_arena_bytes", 0))
        except ValueError:
            recorded = 0
        interpreter = _interpreter(path, data, recorded or None)
        details_in, details_out = interpreter.get_input_details(0), interpreter.get_output_details(0)
        if np.dtype(details_in["dtype"]) != np.int8 or np.dtype(details_out["dtype"]) != np.int8:
            raise ArtifactError(
                f"{path}: not a full-integer TFLite Micro file (input {np.dtype(details_in['dtype'])}, "
                f"output {np.dtype(details_out['dtype'])})"
            )
        quant_in, quant_out = details_in["quantization_parameters"], details_out["quantization_parameters"]
        if (float(quant_in["scales"][0]), int(quant_in["zero_points"][0])) != (INPUT_SCALE, INPUT_ZERO_POINT):
            raise ArtifactError(f"{path}: its int8 input is not quantized as {INPUT_RULE}")
        shape_in, shape_out = [int(d) for d in details_in["shape"]], [int(d) for d in details_out["shape"]]
        # run() takes the contract's uint8 pixels and applies INPUT_RULE itself
        return Session(
            handle=interpreter,
            metadata=metadata,
            input_type="uint8",
            input_shape=[None, *shape_in[1:]],
            output_shape=[None, *shape_out[1:]],
            extra={
                "output_quantization": (float(quant_out["scales"][0]), int(quant_out["zero_points"][0])),
                "data": data,
                "path": path,
            },
        )

    def run(self, session: Session, images: np.ndarray) -> np.ndarray:
        interpreter = session.handle
        scale, zero_point = session.extra["output_quantization"]
        logits = []
        for image in to_int8(images):  # the file holds batch 1, as a microcontroller runs it
            interpreter.set_input(image[None], 0)
            interpreter.invoke()
            logits.append(interpreter.get_output(0)[0].astype(np.float32))
        return (
            (np.stack(logits) - zero_point) * scale if logits else np.zeros((0, session.output_shape[-1]), np.float32)
        )

    def device_figures(self, session: Session) -> dict[str, Any]:
        """What a microcontroller needs, measured by the interpreter (bench adds these to the file's rows): flash
        (the file's bytes), the exact arena (the smallest that allocates and runs, bytes) and the interpreter's
        own account of that arena by kind of allocation; the latency columns come from reference kernels."""
        data = session.extra["data"]
        arena = arena_size(data)
        return {
            "flash_bytes": len(data),
            "arena_bytes": arena,
            "arena_detail": allocations(data, arena),
            "latency_note": LATENCY_NOTE,
        }


def to_int8(images: np.ndarray) -> np.ndarray:
    """uint8 pixels [N, H, W, 3] -> the file's int8 input: int8 = uint8 - 128 (INPUT_RULE), exactly."""
    return (np.asarray(images, dtype=np.uint8) ^ np.uint8(0x80)).view(np.int8)


# ---------------------------------------------------------------- op support


def check_modules(model: Any) -> None:
    """Refuse (UsageError, one line) a PyTorch model with a layer whose TFLite op TFLite Micro has no kernel for,
    naming the op and the first such layer."""
    lacking = [
        (name, type(m).__name__)
        for name, m in model.named_modules()
        if type(m).__name__ in MODULE_OPS and MODULE_OPS[type(m).__name__] not in TFLM_OPS
    ]
    if lacking:
        name, kind = lacking[0]
        more = f" (and {len(lacking) - 1} more layers)" if len(lacking) > 1 else ""
        raise UsageError(
            f"tflm: TFLite Micro has no {MODULE_OPS[kind]} kernel: layer {name} ({kind}){more}; "
            f"export this model to litert, or train a variant without {kind}"
        )


def op_names(data: bytes) -> list[tuple[str, str]]:
    """(TFLite op name, the layer it computes) of each operator of a .tflite file, in graph order."""
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAs(data, 0)
    graph = model.Subgraphs(0)
    found = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        kind = (code.CustomCode() or b"?").decode() if builtin == schema.BuiltinOperator.CUSTOM else names[builtin]
        found.append((kind, layer_name(graph.Tensors(op.Outputs(0)).Name() or b"") if op.OutputsLength() else ""))
    return found


def layer_name(tensor_name: bytes | str) -> str:
    """The PyTorch layer litert-torch names a tensor after: 'edgecifar.models.EdgeModel/edgecifar.nets.X_backbone/
    torch.nn.modules.activation.GELU_1;...' -> 'backbone.1 (GELU)'."""
    text = tensor_name.decode(errors="replace") if isinstance(tensor_name, bytes) else tensor_name
    parts = text.split(";")[0].split("/")[1:]
    steps = [p.rpartition(".")[2].partition("_") for p in parts]
    path = ".".join(attr for _, _, attr in steps if attr)
    return f"{path} ({steps[-1][0]})" if steps and path else text or "?"


def check_ops(data: bytes) -> None:
    """Refuse (UsageError) a converted file with an op TFLite Micro lacks, naming the op and its layer."""
    lacking = [(op, layer) for op, layer in op_names(data) if op not in TFLM_OPS]
    if lacking:
        op, layer = lacking[0]
        more = f" (and {len(lacking) - 1} more ops)" if len(lacking) > 1 else ""
        raise UsageError(f"tflm: TFLite Micro has no {op} kernel: layer {layer}{more}")


# ---------------------------------------------------------------- the full-integer graph


def micro_graph(data: bytes) -> bytes:
    """LiteRT's INT8 file (uint8 input -> CAST -> QUANTIZE -> int8 graph -> int8 logits) as TFLite Micro runs it:
    CAST and QUANTIZE cut, the int8 tensor after them the input, quantized as INPUT_RULE; a trailing DEQUANTIZE, if
    any, cut the same way. Raises UsageError for an op TFLite Micro lacks, ExportError for a graph of another shape
    (a float tensor left, an input that cannot take scale 1 and zero point -128)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    check_ops(data)
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    if len(model.subgraphs) != 1:
        raise ExportError(f"tflm: expected one subgraph, found {len(model.subgraphs)}")
    graph = model.subgraphs[0]
    op_name = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}

    def kind(op: Any) -> str:
        code = model.operatorCodes[op.opcodeIndex]
        return op_name[max(code.builtinCode, code.deprecatedBuiltinCode)]

    def users(tensor: int) -> list[Any]:
        return [op for op in graph.operators if tensor in list(op.inputs)]

    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ExportError("tflm: expected one input and one output")
    first = users(int(graph.inputs[0]))
    chain = ("CAST", "QUANTIZE")
    for step in chain:
        if len(first) != 1 or kind(first[0]) != step:
            raise ExportError(
                f"tflm: expected the graph to start with CAST, QUANTIZE; found {[kind(o) for o in first]}"
            )
        cut, first = first[0], users(int(first[0].outputs[0]))
        graph.operators.remove(cut)
    new_input = int(cut.outputs[0])
    quant = graph.tensors[new_input].quantization
    if (float(quant.scale[0]), int(quant.zeroPoint[0])) != (INPUT_SCALE, INPUT_ZERO_POINT):
        # calibration saw less than 0..255: the first ops requantize from whatever their input says, so the exact
        # pixel mapping may replace the calibrated one before them (one rounding fewer)
        if not all(kind(op) in _REQUANTIZING for op in first):
            raise ExportError(
                f"tflm: the input's quantization ({quant.scale[0]:.4g}, {quant.zeroPoint[0]}) is not "
                f"{INPUT_RULE} and {', '.join(kind(o) for o in first)} cannot take it"
            )
        quant.scale, quant.zeroPoint = np.array([INPUT_SCALE], np.float32), np.array([INPUT_ZERO_POINT], np.int64)
    graph.inputs = np.array([new_input], np.int32)
    last = [op for op in graph.operators if int(graph.outputs[0]) in list(op.outputs)]
    if last and kind(last[0]) == "DEQUANTIZE":
        graph.operators.remove(last[0])
        graph.outputs = np.array([int(last[0].inputs[0])], np.int32)
    _drop_unused(model, graph)
    float_left = [
        t.name.decode(errors="replace")
        for t in graph.tensors
        if t.type not in (schema.TensorType.INT8, schema.TensorType.INT32)
    ]
    if float_left:
        raise ExportError(f"tflm: not full-integer: tensor {layer_name(float_left[0])} is not int8/int32")
    builder = flatbuffers.Builder(len(data) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _drop_unused(model: Any, graph: Any) -> None:
    """Remove the tensors and operator codes no operator uses any more (renumbering the references)."""
    used = sorted(
        {int(i) for op in graph.operators for i in (*op.inputs, *op.outputs) if i >= 0}
        | {int(i) for i in (*graph.inputs, *graph.outputs)}
    )
    index = {old: new for new, old in enumerate(used)}

    def renumber(ids: Any) -> np.ndarray:
        return np.array([index[int(i)] if i >= 0 else -1 for i in ids], np.int32)

    graph.tensors = [graph.tensors[i] for i in used]
    codes = sorted({op.opcodeIndex for op in graph.operators})
    code_index = {old: new for new, old in enumerate(codes)}
    for op in graph.operators:
        op.inputs, op.outputs = renumber(op.inputs), renumber(op.outputs)
        op.opcodeIndex = code_index[op.opcodeIndex]
    model.operatorCodes = [model.operatorCodes[i] for i in codes]
    graph.inputs, graph.outputs = renumber(graph.inputs), renumber(graph.outputs)
    for signature in model.signatureDefs or []:  # LiteRT's interpreter reads the I/O through the signature
        signature.inputs = _signature(graph.inputs, "args_0")
        signature.outputs = _signature(graph.outputs, "output_0")


def _signature(ids: np.ndarray, name: str) -> list[Any]:
    from ai_edge_litert import schema_py_generated as schema

    entry = schema.TensorMapT()
    entry.name, entry.tensorIndex = name.encode(), int(ids[0])
    return [entry]


def output_quantization(data: bytes) -> dict[str, Any]:
    """The int8 logits' {"dtype", "scale", "zero_point"}: real = scale * (q - zero_point)."""
    from ai_edge_litert import schema_py_generated as schema

    graph = schema.Model.GetRootAs(data, 0).Subgraphs(0)
    quant = graph.Tensors(graph.Outputs(0)).Quantization()
    return {"dtype": "int8", "scale": float(quant.Scale(0)), "zero_point": int(quant.ZeroPoint(0))}


# ---------------------------------------------------------------- the interpreter and its arena


@contextlib.contextmanager
def _stderr_to(target: Any) -> Iterator[None]:
    """File descriptor 2 (where TFLite Micro's C++ logs its allocation failures) redirected to `target`."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        os.dup2(target.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _try(data: bytes, arena: int) -> tuple[Any, str]:
    """(an interpreter that allocated `arena` bytes and ran one inference, "") or (None, what TFLM logged)."""
    from tflite_micro.python.tflite_micro import runtime

    with tempfile.TemporaryFile(mode="w+") as log:
        with _stderr_to(log):
            try:
                interpreter = runtime.Interpreter.from_bytes(data, arena_size=arena)
                shape = [int(d) for d in interpreter.get_input_details(0)["shape"]]
                interpreter.set_input(np.zeros(shape, np.int8), 0)
                interpreter.invoke()
            except (RuntimeError, ValueError) as e:
                interpreter = None
                error = error_text(e)
        if interpreter is not None:
            return interpreter, ""
        log.seek(0)
        said = " ".join(ln.strip() for ln in log.read().splitlines() if ln.strip())
        return None, f"{said} ({error})" if said else error


def arena_size(data: bytes) -> int:
    """The exact tensor arena of a .tflite file in TFLite Micro: the fewest bytes with which the interpreter
    allocates and runs it (bisection between a failing and a working size). Raises ArtifactError when it does not
    run with any arena (an op without a kernel, a type a kernel lacks), with the interpreter's words."""
    works = max(4096, len(data))
    while _try(data, works)[0] is None:
        if works >= ARENA_CEILING:
            raise ArtifactError(f"TFLite Micro cannot run this file: {_try(data, works)[1]}")
        works *= 4
    fails = 0
    while works - fails > 1:
        middle = (works + fails) // 2
        if _try(data, middle)[0] is None:
            fails = middle
        else:
            works = middle
    return works


def allocations(data: bytes, arena: int) -> dict[str, int]:
    """TFLite Micro's RecordingMicroAllocator account of an arena after one inference: bytes by kind ("head": the
    activations' planned buffer, "tail": persistent data, and each kind of persistent allocation)."""
    interpreter, _ = _try(data, arena)
    if interpreter is None:
        return {}
    with tempfile.TemporaryFile(mode="w+") as log:
        with _stderr_to(log):
            interpreter.print_allocations()
        log.seek(0)
        lines = log.read().splitlines()
    found = {}
    for line in lines:
        text = line.removeprefix("[RecordingMicroAllocator] ").strip()
        if text.startswith("Arena allocation "):  # "Arena allocation head 51264 bytes"
            words = text.split()
            found[words[2]] = int(words[3])
        elif text.startswith("'") and " used " in text:  # "'NodeAndRegistration struct' used 1152 bytes ..."
            found[text[1 : text.index("'", 1)]] = int(text.split(" used ")[1].split()[0])
    return found


def _interpreter(path: Path, data: bytes, arena: int | None) -> Any:
    """A TFLite Micro interpreter for the file: at the arena its metadata records, else (or when that fails) at the
    smallest that works. ArtifactError with TFLite Micro's own words when it cannot run the file."""
    try:
        import tflite_micro.python.tflite_micro.runtime  # noqa: F401
    except ImportError as e:
        raise ArtifactError(f"tflite-micro is not installed: {TflmBackend.install}") from e
    if arena:
        interpreter, _ = _try(data, arena)
        if interpreter is not None:
            return interpreter
    try:
        return _try(data, arena_size(data))[0]
    except ArtifactError as e:
        raise ArtifactError(
            f"cannot load {path} with TFLite Micro: {str(e).removeprefix('TFLite Micro cannot run this file: ')}"
        ) from e
