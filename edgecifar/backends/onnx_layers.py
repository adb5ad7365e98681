"""ONNX's per-layer quantization error: run a float graph and its QDQ quantization on the same images with
every intermediate tensor saved (ONNX Runtime's qdq_loss_debug tools) and measure, per layer, what its INT8
quantization costs. edgecifar.quant_report explains the figures; `ranking` orders the layers for accuracy
control (backends/onnx.py leaves them in float in that order).
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import ExportError


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
