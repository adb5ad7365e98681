"""ONNX backend: torch.onnx export, FP16 by onnxruntime's converter, INT8 by onnxruntime's quantize_static
(QDQ, per-channel weights); load and run with onnxruntime. Only `export` needs torch and onnx."""

from __future__ import annotations

import ast
import contextlib
import io
import re
import tempfile
import warnings
from pathlib import Path
from dataclasses import asdict, replace
from typing import Any, Callable

import numpy as np

from ..accuracy_control import MAX_FLOAT_LAYERS, accuracy, control_metadata, outcome
from ..errors import ArtifactError, ExportError
from ..quiet import quiet_libraries
from .base import INPUT_NAME, OUTPUT_NAME, Calibration, Session, error_text, float_graph

quiet_libraries()  # before onnxruntime's quantizer loads (edgecifar.quiet)

# >= 20: torch's exporter writes GELU as one Gelu node, faster than opset 18's Div, Erf, Add, Mul, Mul
# (docs/design-notes.md)
OPSET = 20

# onnxruntime's names for our calibration methods ("default" is onnxruntime's own default, MinMax)
ORT_CALIB = {"default": "MinMax", "minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}


class OnnxBackend:
    name, label = "onnx", "ONNX"
    suffixes = (".onnx",)
    runtime = "onnxruntime"
    libraries = ("torch", "onnx", "onnxruntime")
    precisions = ("fp32", "fp16", "int8")
    calib_methods = ORT_CALIB
    exec_precision = "model"  # onnxruntime computes in the file's own types
    exec_hints = ()
    install = "pip install onnxruntime"
    startup_s = 0.8
    int8_isa_rule = True
    isa_switch = "emulator"  # no ISA switch of its own (MLAS dispatches on CPUID): QEMU with an older CPU model
    accuracy_control = True
    qat = "twin"  # a QAT run: its float twin, quantized with the learned grids and ranges

    def metadata(self) -> dict[str, str]:
        return {"opset": str(OPSET)}

    def threads_used(self, session: Session) -> int | None:
        return int(session.handle.get_session_options().intra_op_num_threads)

    # ------------------------------------------------------------ export (host side: torch, onnx)

    def export(
        self, model: Any, path: Path, precision: str, calibration: Calibration | None, metadata: dict[str, str]
    ) -> list[Path]:
        import onnx

        model, learned = float_graph(model) if precision == "int8" else (model, [])
        with tempfile.TemporaryDirectory(prefix="edgecifar-onnx-") as tmp:
            fp32 = Path(tmp) / "fp32.onnx"
            _torch_export(model, fp32)
            if precision == "fp32":
                proto = onnx.load(str(fp32))
            elif precision == "fp16":
                proto = _to_fp16(onnx.load(str(fp32)))
            elif precision == "int8":
                if calibration is None:
                    raise ExportError("INT8 export needs calibration images")
                proto = _quantize(fp32, Path(tmp), calibration, learned)
            else:
                raise ExportError(f"onnx: unknown precision '{precision}'")
        _set_metadata(proto, metadata)
        try:
            onnx.checker.check_model(proto, full_check=True)
        except onnx.checker.ValidationError as e:
            raise ExportError(f"onnx.checker rejected the {precision} model: {error_text(e)}") from e
        onnx.save(proto, str(path))
        return [path]

    def export_controlled(
        self, model: Any, path: Path, calibration: Calibration, metadata: dict[str, str], log: Callable[[str], None]
    ) -> tuple[list[Path], dict[str, Any]]:
        """The INT8 file at `path` with as few layers in float as keep the top-1 drop <= calibration.control's
        bound: the layers are ranked once by the per-layer report (`report_for`: the most sensitive first) and
        left in float one at a time (onnxruntime's nodes_to_exclude: mixed precision) until the bound holds.
        Returns (files, edgecifar.accuracy_control.outcome). Raises ExportError when MAX_FLOAT_LAYERS layers in
        float do not meet the bound."""
        control, calibration = calibration.control, replace(calibration, control=None)
        order: list[str] | None = None
        excluded: list[str] = []
        while True:
            trial = replace(calibration, exclude=tuple(excluded))
            self.export(model, path, "int8", trial, metadata)
            session = self.load(path)
            int8_accuracy = accuracy(lambda batch: self.run(session, batch), control.images, control.labels)
            drop = control.drop_points(int8_accuracy)
            log(
                f"onnx int8: {len(excluded)} layer(s) in float, drop {drop:.2f} points on {len(control.labels)} "
                f"held-out training images (bound {control.max_drop})"
            )
            if drop <= control.max_drop:
                break
            if order is None:  # ranked once, on the held-out images: the most sensitive layer first
                with tempfile.TemporaryDirectory(prefix="edgecifar-control-") as tmp:
                    fp32 = Path(tmp) / "fp32.onnx"
                    self.export(model, fp32, "fp32", None, {})
                    order = report_for(fp32, calibration, control.images)["ranking"]
            if len(excluded) >= min(MAX_FLOAT_LAYERS, len(order)):
                raise ExportError(
                    f"onnx int8: the drop stays {drop:.2f} points (> {control.max_drop}) with "
                    f"{len(excluded)} layers in float; raise --max-drop or use fp16"
                )
            excluded.append(order[len(excluded)])
        # the file now carries what was measured (the same quantization again: deterministic, same weights)
        files = self.export(model, path, "int8", trial, {**metadata, **control_metadata(excluded, drop)})
        return files, outcome(control, excluded, drop, int8_accuracy)

    # ------------------------------------------------------------ device side (onnxruntime + numpy)

    def load(self, path: Path, threads: int | None = None, precision: str | None = None) -> Session:
        if precision not in (None, "f32"):
            raise ArtifactError(f"onnxruntime takes no precision hint ('{precision}'): that is OpenVINO's")
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ArtifactError("onnxruntime is not installed: pip install onnxruntime") from e
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: its warnings are not the user's problem
        if threads is not None:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1  # one sequential graph: no use for a second pool
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...)
            raise ArtifactError(
                f"cannot load {path} with onnxruntime {ort.__version__}: {error_text(e)}{_file_versions(path)}"
            ) from e
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise ArtifactError(f"{path}: expected one input and one output, found {len(inputs)} and {len(outputs)}")
        return Session(
            handle=session,
            metadata=dict(session.get_modelmeta().custom_metadata_map),
            input_type=_ORT_TYPES.get(inputs[0].type, inputs[0].type),
            input_shape=[d if isinstance(d, int) else None for d in inputs[0].shape],
            output_shape=[d if isinstance(d, int) else None for d in outputs[0].shape],
            extra={"input": inputs[0].name, "output": outputs[0].name},
        )

    def run(self, session: Session, images: np.ndarray) -> np.ndarray:
        out = session.handle.run([session.extra["output"]], {session.extra["input"]: images})[0]
        return out.astype(np.float32, copy=False)


