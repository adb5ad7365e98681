"""Per-layer quantization report: which layer's INT8 quantization costs accuracy.

The FP32 ONNX file is quantized exactly as `export` does it (backends/onnx.py: the same calibration draw,
method and ISA setting), then both graphs run on held-out training images with every intermediate tensor
saved (ONNX Runtime's qdq_loss_debug tools). Per layer:

- `activation_sqnr_db`: SQNR of its output before and after its own QuantizeLinear/DequantizeLinear pair in the
  INT8 graph: the error that quantizing this one tensor adds, nothing upstream;
- `weight_sqnr_db`: SQNR of its float weights against their dequantized INT8 values;
- `float_sqnr_db`: SQNR of the INT8 graph's tensor against the float graph's: the error accumulated up to here;
- `mse`: the mean squared error of the activation's own QDQ;
- `added_db`: the accumulated SQNR lost across the layer (its worst input's `float_sqnr_db` minus its output's):
  what this layer, with its weights, its arithmetic and its output's QDQ, adds to the error.

SQNR = 20 log10(||x|| / ||x - q(x)||) in dB (higher is better; 6 dB per bit). `added_db` ranks the layers
(highest first): accuracy control leaves them in float in that order. A layer's own SQNRs can look fine while
it breaks the graph (one outlier weight per channel stretches the scale and zeroes the other weights, yet
dominates the norm), which is why the ranking is by what the layer does to the graph's output.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .errors import ExportError


@dataclass(frozen=True)
class LayerError:
    """One quantized layer of the float graph, in graph order. SQNRs in dB (None: that part is not quantized)."""

    node: str
    op_type: str
    output: str
    activation_sqnr_db: float | None
    weight_sqnr_db: float | None
    float_sqnr_db: float | None
    mse: float | None
    added_db: float | None = None  # accumulated SQNR lost across this layer: its worst input's minus its output's

    @property
    def sensitivity_db(self) -> float:
        """How much this layer degrades the graph (higher: more sensitive)."""
        return -math.inf if self.added_db is None else self.added_db


EXACT_DB = 100.0  # SQNR given to a tensor both graphs compute alike (float inputs of the first layer, ...)


def sqnr_db(x: np.ndarray, y: np.ndarray) -> float:
    """20 log10(||x|| / ||x - y||), the formula of onnxruntime's compute_signal_to_quantization_noice_ratio."""
    from onnxruntime.quantization.qdq_loss_debug import compute_signal_to_quantization_noice_ratio

    return float(compute_signal_to_quantization_noice_ratio(x, y))


def _mse(x: list[np.ndarray], y: list[np.ndarray]) -> float:
    a, b = np.concatenate([t.ravel() for t in x]), np.concatenate([t.ravel() for t in y])
    return float(np.mean((a.astype(np.float64) - b) ** 2))


