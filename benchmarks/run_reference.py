"""The published comparison: scratch_cnn, efficientnet_lite0 (transfer), the scratch airnet_m-kd (and its QAT run),
airnet_s-kd, edge_tiny, edge_small, the ceiling airnet_l and the tiny airnet_t-kd x {PyTorch, every exported
format} x {FP32, FP16, INT8} at 1 and 2 threads, accuracy on the full CIFAR-10 test set (the JPEG copy), into
benchmarks/results/bench.{json,csv,md,png}; then the results index, benchmarks/results/README.md, is rewritten
(benchmarks/results_index.py), whose "reference comparison" entry carries the headline figures.

    uv run --extra edge python benchmarks/run_reference.py           # bench, check the 24-minute budget, index
    uv run --extra edge python benchmarks/run_reference.py --verify  # + each file re-evaluated by its runtime alone
    uv run --extra edge python benchmarks/run_reference.py --repeat  # + a second bench: p50 within 10 %, same top-1

Needs the exports in exported/manifest.json (committed) and, for the PyTorch rows, the reference runs in
runs/reference/ (committed: weights, config, metrics); docs/reference-runs.md gives each one's command.
Run it on a quiet machine: the latency figures are only as steady as the CPU is idle.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
MODELS = (
    "scratch_cnn",
    "efficientnet_lite0",
    "airnet_m-kd",
    "airnet_m-kd-qat",
    "airnet_s-kd",
    "edge_tiny",
    "edge_small",
    "airnet_l",
    "airnet_t-kd",
)  # --models
# the whole reference bench must take under 24 minutes on a 2-core CPU: nine runs, each in all four runtimes but
# airnet_l (ONNX Runtime and OpenVINO: the ceiling model, not a shipping candidate)
BUDGET_S = 1440
P50_TOLERANCE, ACCURACY_TOLERANCE = 0.10, 0.0005  # repeat runs; independent evaluation (0.05 points)


def reference_artifacts(manifest: Path, models: tuple[str, ...] = MODELS) -> list[Path]:
    """Every format x precision of each reference run, or exit saying what is missing and how to make it."""
    from edgecifar.backends import BACKENDS
    from edgecifar.backends.base import in_all
    from edgecifar.manifest import read_manifest

    entries = read_manifest(manifest).artifacts if manifest.is_file() else []
    found = {(e.source_run, e.format, e.precision): manifest.parent / e.path for e in entries}
    # the formats `--format all` makes: TFLite Micro's reference kernels (0.1-0.3 s an image) have their own bench,
    # benchmarks/results/tflm
    wanted = [(m, f, p) for m in models for f, b in BACKENDS.items() if in_all(b) for p in b.precisions]
    missing = [" ".join(k) for k in wanted if k not in found]
    if len(missing) == len(wanted):
        sys.exit(
            f"no reference exports in {manifest}: make them with: uv run edgecifar pipeline --data "
            f"{os.path.relpath(DATA, ROOT)}"
        )
    if missing:  # the edge formats (LiteRT, ExecuTorch) are exported for some runs only: said, not fatal
        print(
            f"not exported, not benched: {', '.join(missing)} (`uv run --extra edge edgecifar export RUN "
            f"--format FORMAT` makes them)"
        )
    wanted = [k for k in wanted if k in found]
    present = []
    for path in (found[k] for k in wanted):
        if path.is_file():
            present.append(path)
        else:  # in the manifest, not committed (size budget)
            print(f"not benched: {path.relative_to(ROOT)} is not here (`edgecifar export` of its run makes it)")
    return present


def run_bench(artifacts: list[Path], out: Path, args: argparse.Namespace):
    from edgecifar.bench import bench

    return bench(
        artifacts,
        device="cpu",
        threads=(1, 2),
        batch_size=args.batch_size,
        out_dir=out,
        data=str(args.data),
        runs_dir=ROOT / "runs" / "reference",
        bf16=args.bf16,
        show_progress=sys.stderr.isatty(),
        log=print,
    )


def verify(rows: list[dict], data: Path) -> list[dict]:
    """Each file evaluated again here, with its runtime alone (no bench code), against the bench's figure."""
    import numpy as np

    from edgecifar.data import load_data
    from edgecifar.runtime import load_artifact

    splits = load_data(str(data))
    checks, seen = [], set()
    for r in (r for r in rows if r["status"] == "ok" and (r["path"], r["exec_precision"]) not in seen):
        seen.add((r["path"], r["exec_precision"]))
        if r["format"] == "pytorch":
            correct = _torch_correct(ROOT / r["path"], splits)
        else:
            hint = r["exec_precision"] if r["exec_precision"] not in ("f32", "model") else None
            artifact = load_artifact(ROOT / r["path"], precision=hint)
            preds = np.concatenate(
                [artifact.run(splits.test_x[i : i + 500]).argmax(1) for i in range(0, len(splits.test_y), 500)]
            )
            correct = int((preds == splits.test_y).sum())
        accuracy = correct / len(splits.test_y)
        checks.append(
            {
                "model": r["model"],
                "variant": r["variant"],
                "bench_accuracy": r["accuracy"],
                "independent_accuracy": accuracy,
                "ok": abs(accuracy - r["accuracy"]) <= ACCURACY_TOLERANCE,
            }
        )
        print(f"verify {r['model']} {r['variant']}: bench {r['accuracy']:.4%}, independent {accuracy:.4%}")
    return checks


