"""The README's question over training seeds: `airnet_m-kd` (from scratch, distilled) against EfficientNet-Lite0
(ImageNet, fine-tuned), each recipe trained with several seeds (the committed reference runs <run>, <run>-s1,
<run>-s2, ...); and the lever tried to widen the scratch margin, `airnet_m-kd-ens` (`airnet_m-kd`'s recipe
distilled from the ensemble of the three `airnet_m-kd` seeds, flip-averaged), against both.

Two answers side by side, for each pair in PAIRS:
- over seeds: per model the mean test accuracy, its sample standard deviation and each run; between the two the
  difference of the means with Welch's 95 % interval and p-value (edgecifar.seeds, Welch 1947);
- per file: for each seed k, the INT8 ONNX files of both models' k-th runs (exported now, verified as always)
  compared on the same test images: discordant counts, exact McNemar p-value, paired bootstrap interval
  (edgecifar.compare). Seed 0's files are the committed ones (exported/<run>/).

    uv run --extra edge python benchmarks/seeds.py                # -> benchmarks/results/seeds/
    uv run --extra edge python benchmarks/seeds.py --no-files     # the over-seeds part only (no export)
    uv run --extra edge python benchmarks/seeds.py --work W       # keep the exported seed files in W

Nothing is timed: the training seconds shown are each run's own record (metrics.json), with its thread count; they
are comparable only between runs of one machine and one load.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "reference"
OUT = ROOT / "benchmarks" / "results" / "seeds"
DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
GROUPS = ("airnet_m-kd", "airnet_m-kd-ens", "efficientnet_lite0")  # each group's first run folder (seed 0)
PAIRS = (  # (A, B): A - B over seeds and per file
    ("airnet_m-kd", "efficientnet_lite0"),
    ("airnet_m-kd-ens", "efficientnet_lite0"),
    ("airnet_m-kd-ens", "airnet_m-kd"),
)


def runs_of(first: str) -> list[Path]:
    """The reference run <first> (seed 0) and its <first>-s<k> siblings that hold a finished run, by seed."""
    found = [RUNS / first] + sorted(RUNS.glob(f"{first}-s[0-9]*"), key=lambda p: int(p.name.rsplit("-s", 1)[1]))
    return [p for p in found if (p / "metrics.json").is_file()]


def run_record(run: Path) -> dict:
    config = json.loads((run / "config.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    return {
        "run": str(run.relative_to(ROOT)),
        "seed": config["train"]["seed"],
        "test_acc": metrics["test_acc"],
        "train_seconds": round(metrics.get("train_seconds") or 0.0, 1),
        "threads": metrics.get("threads"),
        "weights_sha256": metrics.get("weights_sha256"),
    }


def int8_onnx(run: Path, work: Path, data: Path) -> Path:
    """The run's INT8 ONNX file: the committed one (exported/<run>/) where there is one, else exported (and
    verified) into `work` by the CLI as a user would, once: a file already there is reused."""
    committed = ROOT / "exported" / run.name / f"{run.name}-int8.onnx"
    if committed.is_file():
        return committed
    out = work / run.name
    if not list(out.rglob("*-int8.onnx")):
        cmd = ["edgecifar", "export", str(run), "--format", "onnx", "--precision", "int8", "--out", str(out)]
        subprocess.run([*cmd, "--data", str(data)], check=True, cwd=ROOT)
    (found,) = out.rglob("*-int8.onnx")
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--no-files", action="store_true", help="skip the per-file paired tests (no export)")
    ap.add_argument("--work", help="keep the exported seed files here (default: a temporary folder)")
    ap.add_argument("--export-only", action="store_true", help="export the seed files into --work, nothing else")
    args = ap.parse_args()

    from edgecifar.compare import compare
    from edgecifar.isa import read_cpu_isa
    from edgecifar.seeds import compare_seeds, summarize, summary_text
    from edgecifar.utils import library_versions, write_json

    groups = {name: runs_of(name) for name in GROUPS}
    if args.export_only:
        for run in (r for runs in groups.values() for r in runs):
            int8_onnx(run, Path(args.work), Path(args.data))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summaries = {}
    for name, runs in groups.items():
        summaries[name] = summarize(runs)
        summaries[name]["runs"] = [run_record(r) for r in runs]  # paths relative to the repository
        write_json(out / f"{name}-seeds.json", summaries[name])
    over_seeds = []
    for a, b in PAIRS:
        found = compare_seeds(summaries[a], summaries[b])
        over_seeds.append({"a": a, "b": b, **found["comparison"].as_dict(), "lines": found["lines"]})

    pairs = []
    if not args.no_files:
        with tempfile.TemporaryDirectory() as tmp:
            for a, b in PAIRS:
                for run_a, run_b in zip(groups[a], groups[b]):  # the k-th seed of each
                    files = [int8_onnx(run, Path(args.work or tmp), Path(args.data)) for run in (run_a, run_b)]
                    found = compare(str(files[0]), str(files[1]), data=args.data)
                    pairs.append(
                        {"a": run_a.name, "b": run_b.name, **found["comparison"].as_dict(), "lines": found["lines"]}
                    )

    cpu = read_cpu_isa().record()
    versions = {"python": platform.python_version(), **library_versions("torch", "onnxruntime", "scipy", "numpy")}
    record = {
        "made": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "uv run --extra edge python benchmarks/seeds.py",
        "data": "CIFAR-10 JPEG copy, 10,000 test images",
        "machine": cpu,
        "versions": versions,
        "groups": summaries,
        "over_seeds": over_seeds,
        "per_file": pairs,
    }
    write_json(out / "seeds.json", record)
    (out / "seeds.md").write_text(markdown(record, summary_text))
    print((out / "seeds.md").read_text())
    return 0


def markdown(rec: dict, summary_text) -> str:
    cpu = rec["machine"]
    lines = [
        "# Scratch against transfer over training seeds, and the ensemble-teacher lever",
        "",
        f"Test set: the {rec['data']}. Runs trained on {cpu['cpu']} ({', '.join(cpu['flags'])}); versions: "
        + ", ".join(f"{k} {v}" for k, v in rec["versions"].items())
        + f". Made {rec['made'][:10]} by `{rec['command']}`.",
        "",
        "## Each model over its seeds",
        "",
        "| model | seeds | mean top-1 % | sd (points) | runs (top-1 %, training minutes at threads) |",
        "|---|---|---|---|---|",
    ]
    for name, s in rec["groups"].items():
        each = "; ".join(
            f"seed {r['seed']}: {100 * r['test_acc']:.2f} ({r['train_seconds'] / 60:.0f} min, {r['threads']} thr)"
            for r in s["runs"]
        )
        sd = f"{100 * s['std']:.2f}" if s.get("std") is not None else "n/a"
        lines.append(f"| {name} | {s['n']} | {100 * s['mean']:.2f} | {sd} | {each} |")
    for pair in rec["over_seeds"]:
        lines += ["", f"## {pair['a']} - {pair['b']} over seeds (Welch)", ""] + [f"- {x}" for x in pair["lines"]]
    if rec["per_file"]:
        lines += [
            "",
            "## Per file: the INT8 ONNX files of the k-th runs on the same test images",
            "",
            "| runs (A vs B) | top-1 % A | top-1 % B | A only right | B only right | exact McNemar p "
            "| A - B, points (95 % paired bootstrap) |",
            "|---|---|---|---|---|---|---|",
        ]
        for p in rec["per_file"]:
            low, high = (100 * x for x in p["interval"])
            lines.append(
                f"| {p['a']} vs {p['b']} | {100 * p['accuracy_a']:.2f} | {100 * p['accuracy_b']:.2f} | {p['a_only']} "
                f"| {p['b_only']} | {p['p_value']:.3g} | "
                f"{100 * p['difference']:+.2f} [{low:+.2f}, {high:+.2f}] |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