class _Batches:
    """A CalibrationDataReader over fixed batches (the debug tools iterate it once per model)."""

    def __init__(self, input_name: str, batches: list[np.ndarray]):
        self._items = iter([{input_name: b} for b in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)

    def __iter__(self):
        return iter(self.get_next, None)


def layer_errors(
    float_model: Path, qdq_model: Path, batches: list[np.ndarray], input_name: str = "image"
) -> list[LayerError]:
    """Per-layer errors of `qdq_model` (a QDQ quantization of `float_model`, the same tensor names) on `batches`.
    Raises ExportError when the graphs cannot be run."""
    import onnx
    from onnxruntime.quantization import qdq_loss_debug as dbg

    acts = {
        name: _activations(model, batches, input_name) for name, model in (("float", float_model), ("qdq", qdq_model))
    }
    matched = dbg.create_activation_matching(acts["qdq"], acts["float"])
    weights = {
        name: sqnr_db(np.atleast_1d(m["float"]), np.atleast_1d(m["dequantized"]))  # 0-d ones too
        for name, m in dbg.create_weight_matching(str(float_model), str(qdq_model)).items()
    }
    graph = onnx.load(str(float_model)).graph
    constants = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}

    def accumulated(tensor: str) -> float | None:  # the INT8 graph's value (after its QDQ pair) vs the float one
        post = acts["qdq"].get(f"{tensor}_DequantizeLinear_Output", acts["qdq"].get(tensor))
        return min(EXACT_DB, sqnr_db(acts["float"][tensor], post)) if tensor in acts["float"] and post else None

    found: list[LayerError] = []
    inputs: dict[str, list[str]] = {}
    for node in graph.node:
        output = node.output[0] if node.output else ""
        match = matched.get(output)
        weight = next((weights[i] for i in node.input[1:] if i in weights), None)
        if match is None and weight is None:
            continue  # neither its output nor its weights are quantized
        act = mse = None
        if match:
            pre = [_fused_activation(node, t, constants) for t in match["pre_qdq"]]
            act, mse = sqnr_db(pre, match["post_qdq"]), _mse(pre, match["post_qdq"])
        layer = LayerError(node.name, node.op_type, output, act, weight, accumulated(output), mse)
        inputs[node.name] = [i for i in node.input if i and i not in constants]
        producer = found[-1] if found else None
        if (
            node.op_type in ("Relu", "Clip")
            and producer
            and producer.output == node.input[0]
            and producer.activation_sqnr_db is None
        ):
            # a Conv/Gemm and the activation fused into its output: one layer, named after the Conv (the node
            # accuracy control leaves in float)
            layer = replace(
                layer,
                node=producer.node,
                op_type=f"{producer.op_type}+{node.op_type}",
                weight_sqnr_db=producer.weight_sqnr_db,
            )
            found.pop()
        entering = [a for a in map(accumulated, inputs[layer.node]) if a is not None]
        # None where no input's accumulated SQNR is measurable (it is not saved in both graphs): no guess
        added = min(entering) - layer.float_sqnr_db if entering and layer.float_sqnr_db is not None else None
        found.append(replace(layer, added_db=added))
    return found


def _activations(model: Path, batches: list[np.ndarray], input_name: str) -> dict[str, list[np.ndarray]]:
    """Every float tensor of `model` on the batches (onnxruntime's qdq_loss_debug augmentation)."""
    from onnxruntime.quantization import qdq_loss_debug as dbg

    with tempfile.TemporaryDirectory(prefix="edgecifar-qreport-") as tmp:
        augmented = Path(tmp) / "augmented.onnx"
        try:
            dbg.modify_model_output_intermediate_tensors(str(model), str(augmented))
            return dbg.collect_activations(str(augmented), _Batches(input_name, batches))
        except Exception as e:  # onnxruntime raises its own types from deep inside
            raise ExportError(f"cannot run {model.name} for the quantization report: {e}") from e


def _fused_activation(node: Any, pre: np.ndarray, constants: dict[str, np.ndarray]) -> np.ndarray:
    """The float value a QDQ pair stands for. The quantizer drops a Relu/Clip after a Conv and lets the pair's
    range do its work, so the tensor before the pair is then the Conv's output: apply the activation to it,
    or its negative values would count as quantization error."""
    if node.op_type == "Relu":
        return np.maximum(pre, 0)
    if node.op_type == "Clip":
        low, high = (constants.get(name) if name else None for name in (list(node.input[1:3]) + ["", ""])[:2])
        return np.clip(pre, -np.inf if low is None else low, np.inf if high is None else high)
    return pre


def ranking(layers: Iterable[LayerError]) -> list[str]:
    """Names of the layers with weights (Conv, Gemm, MatMul: what mixed precision leaves in float), the most
    sensitive (the most accumulated SQNR lost across it) first. Weightless nodes are not ranked: the first
    quantized tensor after float preprocessing would top the list, and leaving its node in float changes nothing
    while its consumer still quantizes it."""
    weighted = [layer for layer in layers if layer.weight_sqnr_db is not None]
    return [layer.node for layer in sorted(weighted, key=lambda layer: -layer.sensitivity_db)]


