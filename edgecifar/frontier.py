"""The frontier: scratch against transfer at every budget, from a bench result (`edgecifar frontier BENCH_JSON`).

The report's question, "train from scratch or fine-tune a pretrained model?", has no single answer: it depends on
what the device allows. So each exported file of a bench becomes a point (top-1 with its Wilson 95 % interval,
stats.wilson_interval) against two costs, its batch-1 p50 latency at 1 thread (ms) and its file size (bytes), and
belongs to a family, its model's registry family (scratch or transfer: edgecifar.catalog). Per family and cost the
Pareto front is the set of files that no other file of the family matches or beats on both accuracy and cost
(point estimates). For each budget (a latency or a size), the best file of each family within it is the most
accurate one (the cheaper on equal top-1); the winner is the family whose best file is more accurate, and the
difference is tested where it can be: the exact McNemar test (stats.paired_comparison) where both files carry
per-image results on one test set; otherwise it is one run of each, not tested. A crossover is a cost at which the
winning family changes.

Only native-ISA rows of exported files count (not the PyTorch baseline, which is a run's weights, not a file a
device runs); every point is one file of one training run, so a significant difference says the two files differ,
not that their recipes do (`train --seeds N` measures that).

Outputs (`write_frontier`): frontier.json (points, fronts, budget tables, crossovers), frontier.md and frontier.png
(accuracy against latency and against size, one panel each), written together.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .bench_rows import BenchResult
from .errors import BenchError, UsageError
from .records import BenchRow

LATENCY_BUDGETS_MS = (0.25, 0.5, 1.0, 2.0, 4.0)
SIZE_BUDGETS_BYTES = (128_000, 500_000, 1_000_000, 4_000_000)  # decimal, as bench's size_mb
FAMILIES = ("scratch", "transfer")
AXES = {"latency": ("latency_ms", "batch-1 p50 latency at 1 thread (ms)"), "size": ("size_bytes", "file size")}
FILES = {"json": "frontier.json", "md": "frontier.md", "png": "frontier.png"}
NOT_TESTED = "one run, not tested"
COLORS = {"scratch": "tab:blue", "transfer": "tab:orange", "other": "tab:gray"}


@dataclass(frozen=True)
class Point:
    """One exported file as the frontier sees it. accuracy, low, high: fractions (Wilson 95 % interval);
    latency_ms: batch-1 p50 at 1 thread, None where the bench has no 1-thread row of the file."""

    label: str  # "<run> <variant>", e.g. "airnet_m-kd ONNX INT8"
    model: str
    run: str
    variant: str
    format: str
    family: str  # "scratch" | "transfer" | "other" (a model the registry does not list)
    accuracy: float
    correct: int | None
    images: int | None
    low: float
    high: float
    latency_ms: float | None
    size_bytes: int
    input_size: str
    path: str
    hits: Any = field(default=None, compare=False, repr=False)  # (test-set fingerprint, bool array) or None

    def cost(self, axis: str) -> float | None:
        return self.latency_ms if axis == "latency" else float(self.size_bytes)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("hits")
        d["per_image"] = self.hits is not None
        return d


@dataclass(frozen=True)
class BudgetVerdict:
    """Per budget: each family's best file within it, the winning family and how sure that is.

    winner: a family; "tie" (equal top-1, or the paired test finds no difference at alpha); None when no file fits.
    test: "exact McNemar" with p_value and the paired difference, "one run, not tested", "only <family> fits" or
    "no file fits"."""

    axis: str
    budget: float
    best: dict[str, Point | None]
    winner: str | None
    leader: str | None  # the family with the higher top-1 (None on equal top-1 or when none fits)
    difference: float | None  # leader's top-1 minus the other's, a fraction
    test: str
    p_value: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "axis": self.axis,
            "budget": self.budget,
            "best": {f: (p.label if p else None) for f, p in self.best.items()},
            "winner": self.winner,
            "leader": self.leader,
            "difference": self.difference,
            "test": self.test,
            "p_value": self.p_value,
        }


@dataclass(frozen=True)
class Crossover:
    """Where the leading family changes along a cost axis: below `cost`, `before` leads; from `cost` on, `after`
    does (point estimates), first with the file `point`."""

    axis: str
    cost: float
    before: str
    after: str
    point: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Frontier:
    """Everything the frontier's report shows. fronts[axis][family]: that family's Pareto front, cheapest first."""

    points: list[Point]
    fronts: dict[str, dict[str, list[Point]]]
    budgets: dict[str, list[BudgetVerdict]]
    crossovers: dict[str, list[Crossover]]
    machine: str
    notes: list[str]
    alpha: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "alpha": self.alpha,
            "notes": self.notes,
            "points": [p.as_dict() for p in self.points],
            "fronts": {a: {f: [p.label for p in pts] for f, pts in fam.items()} for a, fam in self.fronts.items()},
            "budgets": {a: [v.as_dict() for v in vs] for a, vs in self.budgets.items()},
            "crossovers": {a: [c.as_dict() for c in cs] for a, cs in self.crossovers.items()},
        }


# ---------------------------------------------------------------- rows -> points


def family_of(model: str, families: Mapping[str, str] | None = None) -> str:
    """The registry family of a model name ("scratch" or "transfer"), "other" for a name it does not list."""
    if families is None:
        from .catalog import read_catalog

        families = {name: info.family for name, info in read_catalog().items()}
    return families.get(model, "other")


def points_from_rows(
    rows: Iterable[BenchRow], families: Mapping[str, str] | None = None, formats: Sequence[str] | None = None
) -> tuple[list[Point], list[str]]:
    """One Point per exported file measured at its native ISA (rows merged by path: accuracy from the row that
    has it, latency from the 1-thread row), and notes on what was left out. formats: keep only these runtimes
    (bench's `format` names)."""
    from . import stats

    by_path: dict[str, list[BenchRow]] = {}
    skipped = {"baseline": 0, "isa": 0, "status": 0}
    for row in rows:
        if row.status != "ok" or not isinstance(row.accuracy, (int, float)):
            skipped["status"] += 1
        elif row.format == "pytorch":
            skipped["baseline"] += 1
        elif (row.isa or {}).get("cap"):
            skipped["isa"] += 1
        elif not formats or row.format in formats:
            by_path.setdefault(str(row.path), []).append(row)
    points, notes = [], []
    for path, group in by_path.items():
        one = [r for r in group if r.threads == 1]
        row = one[0] if one else group[0]
        correct, images = row.correct, row.images
        if isinstance(row.accuracy_low, (int, float)) and isinstance(row.accuracy_high, (int, float)):
            low, high = float(row.accuracy_low), float(row.accuracy_high)
        elif isinstance(correct, int) and isinstance(images, int) and images > 0:
            low, high = stats.wilson_interval(correct, images)
        else:
            low = high = float(row.accuracy)
        run = str(row.source_run or row.model)
        latency = one[0].latency_p50_ms if one else None
        points.append(
            Point(
                label=f"{run} {row.variant}",
                model=row.model,
                run=run,
                variant=row.variant,
                format=str(row.format),
                family=family_of(row.model, families),
                accuracy=float(row.accuracy),
                correct=correct if isinstance(correct, int) else None,
                images=images if isinstance(images, int) else None,
                low=low,
                high=high,
                latency_ms=float(latency) if isinstance(latency, (int, float)) else None,
                size_bytes=int(row.size_bytes or 0),
                input_size=row.input_size or "",
                path=path,
                hits=stats.row_hits(row),
            )
        )
    if skipped["baseline"]:
        notes.append(f"{skipped['baseline']} PyTorch baseline rows left out (a run's weights, not an exported file)")
    if skipped["isa"]:
        notes.append(f"{skipped['isa']} rows at a capped INT8 path (--isa) left out: native ISA only")
    if skipped["status"]:
        notes.append(f"{skipped['status']} rows without a measured accuracy left out")
    if untimed := [p.label for p in points if p.latency_ms is None]:
        notes.append(f"{len(untimed)} files have no 1-thread latency and are left off the latency axis")
    if other := sorted({p.model for p in points if p.family == "other"}):
        notes.append(
            f"models the registry does not list (family 'other', in neither family's front): {', '.join(other)}"
        )
    return points, notes


# ---------------------------------------------------------------- fronts, budgets, crossovers


def pareto_front(points: Sequence[Point], axis: str) -> list[Point]:
    """The points no other point matches or beats on both accuracy and cost (one of them strictly), cheapest
    first; of identical (cost, accuracy) points the first is kept."""
    costed = sorted((p for p in points if p.cost(axis) is not None), key=lambda p: (p.cost(axis), -p.accuracy))
    front: list[Point] = []
    for p in costed:
        if not front or p.accuracy > front[-1].accuracy:
            front.append(p)
    return front


def best_within(points: Sequence[Point], axis: str, budget: float) -> Point | None:
    """The most accurate point whose cost is within `budget` (the cheaper on equal top-1), or None."""
    fits = [p for p in points if p.cost(axis) is not None and p.cost(axis) <= budget]
    return min(fits, key=lambda p: (-p.accuracy, p.cost(axis)), default=None)


def budget_verdict(
    points: Sequence[Point], axis: str, budget: float, alpha: float = 0.05, families: Sequence[str] = FAMILIES
) -> BudgetVerdict:
    """Which family's best file within `budget` wins (see BudgetVerdict), tested with the exact McNemar test
    where both best files carry per-image results on one test set."""
    from . import stats

    best = {f: best_within([p for p in points if p.family == f], axis, budget) for f in families}
    present = [f for f in families if best[f] is not None]
    if not present:
        return BudgetVerdict(axis, budget, best, None, None, None, "no file fits")
    if len(present) == 1:
        return BudgetVerdict(axis, budget, best, present[0], present[0], None, f"only {present[0]} fits")
    a, b = (best[f] for f in families[:2])
    diff = a.accuracy - b.accuracy
    leader = families[0] if diff > 0 else families[1] if diff < 0 else None
    if a.hits is not None and b.hits is not None and a.hits[0] == b.hits[0] and len(a.hits[1]) == len(b.hits[1]):
        paired = stats.paired_comparison(a.hits[1], b.hits[1], resamples=1000)
        winner = leader if leader and paired.p_value < alpha else "tie"
        return BudgetVerdict(
            axis, budget, best, winner, leader, abs(paired.difference), "exact McNemar", paired.p_value
        )
    return BudgetVerdict(axis, budget, best, leader or "tie", leader, abs(diff), NOT_TESTED)


def crossovers(points: Sequence[Point], axis: str, families: Sequence[str] = FAMILIES) -> list[Crossover]:
    """Every cost at which the leading family (the more accurate best file within that cost, point estimates)
    changes, scanning the costs of the files themselves; only where both families have a file within it."""
    found: list[Crossover] = []
    lead = None
    for p in sorted((p for p in points if p.cost(axis) is not None), key=lambda p: p.cost(axis)):
        best = [best_within([q for q in points if q.family == f], axis, p.cost(axis)) for f in families[:2]]
        if None in best or best[0].accuracy == best[1].accuracy:
            continue
        now = families[0] if best[0].accuracy > best[1].accuracy else families[1]
        if lead is not None and now != lead:
            found.append(Crossover(axis, p.cost(axis), lead, now, p.label))
        lead = now
    return found


def build_frontier(
    results: BenchResult | Sequence[BenchResult],
    alpha: float = 0.05,
    formats: Sequence[str] | None = None,
    latency_budgets: Sequence[float] = LATENCY_BUDGETS_MS,
    size_budgets: Sequence[float] = SIZE_BUDGETS_BYTES,
    families: Mapping[str, str] | None = None,
) -> Frontier:
    """The frontier of one bench result (bench_rows.BenchResult) or several (e.g. new runs benched on their own
    beside the reference bench): a file in more than one counts as measured by the last. Results from different
    machines are combined with a note, since their latencies do not compare. Raises BenchError when no row makes
    a point."""
    results = [results] if isinstance(results, BenchResult) else list(results)
    rows: dict[str, BenchRow] = {}
    for i, result in enumerate(results):
        for n, row in enumerate(result):
            rows[f"{row.path or f'{i}:{n}'}|{row.threads}|{(row.isa or {}).get('cap')}"] = row
    points, notes = points_from_rows(list(rows.values()), families, formats)
    if not points:
        raise BenchError(
            "no exported file with a measured accuracy in this bench result"
            + (f" for {', '.join(formats)}" if formats else "")
        )
    machines = list(dict.fromkeys(_machine_text(r.header.get("machine") or {}) for r in results))
    if len(machines) > 1:
        notes.append(f"rows from {len(machines)} machines ({'; '.join(machines)}): their latencies do not compare")
    axes = {"latency": list(latency_budgets), "size": list(size_budgets)}
    fronts = {a: {f: pareto_front([p for p in points if p.family == f], a) for f in FAMILIES} for a in axes}
    budgets = {a: [budget_verdict(points, a, b, alpha) for b in sorted(bs)] for a, bs in axes.items()}
    cross = {a: crossovers(points, a) for a in axes}
    paired = sum(p.hits is not None for p in points)
    if not paired:
        notes.append(
            "no per-image results in this bench: differences are one run each, not tested "
            "(a bench by this version keeps them)"
        )
    elif paired < len(points):
        notes.append(
            f"{paired} of {len(points)} files carry per-image results: a budget whose best files lack "
            f"them is one run each, not tested"
        )
    return Frontier(points, fronts, budgets, cross, " | ".join(machines), notes, alpha)


def _machine_text(machine: Mapping[str, Any]) -> str:
    isa = ", ".join(machine.get("isa") or [])
    return f"{machine.get('cpu', 'unknown CPU')}, {machine.get('cores', '?')} cores" + (f" ({isa})" if isa else "")


# ---------------------------------------------------------------- reports


def cost_text(axis: str, value: float, budget: bool = True) -> str:
    """A budget as given ("0.25 ms", "128 KB", "0.5 MB"), or a file's cost rounded (budget=False)."""
    if axis == "latency":
        return f"{value:g} ms" if budget else f"{value:.3f} ms"
    if value >= 500_000:
        return f"{value / 1e6:g} MB" if budget else f"{value / 1e6:.2f} MB"
    return f"{value / 1e3:g} KB" if budget else f"{value / 1e3:.1f} KB"


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def verdict_text(v: BudgetVerdict) -> str:
    """The budget table's last column: who wins, by how much, how sure."""
    if v.winner is None:
        return "no file fits"
    if v.test.startswith("only"):
        return f"{v.winner} ({v.test})"
    by = f"{100 * v.difference:.2f} pt" if v.difference is not None else ""
    if v.test == NOT_TESTED:
        return f"tie (equal top-1; {NOT_TESTED})" if v.leader is None else f"{v.leader} by {by} ({NOT_TESTED})"
    p = f"p = {v.p_value:.2g}" if v.p_value is not None and v.p_value < 0.01 else f"p = {v.p_value:.2f}"
    if v.winner == "tie":
        return f"tie ({v.leader or 'neither'} ahead by {by}, exact McNemar {p})"
    return f"{v.winner} by {by} (exact McNemar {p})"


def markdown(fr: Frontier, source: str, image: str = FILES["png"], command: str = "") -> str:
    lines = [
        "# The frontier: scratch against transfer",
        "",
        (
            f"Bench result(s): `{source}`; machine: {fr.machine}; latency: batch-1 p50 at 1 thread, each file in its "
            "own runtime (the runtime is named with each file). Top-1 with its Wilson 95 % interval; each point "
            "is one exported file of one training run."
        ),
        "",
    ]
    if command:
        lines += ["Rebuild:", "", "```", command, "```", ""]
    lines += [f"![frontier]({image})", ""]
    for axis, (_, title) in AXES.items():
        lines += [
            f"## Budgets: {title}",
            "",
            "| budget | best scratch file | top-1 % | best transfer file | top-1 % | verdict |",
            "|---|---|---|---|---|---|",
        ]
        for v in fr.budgets[axis]:
            cells = []
            for f in FAMILIES:
                p = v.best.get(f)
                cells += [
                    f"{p.label} ({cost_text(axis, p.cost(axis), False)})" if p else "none fits",
                    f"{_pct(p.accuracy)} ({_pct(p.low)}-{_pct(p.high)})" if p else "",
                ]
            lines.append(f"| {cost_text(axis, v.budget)} | " + " | ".join(cells) + f" | {verdict_text(v)} |")
        cross = fr.crossovers[axis]
        said = [
            f"{c.before} leads below {cost_text(axis, c.cost, False)}, {c.after} from there ({c.point})" for c in cross
        ]
        lines += [
            "",
            "Crossover: " + ("; ".join(said) if said else "none (the same family leads wherever both have a file)"),
            "",
        ]
    lines += ["## Pareto fronts", ""]
    for axis, (_, title) in AXES.items():
        for f in FAMILIES:
            front = fr.fronts[axis][f]
            lines.append(
                f"- {f}, {title}: "
                + (
                    ", ".join(
                        f"{p.label} ({cost_text(axis, p.cost(axis), False)}, {_pct(p.accuracy)} %)" for p in front
                    )
                    or "none"
                )
            )
    lines += [
        "",
        "## Files",
        "",
        "| file | family | input | top-1 % (95 % interval) | p50 ms, 1 thread | size |",
        "|---|---|---|---|---|---|",
    ]
    for p in sorted(fr.points, key=lambda p: (p.family, -p.accuracy)):
        lat = f"{p.latency_ms:.3f}" if p.latency_ms is not None else "-"
        lines.append(
            f"| {p.label} | {p.family} | {p.input_size} | {_pct(p.accuracy)} ({_pct(p.low)}-{_pct(p.high)}) "
            f"| {lat} | {p.size_bytes:,} |"
        )
    if fr.notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in fr.notes]
    return "\n".join(lines) + "\n"


