"""Latency ratios of two source runs' files, runtime by runtime, from one bench result.

    uv run python benchmarks/latency_ratios.py benchmarks/results/relu/airnet_m/bench.json airnet_m_relu-kd airnet_m-kd

For each variant (runtime and precision) and thread setting both runs have a measured row in, in the bench's
order: A's p50 over B's, the median of each file's latency trials, with a percentile bootstrap 95 % interval
(`edgecifar.stats.latency_ratio`). Only rows of one bench run compare: a latency is comparable only inside one run
on one machine.
"""

from __future__ import annotations

import sys

from edgecifar.bench_rows import load_result
from edgecifar.stats import latency_ratio, spread, trials_of


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        sys.exit("usage: latency_ratios.py BENCH_JSON RUN_A RUN_B")
    path, run_a, run_b = argv
    # a file's rows at each thread setting are separate measurements: pair them setting by setting
    rows = {(r.source_run, r.variant, r.threads): r for r in load_result(path) if r.status == "ok"}
    for variant, threads in dict.fromkeys((v, t) for run, v, t in rows if run == run_a):
        a, b = rows.get((run_a, variant, threads)), rows.get((run_b, variant, threads))
        if a is None or b is None:
            continue
        ta, tb = trials_of(a), trials_of(b)
        if not ta or not tb:
            continue
        ratio, low, high = latency_ratio(ta, tb)
        print(
            f"{variant} @{threads} thr: {run_a} {spread(ta)[0]:.3f} ms / {run_b} {spread(tb)[0]:.3f} ms = {ratio:.2f}x "
            f"[{low:.2f}, {high:.2f}] ({len(ta)}/{len(tb)} trials)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
