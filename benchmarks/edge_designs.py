"""Which edge net can beat scratch_cnn's INT8 batch-1 latency? Export candidate architectures (freshly
initialised: latency does not depend on the weights' values) to INT8 ONNX and OpenVINO IR the way
`edgecifar export` does, calibrated on real training images, and time them at batch 1, 1 thread, next to
scratch_cnn's architecture exported the same way, and the committed INT8 files of both trained models.

    uv run python benchmarks/edge_designs.py --data ../shared/data/cifar10-jpeg.tar.gz

Writes benchmarks/results/edge_designs.{json,md}. It chose edge_small's layout (docs/reference-runs.md).
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from edgecifar.backends import Calibration
from edgecifar.bench_worker import _load_artifact, latency
from edgecifar.data import load_data
from edgecifar.export import BACKENDS, metadata_for
from edgecifar.models import EdgeModel, count_macs, count_params, create_model
from edgecifar.nets import AirbenchNet, EdgePoolNet, EdgeResNet
from edgecifar.utils import library_versions, machine_info, write_json

RESULTS = Path(__file__).parent / "results"
EXPORTED = Path(__file__).resolve().parents[1] / "exported"
TRAINED = ("scratch_cnn", "edge_small", "efficientnet_lite0", "airnet_m")  # committed INT8 files, as shipped


CANDIDATES: dict[str, Callable[[], nn.Module]] = {
    "scratch_cnn (baseline)": lambda: create_model("scratch_cnn").backbone,
    "ResNet-8 16-32-64 (edge_tiny)": lambda: EdgeResNet((16, 32, 64), (1, 1, 1), 10),
    "pool net, stem 16, 32-64-96": lambda: EdgePoolNet(16, (32, 64, 96), 10),
    "pool net, stem 16, 32-64-128": lambda: EdgePoolNet(16, (32, 64, 128), 10),
    "pool net, stem 24, 32-64-128": lambda: EdgePoolNet(24, (32, 64, 128), 10),
    "pool net, stem 16, 40-80-160 (edge_small)": lambda: EdgePoolNet(16, (40, 80, 160), 10),
    "pool net, stem 16, 48-96-160": lambda: EdgePoolNet(16, (48, 96, 160), 10),
    "airnet_s 32-128-128 (GELU)": lambda: AirbenchNet((32, 128, 128), 10),
    "airnet_s layout with ReLU": lambda: AirbenchNet((32, 128, 128), 10, nn.ReLU),
    "airnet_m 48-192-192 (GELU)": lambda: AirbenchNet((48, 192, 192), 10),
    "airnet_m layout with ReLU": lambda: AirbenchNet((48, 192, 192), 10, nn.ReLU),
    "airnet_l 64-256-256 (GELU, airbench94)": lambda: AirbenchNet((64, 256, 256), 10),
}


def export_design(name: str, build: Callable[[], nn.Module], calibration: Calibration, tmp: Path) -> dict:
    """Export one design to INT8 ONNX and OpenVINO; returns its row, with the artifact paths under "paths"."""
    torch.manual_seed(0)
    meta = replace(create_model("scratch_cnn").meta, model=name, source_run="edge_designs", source_sha256=name)
    model = EdgeModel(build(), meta)
    model.train()
    with torch.no_grad():  # BN statistics of real images, so calibration ranges look like a trained net's
        model(torch.from_numpy(calibration.images))
    model.eval()
    row: dict = {"design": name, "params": count_params(model), "macs": count_macs(model), "paths": {}}
    for fmt, suffix in (("onnx", ".onnx"), ("openvino", ".xml")):
        backend, path = BACKENDS[fmt], tmp / f"{len(list(tmp.iterdir()))}{suffix}"
        backend.export(model, path, "int8", calibration, metadata_for(meta, backend, "int8"))
        row["paths"][fmt] = str(path)
    row["onnx_int8_bytes"] = Path(row["paths"]["onnx"]).stat().st_size
    return row


def committed_row(name: str) -> dict | None:
    """The trained model's INT8 files as committed in exported/, timed in the same rounds as the designs: the
    latency target is about the files that ship. None when they are not there."""
    paths = {"onnx": EXPORTED / name / f"{name}-int8.onnx", "openvino": EXPORTED / name / f"{name}-int8.xml"}
    if not all(p.is_file() for p in paths.values()):
        return None
    model = create_model(name)
    return {
        "design": f"{name}, trained (exported/)",
        "params": count_params(model),
        "macs": count_macs(model),
        "paths": {fmt: str(p) for fmt, p in paths.items()},
        "onnx_int8_bytes": paths["onnx"].stat().st_size,
    }


def time_in_rounds(rows: list[dict], samples: list[np.ndarray], rounds: int, seconds: float) -> None:
    """Batch-1 p50 of every artifact, measured in interleaved rounds: the VM's speed drifts over minutes,
    so one long window per design would compare moments as much as designs. Reports the median of the
    rounds' p50s and their spread."""
    runners = {
        (i, fmt): _load_artifact(path, 1, None, None)[0]
        for i, row in enumerate(rows)
        for fmt, path in row["paths"].items()
    }
    p50s: dict[tuple[int, str], list[float]] = {key: [] for key in runners}
    for _ in range(rounds):
        for key, run in runners.items():
            p50s[key].append(latency(run, samples, seconds, warmup=0.1)["p50_ms"])
    for (i, fmt), values in p50s.items():
        rows[i][f"{fmt}_int8_p50_ms"] = float(np.median(values))
        rows[i][f"{fmt}_int8_p50_range_ms"] = [min(values), max(values)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="cifar10")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved latency rounds")
    parser.add_argument("--seconds", type=float, default=0.4, help="latency window per artifact and round")
    args = parser.parse_args()
    torch.set_num_threads(1)  # exports and calibration; the runtimes are pinned to 1 thread when loaded
    splits = load_data(args.data)
    rng = np.random.default_rng(0)
    calibration = Calibration(splits.train_x[rng.choice(len(splits.train_y), 256, replace=False)])
    samples = [np.ascontiguousarray(splits.test_x[i : i + 1]) for i in range(64)]
    with tempfile.TemporaryDirectory() as tmp:
        rows = [export_design(name, build, calibration, Path(tmp)) for name, build in CANDIDATES.items()]
        rows += [row for row in map(committed_row, TRAINED) if row]
        time_in_rounds(rows, samples, args.rounds, args.seconds)
    for row in rows:
        del row["paths"]
        print(row, flush=True)
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": machine_info(),
        "versions": library_versions("torch", "onnxruntime", "openvino", "nncf"),
        "method": (
            f"INT8 exports as `edgecifar export` writes them; batch-1 latency, 1 thread, all in one "
            f"process, in {args.rounds} interleaved rounds of ~{args.seconds} s per artifact; "
            "the median of the rounds' p50s, with their range"
        ),
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / "edge_designs.json", result)
    lines = [
        f"# Edge net designs: INT8 batch-1 latency, 1 thread ({result['date']})",
        "",
        f"- Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores; versions: "
        + ", ".join(f"{k} {v}" for k, v in result["versions"].items()),
        f"- Method: {result['method']}",
        "",
        "| design | params | MMACs | INT8 ONNX KB | ONNX p50 ms | OpenVINO p50 ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['design']} | {r['params']:,} | {r['macs'] / 1e6:.1f} | {r['onnx_int8_bytes'] / 1e3:.0f} | "
        f"{_with_range(r, 'onnx')} | {_with_range(r, 'openvino')} |"
        for r in rows
    ]
    (RESULTS / "edge_designs.md").write_text("\n".join(lines) + "\n")


def _with_range(row: dict, fmt: str) -> str:
    low, high = row[f"{fmt}_int8_p50_range_ms"]
    return f"{row[f'{fmt}_int8_p50_ms']:.3f} ({low:.3f}-{high:.3f})"


if __name__ == "__main__":
    main()