def plot(fr: Frontier, path: Path | str, title: str = "") -> None:
    """Two panels (accuracy against 1-thread latency, against file size; log cost axes): each file with its
    interval, each family's front as a step line with its runs named, the budgets as dotted lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 6), constrained_layout=True)
    for ax, (axis, (_, xlabel)) in zip(axes, AXES.items()):
        scale = 1.0 if axis == "latency" else 1e-6
        for fam in (*FAMILIES, "other"):
            pts = [p for p in fr.points if p.family == fam and p.cost(axis) is not None]
            if not pts:
                continue
            x = np.array([p.cost(axis) * scale for p in pts])
            y = np.array([100 * p.accuracy for p in pts])
            err = np.array([[100 * (p.accuracy - p.low) for p in pts], [100 * (p.high - p.accuracy) for p in pts]])
            ax.errorbar(
                x,
                y,
                yerr=err,
                fmt="o",
                ms=4,
                alpha=0.55,
                color=COLORS[fam],
                label=f"{fam} files",
                elinewidth=1,
                capsize=2,
            )
            front = fr.fronts[axis].get(fam) or []
            if front:
                ax.step(
                    [p.cost(axis) * scale for p in front],
                    [100 * p.accuracy for p in front],
                    where="post",
                    color=COLORS[fam],
                    lw=1.8,
                    label=f"{fam} front",
                )
                named = {p.run: p for p in front}  # each run once, at its last (most accurate) front point
                for p in named.values():
                    ax.annotate(
                        p.run,
                        (p.cost(axis) * scale, 100 * p.accuracy),
                        fontsize=7,
                        rotation=15,
                        xytext=(3, 4),
                        textcoords="offset points",
                        color=COLORS[fam],
                    )
        for v in fr.budgets[axis]:
            ax.axvline(v.budget * scale, ls=":", lw=0.8, color="0.6")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel + ("" if axis == "latency" else " (MB)"))
        ax.set_ylabel("top-1 % (Wilson 95 % interval)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(title or f"scratch against transfer: {fr.machine}", fontsize=10)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def write_frontier(fr: Frontier, out_dir: Path | str, source: str, command: str = "") -> dict[str, Path]:
    """frontier.json, frontier.md and frontier.png into `out_dir`, all three or none; returns their paths."""
    from .utils import atomic_path

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create {out_dir}: {e.strerror or e}") from None
    final = {kind: out_dir / name for kind, name in FILES.items()}
    with contextlib.ExitStack() as stack:
        tmp = {kind: stack.enter_context(atomic_path(path)) for kind, path in final.items()}
        tmp["json"].write_text(json.dumps({"source": source, "command": command, **fr.as_dict()}, indent=1) + "\n")
        tmp["md"].write_text(markdown(fr, source, command=command))
        plot(fr, tmp["png"])
        for path in tmp.values():
            path.chmod(0o644)
    return final
