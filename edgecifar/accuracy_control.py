"""Accuracy-controlled INT8 (`export --precision int8 --max-drop POINTS`): keep the top-1 drop of the INT8 file
under a bound, measured on a held-out slice of the TRAINING split (never the test split), by leaving the most
sensitive layers in float.

- ONNX: the layers are ranked by the per-layer report (edgecifar.quant_report: lowest SQNR first) and left in
  float one at a time (onnxruntime's nodes_to_exclude: mixed precision) until the bound holds.
- OpenVINO: NNCF's own search, nncf.quantize_with_accuracy_control (backends/openvino.py calls `nncf_control`).

Each INT8 file records the layers that stayed in float (`float_nodes`, a JSON list) and the measured drop
(`accuracy_drop`, points) in its metadata; the manifest's calibration entry repeats them.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import ExportError

MAX_FLOAT_LAYERS = 16  # ONNX: give up (ExportError) after leaving this many layers in float
EVAL_BATCH = 100


@dataclass(frozen=True)
class Control:
    """The bound and the held-out training images (uint8 [N, H, W, 3], labels [N]) it is measured on."""

    max_drop: float  # top-1 points, e.g. 0.3
    images: np.ndarray
    labels: np.ndarray
    float_accuracy: float  # the float (PyTorch) model's top-1 on them, a fraction

    def drop_points(self, accuracy: float) -> float:
        return round(100 * (self.float_accuracy - accuracy), 4)


def accuracy(run: Callable[[np.ndarray], np.ndarray], images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 (a fraction) of `run` (uint8 batch -> logits) over the images."""
    hits = sum(
        int((run(images[i : i + EVAL_BATCH]).argmax(1) == labels[i : i + EVAL_BATCH]).sum())
        for i in range(0, len(images), EVAL_BATCH)
    )
    return hits / len(images)


def control_metadata(float_nodes: list[str], drop: float) -> dict[str, str]:
    return {"float_nodes": json.dumps(float_nodes), "accuracy_drop": f"{drop:.4f}"}


def export_controlled(
    backend: Any, model: Any, path: Path, calibration: Any, metadata: dict[str, str], log: Callable[[str], None]
) -> tuple[list[Path], dict[str, Any]]:
    """The INT8 file under calibration.control's bound, in either format: (files written, what was measured)."""
    control = calibration.control
    if backend.name == "onnx":
        return export_onnx_controlled(backend, model, path, replace(calibration, control=None), metadata, control, log)
    files = backend.export(model, path, "int8", calibration, metadata)  # nncf's search; fills in the metadata
    drop = float(metadata["accuracy_drop"])
    log(
        f"{backend.name} int8: {len(json.loads(metadata['float_nodes']))} layer(s) in float, drop {drop:.2f} "
        f"points on {len(control.labels)} held-out training images (bound {control.max_drop})"
    )
    return files, {
        "float_nodes": json.loads(metadata["float_nodes"]),
        "accuracy_drop": drop,
        "float_accuracy": control.float_accuracy,
        "int8_accuracy": round(control.float_accuracy - drop / 100, 6),
        "images": int(len(control.labels)),
    }


def export_onnx_controlled(
    backend: Any,
    model: Any,
    path: Path,
    calibration: Any,
    metadata: dict[str, str],
    control: Control,
    log: Callable[[str], None],
) -> tuple[list[Path], dict[str, Any]]:
    """Write the INT8 ONNX file at `path` with as few layers in float as keep the drop <= control.max_drop.
    Returns (files, {"float_nodes", "accuracy_drop", "float_accuracy", "int8_accuracy", "images"}). Raises
    ExportError when MAX_FLOAT_LAYERS layers in float do not meet the bound."""
    from .quant_report import report_for
    from .runtime import load_artifact

    order: list[str] | None = None
    excluded: list[str] = []
    while True:
        trial = replace(calibration, exclude=tuple(excluded))
        backend.export(model, path, "int8", trial, metadata)
        int8_accuracy = accuracy(load_artifact(path).run, control.images, control.labels)
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
                backend.export(model, fp32, "fp32", None, {})
                order = report_for(fp32, calibration, control.images)["ranking"]
        if len(excluded) >= min(MAX_FLOAT_LAYERS, len(order)):
            raise ExportError(
                f"onnx int8: the drop stays {drop:.2f} points (> {control.max_drop}) with "
                f"{len(excluded)} layers in float; raise --max-drop or use fp16"
            )
        excluded.append(order[len(excluded)])
    outcome = {
        "float_nodes": excluded,
        "accuracy_drop": drop,
        "float_accuracy": control.float_accuracy,
        "int8_accuracy": int8_accuracy,
        "images": int(len(control.labels)),
    }
    # the file now carries what was measured (the same quantization again: deterministic, same weights)
    files = backend.export(model, path, "int8", trial, {**metadata, **control_metadata(excluded, drop)})
    return files, outcome


def nncf_control(
    ov_model: Any,
    calibration_batches: list[np.ndarray],
    control: Control,
    quantize_kwargs: dict,
    metadata: dict[str, str],
) -> Any:
    """nncf.quantize_with_accuracy_control with the same quantization settings as the plain path; records the
    layers left in float and the drop it measured into `metadata` (the caller writes it into the file)."""
    import nncf
    import openvino as ov

    validation = [
        (control.images[i : i + EVAL_BATCH], control.labels[i : i + EVAL_BATCH])
        for i in range(0, len(control.labels), EVAL_BATCH)
    ]

    def validate(compiled: Any, items: Any) -> tuple[float, None]:
        pairs = list(items)
        x = np.concatenate([p[0] for p in pairs])
        y = np.concatenate([p[1] for p in pairs])
        return accuracy(lambda b: compiled(b)[0], x, y), None

    try:
        quantized = nncf.quantize_with_accuracy_control(
            ov_model,
            nncf.Dataset(calibration_batches),
            nncf.Dataset(validation, lambda item: item[0]),
            validate,
            max_drop=control.max_drop / 100,
            drop_type=nncf.DropType.ABSOLUTE,
            **quantize_kwargs,
        )
    except Exception as e:
        raise ExportError(f"nncf.quantize_with_accuracy_control failed: {e}") from e
    compiled = ov.Core().compile_model(quantized, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    int8_accuracy = validate(compiled, validation)[0]
    metadata.update(control_metadata(float_layers(quantized), control.drop_points(int8_accuracy)))
    return quantized


_WEIGHTED = {"Convolution", "GroupConvolution", "MatMul"}
_PASS = {"Convert", "Subtract", "Multiply", "Reshape", "Transpose", "Unsqueeze"}


def float_layers(ov_model: Any) -> list[str]:
    """Names of the convolutions and matrix products whose weights are not quantized (no FakeQuantize and no
    8-bit constant on their weight path)."""
    found = []
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() not in _WEIGHTED:
            continue
        pending, quantized = [op.input_value(1).get_node()], False
        while pending and not quantized:
            node = pending.pop()
            kind = node.get_type_name()
            quantized = kind == "FakeQuantize" or (
                kind == "Constant" and node.get_element_type().get_type_name() in ("i8", "u8", "i4", "u4")
            )
            if kind in _PASS:
                pending += [node.input_value(i).get_node() for i in range(node.get_input_size())]
        if not quantized:
            found.append(op.get_friendly_name())
    return found