_ORT_TYPES = {"tensor(uint8)": "uint8", "tensor(float)": "float32", "tensor(float16)": "float16"}


def _file_versions(path: Path) -> str:
    """ " (the file is ONNX IR version 10, opset 20)": what a runtime must read, for its error message."""
    ir_version, opsets = onnx_versions(path)
    if ir_version is None:
        return ""
    opset = f", opset {opsets['']}" if "" in opsets else ""
    return f" (the file is ONNX IR version {ir_version}{opset})"


def onnx_versions(path: Path) -> tuple[int | None, dict[str, int]]:
    """The IR version and the opset of each domain ("" for ai.onnx) of an ONNX file, read from the top level of
    its protobuf (ModelProto fields 1 and 8) without onnx, which the device side lacks, and without parsing
    the graph. (None, {}) when the file is not one."""
    ir_version, opsets = None, {}
    try:
        with open(path, "rb") as f:
            while (key := _varint(f)) is not None:
                field, wire = key >> 3, key & 7
                if wire == 0:
                    value = _varint(f)
                    ir_version = value if field == 1 else ir_version
                elif wire == 2:
                    size = _varint(f) or 0
                    if field == 8 and size < 4096:  # an OperatorSetIdProto: domain (1), version (2)
                        domain, version = _opset(f.read(size))
                        opsets[domain] = version
                    else:
                        f.seek(size, 1)  # the graph and everything else: skipped, never read
                elif wire in (1, 5):
                    f.seek(8 if wire == 1 else 4, 1)
                else:
                    break  # not protobuf: stop with what was found
    except (OSError, ValueError, UnicodeDecodeError):
        pass
    return ir_version, opsets


def _varint(f: Any) -> int | None:
    value = shift = 0
    while byte := f.read(1):
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")
    return None


def _opset(data: bytes) -> tuple[str, int]:
    f, domain, version = io.BytesIO(data), "", 0
    while (key := _varint(f)) is not None:
        if key == (1 << 3 | 2):
            domain = f.read(_varint(f) or 0).decode()
        elif key == (2 << 3 | 0):
            version = _varint(f) or 0
        else:
            break
    return domain, version


