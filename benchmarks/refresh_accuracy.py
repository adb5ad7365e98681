"""Give an existing reference bench (benchmarks/results/bench.json) the accuracy statistics of issue 27 without
timing anything again: every row gets top-1's Wilson 95 % interval (from its own counts), and every row whose
file is in this checkout (same sha256) gets its per-image results, from an accuracy pass of that file through
its own runtime on the same test set (edgecifar.bench with the shortest timings, each file in a fresh process;
the PyTorch rows with --baseline).
The latency figures stay the bench's own, from the quiet machine it was measured on, and the header says so.

    uv run --extra edge python benchmarks/refresh_accuracy.py            # benchmarks/results/bench.*
    uv run --extra edge python benchmarks/refresh_accuracy.py --check    # + exit 1 if any count changed

Why not a full re-run: latency measured on a busy CPU is the busy CPU's, not the file's; a full bench re-run
belongs on a quiet machine (benchmarks/run_reference.py). A fresh count that differs from the bench's own is
reported (and with --check fails): the per-image results are kept only where the counts agree.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def present(rows: list[dict]) -> list[Path]:
    """The exported files of the bench's rows that are in this checkout with the sha256 the bench measured."""
    from edgecifar.utils import sha256_file

    found = {}
    for r in rows:
        path = ROOT / str(r.get("path"))
        if r.get("status") == "ok" and r.get("format") != "pytorch" and path.is_file() and path not in found:
            if sha256_file(path) == r.get("sha256"):
                found[path] = True
    return list(found)


def refresh(
    bench_json: Path, data: Path, baseline: bool = False, baseline_only: bool = False, log=print
) -> tuple[dict, list[str]]:
    """The bench result with intervals and per-image results added; and the rows whose fresh count differs.
    baseline_only: count the PyTorch rows (of the runs with a file here) and one file per run, no more."""
    from edgecifar.bench import bench
    from edgecifar.report import load_result
    from edgecifar.stats import wilson_interval

    result = load_result(bench_json).to_json()  # edited here as JSON, written back as rows
    rows = result["rows"]
    files = present(rows)
    if baseline_only:  # one file per run brings its run's PyTorch row
        by_run = {r["source_run"]: ROOT / r["path"] for r in rows if ROOT / str(r.get("path")) in files}
        files, baseline = list(by_run.values()), True
    log(f"{len(files)} of the bench's files are in this checkout: counting them again")
    with tempfile.TemporaryDirectory() as tmp:
        fresh = bench(
            files,
            threads=(max(r["threads"] for r in rows),),
            out_dir=tmp,
            data=str(data),
            runs_dir=ROOT / "runs" / "reference",
            baseline=baseline,
            latency_seconds=0.02,
            latency_trials=1,
            throughput_seconds=0.02,
            log=log,
        )
    counted = {(r.path, r.exec_precision): r.to_json() for r in fresh if r.status == "ok"}
    differ = []
    for r in rows:
        if r.get("status") != "ok" or not isinstance(r.get("correct"), int):
            continue
        r["accuracy_low"], r["accuracy_high"] = wilson_interval(r["correct"], r["images"])
        new = counted.get((r["path"], r["exec_precision"]))
        if new is None:
            continue
        if new["correct"] != r["correct"] or new["images"] != r["images"]:
            differ.append(f"{r['model']} {r['variant']} @{r['threads']}: bench {r['correct']}, now {new['correct']}")
            continue
        r["test_set"], r["per_image"] = new["test_set"], new["per_image"]
    added = sum(1 for r in rows if r.get("per_image"))
    pytorch = sum(1 for r in rows if r.get("per_image") and r.get("format") == "pytorch")
    header = result["header"]
    before = header.get("refreshed") or {}
    differ = list(before.get("counts_differ") or []) + differ
    header["notes"] = [n for n in header.get("notes", []) if "refresh_accuracy.py" not in n]
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    header.setdefault("notes", []).append(
        f"{when}: Wilson 95 % intervals added to every row from its counts, and per-image results to the {added} "
        f"rows whose file is in this checkout ({pytorch} of them PyTorch rows), from a fresh accuracy pass of each "
        f"file through its runtime "
        f"(benchmarks/refresh_accuracy.py; every fresh count equal to this bench's: "
        f"{'yes' if not differ else 'no, ' + str(len(differ)) + ' differ'}); latencies are this bench's own "
        f"({header.get('date', '')[:10]}, one stream of calls per row: no trials, so no latency interval); rows "
        f"of files not in this checkout{'' if pytorch else ' and the PyTorch rows'} have no per-image results"
    )
    header["refreshed"] = {
        "date": when,
        "tool": "benchmarks/refresh_accuracy.py",
        "per_image_rows": added,
        "counts_differ": differ,
    }
    return result, differ


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", type=Path, default=RESULTS / "bench.json")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz")
    parser.add_argument("--check", action="store_true", help="exit 1 when a fresh count differs from the bench's")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="count the PyTorch rows again too (slow: the PyTorch model of each run over the test set)",
    )
    parser.add_argument("--baseline-only", action="store_true", help="the PyTorch rows and one file per run only")
    args = parser.parse_args()
    os.chdir(ROOT)  # the bench's rows name their files relative to the repository
    from edgecifar.records import BenchRow
    from edgecifar.report import write_reports

    result, differ = refresh(args.bench, args.data, args.baseline, args.baseline_only)
    write_reports(result["header"], [BenchRow.from_json(r) for r in result["rows"]], args.bench.parent)
    for line in differ:
        print(f"count differs: {line}")
    print(f"refreshed {args.bench}: {result['header']['refreshed']['per_image_rows']} rows with per-image results")
    return 1 if differ and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
