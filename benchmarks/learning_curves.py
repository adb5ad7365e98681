"""Would more epochs reach the from-scratch tiers (issue 13)? The committed reference runs' learning curves.

Reads every runs/reference/*/metrics.json (per-epoch test and train top-1 on the JPEG copy's full test set, as
`train` recorded them) and writes benchmarks/results/learning_curves.{md,png}: per run the last epochs, the gap
between train and test accuracy, and, for the one model trained at two budgets (`airnet_m`, 10 and 18 epochs of
the same seeded recipe), what a longer schedule bought; then each tier's runs at several budgets on a GPU
(benchmarks/results/gpu/tiers.json, from benchmarks/gpu_runs.py): what a doubling of the epochs bought, and how
many doublings the tier would need at that rate. No training here: it reads what was measured.

    uv run python benchmarks/learning_curves.py
"""

from __future__ import annotations

import json
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"
TIERS = {"airnet_s-kd": ("small", 92.0), "edge_tiny": ("tiny", 88.0)}  # issue 13's targets, top-1 %
# the GPU runs of each tier's model at growing budgets, same recipe otherwise (gpu_runs.py's job names)
BUDGETS = {
    ("ceiling", 93.5): ["airnet_l", "airnet_l-16ep", "airnet_l-32ep", "airnet_l-64ep"],
    ("small", 92.0): ["airnet_s-kd", "airnet_s-kd-48ep"],
    ("tiny", 88.0): ["airnet_t-kd", "airnet_t-kd-120ep"],
}


def curves() -> dict[str, dict]:
    found = {}
    for metrics in sorted((ROOT / "runs" / "reference").glob("*/metrics.json")):
        m = json.loads(metrics.read_text())
        epochs = [e for e in m.get("epochs", []) if "test_acc" in e]
        if len(epochs) >= 2:
            found[metrics.parent.name] = {
                "test": [100 * e["test_acc"] for e in epochs],
                "train": [100 * e["train_acc"] for e in epochs],
            }
    return found


def main() -> None:
    runs = curves()
    lines = [
        "# Learning curves of the reference runs (CIFAR-10 JPEG copy, full test set, single view)",
        "",
        "Written by `benchmarks/learning_curves.py` from the committed `runs/reference/*/metrics.json`. Train "
        "top-1 is on augmented batches (with label smoothing or distillation where the recipe has them).",
        "",
        "| run | epochs | test top-1 %, last 4 epochs | final train top-1 % | train - test |",
        "|---|---|---|---|---|",
    ]
    for name, c in runs.items():
        last = ", ".join(f"{a:.1f}" for a in c["test"][-4:])
        lines.append(
            f"| {name} | {len(c['test'])} | {last} | {c['train'][-1]:.1f} | {c['train'][-1] - c['test'][-1]:+.1f} |"
        )
    short, long_ = runs.get("airnet_m-10ep"), runs.get("airnet_m")
    if short and long_:
        gain = long_["test"][-1] - short["test"][-1]
        per_doubling = gain / math.log2(len(long_["test"]) / len(short["test"]))
        lines += [
            "",
            f"Budget: the same seeded `airnet_m` recipe gained {gain:+.2f} points from {len(short['test'])} "
            f"to {len(long_['test'])} epochs, {per_doubling:+.2f} per doubling of the schedule.",
        ]
        for run, (tier, target) in TIERS.items():
            if run in runs:
                missing = target - runs[run]["test"][-1]
                lines.append(
                    f"- {tier} tier ({target:.0f} %): `{run}` is {missing:.2f} points short; at "
                    f"{per_doubling:+.2f} per doubling that is about {2 ** (missing / per_doubling):.0f}x "
                    f"its epochs, if the rate held (it falls as a schedule lengthens)."
                )
    lines += budgets(OUT / "gpu" / "tiers.json")
    (OUT / "learning_curves.md").write_text("\n".join(lines) + "\n")
    _plot(runs, OUT / "learning_curves.png")
    print("\n".join(lines))


def budgets(path: Path) -> list[str]:
    """Each tier's final top-1 at growing budgets (GPU runs) and the doublings its target would need."""
    if not path.is_file():
        return []
    runs = json.loads(path.read_text())["runs"]
    lines = [
        "",
        f"## Budgets, measured ({path.relative_to(ROOT)}: one run per budget, the schedule decaying to zero "
        "in each, so the final figure is the budget's)",
        "",
        "| tier | run | epochs | teacher | test top-1 % |",
        "|---|---|---:|---|---:|",
    ]
    verdicts = []
    for (tier, target), names in BUDGETS.items():
        done = [runs[n] for n in names if runs.get(n, {}).get("state") == "done"]
        for r in done:
            lines.append(
                f"| {tier} ({target:g} %) | {r['name']} | {r['epochs']} | {r['teacher'] or '-'} | "
                f"{100 * r['test_acc']:.2f} |"
            )
        if len(done) >= 2:
            first, last = done[0], done[-1]
            rate = 100 * (last["test_acc"] - first["test_acc"]) / math.log2(last["epochs"] / first["epochs"])
            missing = target - 100 * last["test_acc"]
            need = (
                f"{missing / rate:.0f} more doublings ({2 ** (missing / rate):,.0f}x the epochs)"
                if rate > 0
                else "no number of doublings"
            )
            verdicts.append(
                f"- {tier} tier ({target:g} %): {last['name']} is {missing:.2f} points short after "
                f"{last['epochs']} epochs; {first['epochs']} -> {last['epochs']} epochs gave {rate:+.2f} "
                f"points per doubling, so at that rate it needs {need}."
            )
    return lines + [""] + verdicts


def _plot(runs: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name, c in runs.items():
        ax.plot(range(1, len(c["test"]) + 1), c["test"], label=name)
    for _, (tier, target) in TIERS.items():
        ax.axhline(target, linestyle=":", color="grey")
        ax.text(1, target + 0.2, f"{tier} tier {target:.0f} %", color="grey", fontsize=8)
    ax.set(xlabel="epoch", ylabel="test top-1 %", ylim=(70, 95), title="reference runs, CIFAR-10 JPEG copy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