_FP32_CACHE: dict[tuple[int, str], bytes] = {}  # one torch.onnx export per model, reused by every precision


def _torch_export(model: Any, path: Path) -> None:
    """torch.onnx's dynamo exporter with a symbolic batch axis.

    Not the TorchScript exporter: it traces shape arithmetic (timm's TF-"same" padding of EfficientNet) into
    float Shape/Div/Ceil/Clip nodes, which INT8 quantization then quantizes, scrambling the padding (0.4 %
    top-1 agreement on efficientnet_lite0). torch.export specialises the static H/W, so pads are constants.
    """
    import torch

    from ..contract import model_size

    key = (id(model), model.meta.source_sha256 or "")
    if key not in _FP32_CACHE:
        example = torch.zeros(2, *model_size(model.meta), 3, dtype=torch.uint8)  # the run's input size
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            warnings.simplefilter("ignore")
            try:
                program = torch.onnx.export(
                    model.eval(),
                    (example,),
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_shapes=({0: torch.export.Dim("N")},),
                    opset_version=OPSET,
                    dynamo=True,
                    optimize=True,
                    verbose=False,
                )
            except Exception as e:
                raise ExportError(f"torch.onnx.export failed: {error_text(e)}") from e
        _FP32_CACHE.clear()  # hold one model's bytes at most
        _FP32_CACHE[key] = program.model_proto.SerializeToString()
    path.write_bytes(_FP32_CACHE[key])


def _to_fp16(proto: Any) -> Any:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # keep_io_types: the output stays float32 (the uint8 input is not a float and is never touched)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_float_to_float16(proto, keep_io_types=True)