def _torch_correct(weights: Path, splits) -> int:
    import torch

    from edgecifar.runs import load_run
    from edgecifar.train import predict_logits

    logits = predict_logits(load_run(weights.parent), torch.from_numpy(splits.test_x))
    return int((logits.argmax(1).numpy() == splits.test_y).sum())


def compare(first: list[dict], second: list[dict]) -> list[dict]:
    """Two benches of the same files: p50 latency within 10 %, accuracy identical."""
    key = lambda r: (r["model"], r["variant"], r["threads"])  # noqa: E731
    again = {key(r): r for r in second if r["status"] == "ok"}
    found = []
    for r in (r for r in first if r["status"] == "ok" and key(r) in again):
        other = again[key(r)]
        change = other["latency_p50_ms"] / r["latency_p50_ms"] - 1
        found.append(
            {
                "model": r["model"],
                "variant": r["variant"],
                "threads": r["threads"],
                "p50_ms": [r["latency_p50_ms"], other["latency_p50_ms"]],
                "p50_change": change,
                "same_accuracy": r["correct"] == other["correct"],
                "ok": abs(change) <= P50_TOLERANCE and r["correct"] == other["correct"],
            }
        )
    return found


def update_index() -> int:
    """Rewrite benchmarks/results/README.md (benchmarks/results_index.py): 0, or 1 when a result lacks its entry.
    The entry's figures are written by hand from bench.md: say so when they may be stale."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import results_index

    status = results_index.main([])
    print(
        "the reference entry's headline figures in benchmarks/results_index.py are the bench's own: check them "
        "against benchmarks/results/bench.md, then run benchmarks/results_index.py again if they changed"
    )
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="CIFAR-10 test set (default: the shared JPEG copy)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--bf16", action="store_true", help="add OpenVINO FP32 executed in bf16 rows")
    parser.add_argument("--verify", action="store_true", help="re-evaluate every file with its runtime alone")
    parser.add_argument("--repeat", action="store_true", help="bench twice and compare")
    parser.add_argument("--models", default=",".join(MODELS), help="source runs to include, comma-separated")
    parser.add_argument("--no-index", action="store_true", help="leave benchmarks/results/README.md as it is")
    args = parser.parse_args()
    os.chdir(ROOT)  # runs/ and exported/ are relative to the repository
    from edgecifar.errors import EdgecifarError

    try:
        return reference(args)
    except EdgecifarError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code


def reference(args: argparse.Namespace) -> int:
    from edgecifar.utils import write_json

    artifacts = reference_artifacts(ROOT / "exported" / "manifest.json", tuple(args.models.split(",")))
    rows = run_bench(artifacts, RESULTS, args)
    seconds = rows.header["bench_seconds"]
    print(f"reference bench: {seconds:.0f} s ({'within' if seconds < BUDGET_S else 'OVER'} the {BUDGET_S} s budget)")
    status = 0 if seconds < BUDGET_S else 1
    if args.verify:
        checks = verify([r.to_json() for r in rows], args.data)
        write_json(RESULTS / "verify.json", {"tolerance": ACCURACY_TOLERANCE, "checks": checks})
        status |= 0 if all(c["ok"] for c in checks) else 1
        print(f"independent evaluation: {sum(c['ok'] for c in checks)}/{len(checks)} within 0.05 points")
    if args.repeat:
        with tempfile.TemporaryDirectory() as tmp:
            second = run_bench(artifacts, Path(tmp), args)
        pairs = compare([r.to_json() for r in rows], [r.to_json() for r in second])
        write_json(RESULTS / "repeatability.json", {"p50_tolerance": P50_TOLERANCE, "pairs": pairs})
        status |= 0 if all(p["ok"] for p in pairs) else 1
        worst = max(pairs, key=lambda p: abs(p["p50_change"]))
        print(
            f"repeat: {sum(p['ok'] for p in pairs)}/{len(pairs)} rows within 10 % p50 and identical accuracy; "
            f"largest p50 change {worst['p50_change']:+.1%} "
            f"({worst['model']} {worst['variant']} @{worst['threads']})"
        )
    if not args.no_index:
        status |= update_index()
    print(json.dumps({k: str(v) for k, v in rows.files.items()}))
    return status


if __name__ == "__main__":
    sys.exit(main())