def report_for(fp32_onnx: Path, calibration: Any, images: np.ndarray, batch_size: int = 32) -> dict[str, Any]:
    """Quantize `fp32_onnx` as the exporter does (`calibration`: backends.Calibration) and measure every layer on
    `images` (uint8 [N, H, W, 3], held-out training images). Returns the JSON-ready report."""
    from .backends.onnx import prepare_and_quantize

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


def write_report(report: dict[str, Any], out_base: Path) -> list[Path]:
    """`<out_base>.json` and `<out_base>.png` (activation, weight and accumulated SQNR per layer, in graph order)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .utils import atomic_path, write_json

    out_base.parent.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out_base.with_suffix(".json"), out_base.with_suffix(".png")
    layers = report["layers"]
    x = np.arange(len(layers))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.22 * len(layers)), 4))
    for key, label, style in (
        ("activation_sqnr_db", "activation (own QDQ)", "o-"),
        ("weight_sqnr_db", "weights", "s"),
        ("float_sqnr_db", "accumulated vs float graph", "^--"),
        ("added_db", "lost across the layer", "x"),
    ):
        ax.plot(x, [np.nan if layer[key] is None else layer[key] for layer in layers], style, ms=3, label=label)
    ax.set_xticks(x, [f"{layer['op_type']} {layer['node']}"[:28] for layer in layers], rotation=90, fontsize=5)
    ax.set_ylabel("SQNR (dB, higher is better)")
    ax.set_title(f"{report['model']}: INT8 error per layer ({report['images']} held-out training images)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(png_path) as tmp_png:
        fig.savefig(tmp_png, dpi=130, format="png")
    plt.close(fig)
    write_json(json_path, report)  # an unquantized part's infinite sensitivity becomes null
    return [json_path, png_path]


def quant_report(
    fp32_onnx: Path | str,
    data: str,
    out_dir: Path | str = "benchmarks/quant",
    calib_size: int = 512,
    calib_method: str = "minmax",
    int8_isa: str = "x86",
    images: int = 256,
    seed: int = 0,
    cache_dir: Path | str | None = None,
) -> list[Path]:
    """The per-layer report of an exported FP32 ONNX file, quantized with the calibration draw `export` makes
    from `data`'s training split (same size, method, ISA setting and seed) and measured on `images` other
    training images; writes `<out_dir>/<source run>-int8-layers.{json,png}` and returns both paths. Raises
    UsageError for a file that is not an FP32 ONNX export, DataError for unusable data."""
    from .backends import Calibration
    from .data import load_data
    from .errors import UsageError
    from .export import _sample, holdout_indices
    from .runtime import load_artifact

    fp32_onnx = Path(fp32_onnx)
    artifact = load_artifact(fp32_onnx)
    if artifact.format != "onnx" or artifact.metadata.get("precision") != "fp32":
        raise UsageError(f"{fp32_onnx} is not an FP32 ONNX export: the report quantizes the FP32 file itself")
    if images < 1 or calib_size < 1:
        raise UsageError("--images and --calib-size must be at least 1")
    splits = load_data(data, cache_dir, input_size=artifact.input_size)  # at the size the file takes
    calibration = Calibration(_sample(splits.train_x, calib_size, [seed, 0]), calib_method, isa=int8_isa)
    held_out = splits.train_x[holdout_indices(len(splits.train_x), calib_size, images, seed)]
    if len(held_out) == 0:
        raise UsageError(f"{data} has no training images beyond the {calib_size} calibration images")
    report = report_for(fp32_onnx, calibration, held_out)
    report["model"] = artifact.metadata.get("model", fp32_onnx.stem)
    run = artifact.metadata.get("source_run") or report["model"]  # airnet_m-kd and airnet_m are both airnet_m
    report["source"] = {"file": fp32_onnx.name, "sha256": _sha(fp32_onnx), "data": splits.source, "seed": seed}
    return write_report(report, Path(out_dir) / f"{run}-int8-layers")


def _sha(path: Path) -> str:
    from .utils import sha256_file

    return sha256_file(path)
