"""Accuracy-controlled INT8 (`export --precision int8 --max-drop POINTS`): keep the top-1 drop of the INT8 file
under a bound, measured on a held-out slice of the TRAINING split (never the test split), by leaving the most
sensitive layers in float.

Each backend that can (its `accuracy_control` member) does it its own way, in its own module, as its
`export_controlled` method:

- ONNX (backends/onnx.py): the layers are ranked by the per-layer report (lowest SQNR first, edgecifar.quant_report)
  and left in float one at a time (onnxruntime's nodes_to_exclude: mixed precision) until the bound holds.
- OpenVINO (backends/openvino.py): NNCF's own search, nncf.quantize_with_accuracy_control.

This module holds what they share: the bound (`Control`), how accuracy is measured, and the record of the outcome.
Each INT8 file records the layers that stayed in float (`float_nodes`, a JSON list) and the measured drop
(`accuracy_drop`, points) in its metadata; the manifest's calibration entry repeats them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

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
    """What an accuracy-controlled INT8 file carries in its metadata."""
    return {"float_nodes": json.dumps(float_nodes), "accuracy_drop": f"{drop:.4f}"}


def outcome(control: Control, float_nodes: list[str], drop: float, int8_accuracy: float) -> dict[str, Any]:
    """What was measured, as the manifest's calibration entry records it: {"float_nodes", "accuracy_drop"
    (points), "float_accuracy", "int8_accuracy" (fractions), "images"}."""
    return {
        "float_nodes": float_nodes,
        "accuracy_drop": drop,
        "float_accuracy": control.float_accuracy,
        "int8_accuracy": int8_accuracy,
        "images": int(len(control.labels)),
    }


def export_controlled(
    backend: Any, model: Any, path: Path, calibration: Any, metadata: dict[str, str], log: Callable[[str], None]
) -> tuple[list[Path], dict[str, Any]]:
    """The INT8 file under calibration.control's bound, by the backend's own method (a backend whose
    `accuracy_control` is True has `export_controlled`): (files written, `outcome`). Raises ExportError when the
    bound cannot be met."""
    return backend.export_controlled(model, path, calibration, metadata, log)
