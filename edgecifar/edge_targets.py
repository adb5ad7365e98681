"""Which edge targets take every op of an exported file: TFLite Micro for a .tflite file (its builtin op list,
edgecifar.backends.tflm.TFLM_OPS), and NNAPI and CoreML for an ONNX file, by ONNX Runtime's own mobile usability
checker (onnxruntime.tools.mobile_helpers.usability_checker, what `python -m
onnxruntime.tools.check_onnx_model_mobile_usability` runs) where onnxruntime ships it. Other files: none checked.

An accelerator that lacks one op of the graph runs the graph in pieces, with the CPU between them: ONNX Runtime's
checker calls more than two such partitions "worse performance than just using the CPU EP".
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

# ONNX Runtime's op lists per execution provider (files beside its usability checker)
_ORT_TARGETS = {"NNAPI": None, "CoreML": "coreml_supported_mlprogram_ops.md"}


def edge_targets(path: Path) -> dict[str, dict[str, Any]]:
    """{target: {"all_ops": bool, "lacking": [op, ...], ...}} for the targets that apply to the file's format;
    {} when none does or the checker is not installed. Never raises: a report, not a gate."""
    name = path.name.lower()
    try:
        if name.endswith(".tflite"):
            return {"TFLite Micro": _tflm(path)}
        if name.endswith(".onnx"):
            return _ort(path)
    except Exception:  # noqa: BLE001 - a checker's failure must not fail an export
        return {}
    return {}


def targets_text(targets: dict[str, dict[str, Any]]) -> str:
    """ "TFLite Micro: all ops" / "NNAPI: lacks Gelu, ReduceMax (19 of 95 nodes, 8 partitions)" joined by '; '."""
    parts = []
    for target, found in targets.items():
        share = (
            f" ({found['supported_nodes']} of {found['nodes']} nodes, {found['partitions']} partition(s))"
            if "nodes" in found
            else ""
        )
        parts.append(
            f"{target}: all ops{share}" if found["all_ops"] else f"{target}: lacks {', '.join(found['lacking'])}{share}"
        )
    return "; ".join(parts)


def _tflm(path: Path) -> dict[str, Any]:
    from .backends.tflm import TFLM_OPS, op_names

    lacking = sorted({op for op, _ in op_names(path.read_bytes()) if op not in TFLM_OPS})
    return {"all_ops": not lacking, "lacking": lacking}


def _ort(path: Path) -> dict[str, dict[str, Any]]:
    """ONNX Runtime's checker as its command runs it (the graph optimized to its basic level, shapes inferred), with
    the batch axis taken as fixed (a device runs batch 1: onnxruntime.tools.make_dynamic_shape_fixed)."""
    import tempfile

    try:
        from onnxruntime.tools.mobile_helpers import usability_checker as checker
        from onnxruntime.tools.onnx_model_utils import (
            ModelProtoWithShapeInfo,
            optimize_model,
        )
    except ImportError:
        return {}
    found = {}
    with tempfile.TemporaryDirectory(prefix="edgecifar-targets-") as tmp, contextlib.redirect_stdout(io.StringIO()):
        optimized = Path(tmp) / path.name
        optimize_model(path, optimized, use_external_initializers=True)
        model = ModelProtoWithShapeInfo(optimized).model_with_shape_info
        for target, config in _ORT_TARGETS.items():
            info = (
                checker.check_nnapi_partitions(model, require_fixed_input_sizes=False)
                if config is None
                else checker.check_coreml_partitions(model, False, config)
            )
            lacking = sorted(
                op.removeprefix("ai.onnx:") for op in info.unsupported_ops | info.ops_with_unsupported_rank
            )
            found[target] = {
                "all_ops": not lacking,
                "lacking": lacking,
                "nodes": info.num_nodes,
                "supported_nodes": info.num_supported_nodes,
                "partitions": info.num_partitions,
            }
    return found