class _Reader:
    """onnxruntime CalibrationDataReader over small batches; `set_range` lets quantize_static calibrate a few
    batches at a time (CalibStridedMinMax), so histogram methods never hold every batch's activations."""

    def __init__(self, calibration: Calibration):
        self._batches = list(calibration.batches())
        self._next, self._end = 0, len(self._batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= self._end:
            return None
        self._next += 1
        return {INPUT_NAME: self._batches[self._next - 1]}

    def __len__(self) -> int:
        return len(self._batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next, self._end = start_index, min(end_index, len(self._batches))


def _stride(batches: int, most: int = 8) -> int:
    """The largest number of batches <= `most` that divides `batches` (onnxruntime requires a divisor)."""
    return max(d for d in range(1, min(most, batches) + 1) if batches % d == 0)


def _quantize(fp32: Path, tmp: Path, calibration: Calibration, learned: list) -> Any:
    import onnx

    return onnx.load(str(prepare_and_quantize(fp32, tmp, calibration, learned)[1]))


def prepare_and_quantize(fp32: Path, tmp: Path, calibration: Calibration, learned: list = ()) -> tuple[Path, Path]:
    """The exporter's INT8 quantization: (the prepared float graph, its QDQ quantization), both written in `tmp`
    with the same tensor names (the per-layer report compares them). `learned`: a QAT model's activation
    ranges (edgecifar.qat.requantizable), which replace calibration where they apply."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared, quantized = tmp / "prepared.onnx", tmp / "int8.onnx"
    # symbolic shape inference + graph optimizations (e.g. folding) before quantization, as ORT recommends
    try:
        quant_pre_process(str(fp32), str(prepared))
    except Exception:  # ORT's symbolic shape inference fails on some ops (edge_small's global max-pool graph):
        # ONNX's own shape inference is enough here, since every shape but the batch axis is static
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    prepared_proto = onnx.load(str(prepared))
    overrides = _overrides(fp32, prepared_proto, calibration, learned)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # histogram calibrators print(...) their progress
            quantize_static(
                str(prepared),
                str(quantized),
                _Reader(calibration),
                quant_format=QuantFormat.QDQ,
                # U8 activations / S8 weights: the x86 fast path of ORT's CPU kernels. Without
                # VNNI (AVX2 CPUs) that path sums u8*s8 pairs in int16 and saturates: 8-bit weights
                # cost points of accuracy there and nothing on a VNNI CPU. reduce_range (7-bit
                # weights) is ORT's remedy, exact on both (edgecifar.isa; docs/design-notes.md), so
                # the file runs wherever it is shipped (--int8-isa vnni opts out, for VNNI/AMX fleets).
                per_channel=True,
                reduce_range=calibration.isa != "vnni",
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=getattr(CalibrationMethod, ORT_CALIB[calibration.method]),
                nodes_to_exclude=_preprocessing_nodes(prepared_proto) + list(calibration.exclude),
                # a few batches per pass (not CalibMaxIntermediateOutputs: in onnxruntime 1.32
                # it drops the batches it flushes)
                extra_options={
                    "CalibStridedMinMax": _stride(calibration.num_batches),
                    "TensorQuantOverrides": overrides,
                },
            )
    except Exception as e:  # onnxruntime raises plain ValueError/RuntimeError from deep inside
        raise ExportError(f"onnxruntime quantization failed: {error_text(e)}") from e
    return prepared, quantized


def report_for(fp32_onnx: Path, calibration: Any, images: np.ndarray, batch_size: int = 32) -> dict[str, Any]:
    """Quantize `fp32_onnx` as the exporter does (`calibration`) and measure every layer on
    `images` (uint8 [N, H, W, 3], held-out training images). Returns the JSON-ready report (edgecifar.quant_report describes it)."""
    from .onnx_layers import layer_errors, ranking

    with tempfile.TemporaryDirectory(prefix="edgecifar-qreport-") as tmp:
        prepared, quantized = prepare_and_quantize(Path(fp32_onnx), Path(tmp), calibration)
        batches = [np.ascontiguousarray(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
        layers = layer_errors(prepared, quantized, batches)
    return {
        "model": Path(fp32_onnx).name,
        "images": int(len(images)),
        "image_shape": list(images.shape[1:]),
        "calibration": {
            "images": int(len(calibration.images)),
            "method": calibration.method,
            "int8_isa": calibration.isa,
        },
        "metric": "SQNR dB = 20 log10(||x|| / ||x - q(x)||); higher is better",
        "ranking": ranking(layers),
        "layers": [{**asdict(layer), "sensitivity_db": layer.sensitivity_db} for layer in layers],
    }


def qat_overrides(fp32: Any, prepared: Any, learned: list, most: int) -> dict[str, list[dict[str, Any]]]:
    """quantize_static's TensorQuantOverrides that keep what a QAT model learned: each learned activation range
    as the scale and zero point of the tensor it quantizes (found in the torch.onnx graph `fp32` by module and
    op, kept where the `prepared` graph still has it), and for each Conv/Gemm weight whose every output channel
    lies on a grid of at most `most` steps (a QAT twin's snapped weights, BN folded in or not), that grid as the
    channel's scale, so re-quantizing it is exact."""
    from onnx import numpy_helper

    names = {out for node in prepared.graph.node for out in node.output}
    found = {name: learned_range for name, learned_range in _learned_tensors(fp32, learned).items() if name in names}
    overrides = {
        name: [
            {"scale": np.array(r.scale, np.float32), "zero_point": np.array(r.zero_point - r.qmin, np.uint8)}
            if r.qmax - r.qmin == 255
            # ORT's activations are uint8: [qmin, qmax] shifted
            else {
                "rmin": np.array((r.qmin - r.zero_point) * r.scale, np.float32),
                "rmax": np.array((r.qmax - r.zero_point) * r.scale, np.float32),
            }
        ]
        for name, r in found.items()
    }
    weights = {t.name: t for t in prepared.graph.initializer}
    for node in prepared.graph.node:
        if node.op_type in ("Conv", "Gemm") and len(node.input) > 1 and node.input[1] in weights:
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            axis = 0 if node.op_type == "Conv" or trans_b else 1
            grid = _grid(np.moveaxis(numpy_helper.to_array(weights[node.input[1]]), axis, 0), most)
            if grid is not None:
                overrides[node.input[1]] = [
                    {"axis": axis, "scale": np.array(step, np.float32), "zero_point": np.array(0, np.int8)}
                    for step in grid
                ]
    return overrides


def _overrides(fp32: Path, prepared: Any, calibration: Calibration, learned: list) -> dict[str, list[dict]]:
    """quantize_static's TensorQuantOverrides: what a QAT model learned (qat_overrides), and under the x86 rule
    8-bit weights for the depthwise convs, whose kernel is exact on every x86 CPU (edgecifar.isa). A QAT run's
    depthwise weights keep the 7-bit grids it learned (setdefault): re-quantized on them, they stay exact."""
    import onnx

    overrides: dict[str, list[dict]] = {}
    if learned:
        from ..qat_model import X86_WEIGHT_STEPS

        overrides = qat_overrides(
            onnx.load(str(fp32)), prepared, learned, X86_WEIGHT_STEPS if calibration.isa != "vnni" else 127
        )
    if calibration.isa != "vnni":
        for name in depthwise_weights(prepared):
            overrides.setdefault(name, [{"axis": 0, "reduce_range": False}])
    return overrides


def depthwise_weights(proto: Any) -> list[str]:
    """The weight initializers of the graph's depthwise convs as ONNX Runtime's depthwise kernel takes them: more
    than one group, one input and one output channel per group (weights [group, 1, kh, kw]). A grouped conv with
    more outputs per group runs on MLAS's GEMM path, whose int16 pair sums need the 7-bit rule. In a QDQ graph,
    the int8 initializers behind the convs' DequantizeLinear."""
    shapes = {t.name: list(t.dims) for t in proto.graph.initializer}
    stored = {node.output[0]: node.input[0] for node in proto.graph.node if node.op_type == "DequantizeLinear"}
    found = []
    for node in proto.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2:
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        weight = stored.get(node.input[1], node.input[1])
        dims = shapes.get(weight, [])
        if group > 1 and len(dims) == 4 and dims[0] == group and dims[1] == 1:
            found.append(weight)
    return found


def _learned_tensors(proto: Any, learned: list) -> dict[str, Any]:
    """{tensor name: learned range}: the output of the `index`-th node of torch op `op` inside module `module`,
    read from the exporter's node metadata (module scopes, FX target). Where the exporter decomposed the op
    (adaptive_max_pool2d to a ReduceMax), the module's last node, whose output is the module's."""
    calls: dict[tuple[str, str], list[str]] = {}
    last: dict[str, str] = {}
    for node in proto.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        scopes = ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]"))
        op = re.search(r"target=torch\.ops\.aten\.(\w+)\.", meta.get("pkg.torch.onnx.fx_node", ""))
        module = scopes[-2] if len(scopes) >= 2 else ""
        if op:
            calls.setdefault((module, op.group(1)), []).append(node.output[0])
        last[module] = node.output[0]
    found = {}
    for r in learned:
        outputs = calls.get((r.module, r.op), [])
        name = outputs[r.index] if r.index < len(outputs) else (last.get(r.module) if r.index == 0 else None)
        if name is not None:
            found[name] = r
    return found


def _grid(weight: np.ndarray, most: int) -> list[float] | None:
    """Per output channel (axis 0), the largest step s = max|w| / k, k <= `most`, of which every weight is a
    whole multiple; None unless every channel has one."""
    steps = []
    for channel in weight.reshape(len(weight), -1).astype(np.float64):
        top = float(np.abs(channel).max())
        if top == 0.0:
            steps.append(1.0)
            continue
        step = next(
            (
                top / k
                for k in range(most, 0, -1)
                if np.abs(channel / (top / k) - np.round(channel / (top / k))).max() < 1e-3
            ),
            None,
        )
        if step is None:
            return None
        steps.append(step)
    return steps


def _preprocessing_nodes(proto: Any) -> list[str]:
    """The nodes between the graph input and the first Conv (layout, cast, normalization, resize).

    They stay in float: quantized, the per-channel normalization becomes QLinearMul + QLinearAdd with a
    broadcast that onnxruntime runs on a slow path (a large share of a small net's batch-1 latency),
    while in float they cost a few microseconds on 3 x 32 x 32 values and nothing in accuracy.
    """
    producer = {out: node for node in proto.graph.node for out in node.output}
    first_conv = next((n for n in proto.graph.node if n.op_type == "Conv"), None)
    if first_conv is None:
        return []
    found: dict[str, Any] = {}
    pending = [first_conv.input[0]]
    while pending:
        node = producer.get(pending.pop())
        if node is not None and node.name not in found:
            found[node.name] = node
            pending.extend(node.input)
    return list(found)


def _set_metadata(proto: Any, metadata: dict[str, str]) -> None:
    import onnx

    del proto.metadata_props[:]  # quantize_static/converters may carry stale props over
    for node in proto.graph.node:  # the exporter's per-node debug notes (module paths, stack traces): a fifth
        del node.metadata_props[:]  # of edge_tiny's INT8 file (138 -> 110 KB), and nothing a device needs
        node.doc_string = ""
    onnx.helper.set_model_props(proto, metadata)
    proto.producer_name = "edgecifar"
    proto.producer_version = metadata.get("edgecifar_version", "")
    proto.doc_string = metadata.get("contract", "")
