"""Where an INT8 file's batch-1 time goes, next to its FP32 file: ONNX Runtime's profiler (kernel time per op
type) and OpenVINO's performance counters (time per executed layer type and kernel), one thread.

    uv run python benchmarks/int8_profile.py exported/airnet_m exported/edge_tiny [--runs 300] [--tag after]

Writes benchmarks/results/int8_profile.json (and prints the top entries). Shares of the total, not absolute
times, are what to compare across machines.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
from pathlib import Path

import numpy as np

RESULT = Path(__file__).parent / "results" / "int8_profile.json"


def ort_profile(path: Path, runs: int) -> dict[str, float]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = os.path.join(tmp, "ort")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
        for _ in range(runs):
            session.run(None, {session.get_inputs()[0].name: x})
        events = json.loads(Path(session.end_profiling()).read_text())
    per_op: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"] / runs / 1000  # ms per inference
    return dict(per_op.most_common())


def ov_profile(path: Path, runs: int) -> dict[str, float]:
    import openvino as ov

    compiled = ov.Core().compile_model(
        str(path), "CPU", {"INFERENCE_NUM_THREADS": 1, "PERF_COUNT": True, "INFERENCE_PRECISION_HINT": "f32"}
    )
    request = compiled.create_infer_request()
    x = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    per_kind: collections.Counter = collections.Counter()
    for _ in range(runs):
        request.infer({0: x})
        for info in request.profiling_info:
            if info.status == info.Status.EXECUTED:
                per_kind[f"{info.node_type} ({info.exec_type})"] += info.real_time.total_seconds() * 1000 / runs
    return dict(per_kind.most_common())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument(
        "--tag", default="", help="added to each file's key, e.g. 'after' (a before/after pair of the same file name)"
    )
    args = parser.parse_args()
    found = json.loads(RESULT.read_text()) if RESULT.is_file() else {}
    for folder in args.folders:
        for precision in ("fp32", "int8"):
            for suffix, profile in ((".onnx", ort_profile), (".xml", ov_profile)):
                path = folder / f"{folder.name}-{precision}{suffix}"
                if path.is_file():
                    ops = profile(path, args.runs)
                    found[f"{path.name} ({args.tag})" if args.tag else path.name] = {
                        "total_ms": round(sum(ops.values()), 4),
                        "ms": {k: round(v, 4) for k, v in ops.items()},
                    }
                    top = list(ops.items())[:6]
                    print(path.name, f"{sum(ops.values()):.3f} ms:", ", ".join(f"{k} {v:.3f}" for k, v in top))
    RESULT.write_text(json.dumps(found, indent=1) + "\n")


if __name__ == "__main__":
    main()
