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

from pathlib import Path
from typing import Any

import numpy as np

from .backends.onnx import report_for  # noqa: F401 - the report's measurement is the ONNX backend's
from .backends.onnx_layers import EXACT_DB, LayerError, layer_errors, ranking, sqnr_db  # noqa: F401


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
