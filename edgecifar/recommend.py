"""`edgecifar recommend`: from a bench result and constraints, the best artifact that meets them and why, or
which constraint cannot be met and by how much.

Decisions respect ties (edgecifar.stats, docs/statistics.md): among the rows that meet every constraint, find
the most accurate; the rows not significantly less accurate than it (exact McNemar on the same test images,
p >= alpha) are tied with it, and the smallest, then the fastest, of that tied set is shipped, saying so. A clear
winner is shipped as the winner. Where a bench has no per-image results (written before they were kept), the
tie is judged by overlapping Wilson intervals, and where it has no counts either, only equal top-1 is a tie;
the answer says which. "Faster" is said only where the ratio of latencies over trials has an interval that
excludes 1. The Pareto front is marked the same way.

Rows measured at more threads than the bench machine's cores are left out unless `threads` asks for them
(oversubscribed pools win a median and lose the tail badly); malformed rows are left out and listed. The
answer names the machine the rows were measured on, with a warning when it is not this one.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import stats
from .errors import BenchError, UsageError
from .bench_rows import BenchResult, load_result, model_shown, threads_shown
from .records import BenchRow

PERCENTILES = ("p50", "p90", "p99")


@dataclass(frozen=True)
class Constraint:
    name: str  # the CLI option
    limit: float
    value: Callable[[BenchRow], float]  # the row's figure, in the limit's unit
    upper: bool  # True: value <= limit; False: value >= limit
    unit: str

    def gap(self, row: BenchRow) -> float:
        """How far the row is from meeting it (<= 0: met)."""
        v = self.value(row)
        return v - self.limit if self.upper else self.limit - v

    def text(self) -> str:
        unit = f" ({self.unit.split()[1].strip('()')})" if " " in self.unit else ""
        return f"{self.name.replace('_', '-')} {self.limit:g}{unit}"


def constraints_for(
    max_latency_ms: float | None, max_size_mb: float | None, min_accuracy: float | None, percentile: str = "p50"
) -> list[Constraint]:
    if percentile not in PERCENTILES:
        raise UsageError(f"unknown latency percentile '{percentile}': use one of {', '.join(PERCENTILES)}")
    found = []
    if max_latency_ms is not None:
        found.append(
            Constraint("max_latency_ms", max_latency_ms, lambda r: r.latency(percentile), True, f"ms {percentile}")
        )
    if max_size_mb is not None:
        found.append(Constraint("max_size_mb", max_size_mb, lambda r: r.size_mb, True, "MB"))
    if min_accuracy is not None:
        if not 0 <= min_accuracy <= 100:
            raise UsageError(f"--min-accuracy is a top-1 percentage (0-100), got {min_accuracy}")
        if 0 < min_accuracy <= 1:  # 0.9 is far likelier to mean 90 % than 0.9 %: refuse to guess
            raise UsageError(
                f"--min-accuracy is top-1 in percent, so {min_accuracy:g} would mean {min_accuracy:g} %: "
                f"for {min_accuracy:.0%} pass --min-accuracy {100 * min_accuracy:g}"
            )
        found.append(Constraint("min_accuracy", min_accuracy, lambda r: 100 * r.accuracy, False, "points"))
    return found


def recommend(
    result: BenchResult | Path | str,
    max_latency_ms: float | None = None,
    max_size_mb: float | None = None,
    min_accuracy: float | None = None,
    threads: int | None = None,
    percentile: str = "p50",
    alpha: float = stats.ALPHA,
) -> dict[str, Any]:
    """Pick the row to ship under the constraints (min_accuracy in percent, e.g. 85.5): the smallest, then the
    fastest, of the rows tied on accuracy with the most accurate one (module docstring); alpha: the
    significance level below which a row counts as less accurate (0 < alpha < 1).

    Returns {"met", "choice", "best" (the most accurate eligible row), "tied" ([Tie] of the rows tied with it,
    itself first), "method" (how ties were judged), "reason", "runner_up", "eligible", "considered",
    "shortfalls", "percentile", "alpha", "ignored", "machine" (where the rows were measured), "machine_warning"
    (a line, or None when that is this machine), "load_warning" (a line, or None when the bench's CPU was not
    busy)}; `choice` is None and `shortfalls` says by how much each
    constraint is missed when nothing meets them all; `ignored` has a line per row left out (malformed, or more
    threads than cores). Raises UsageError for bad constraints, BenchError when no usable row is left.
    """
    cons = constraints_for(max_latency_ms, max_size_mb, min_accuracy, percentile)
    if not 0 < alpha < 1:
        raise UsageError(f"--alpha is a significance level between 0 and 1 (e.g. 0.05), got {alpha:g}")
    key = f"latency_{percentile}_ms"
    data = result if isinstance(result, BenchResult) else load_result(result)
    rows, ignored = _measured(data, threads, key)
    eligible = sorted(
        (r for r in rows if all(c.gap(r) <= 0 for c in cons)), key=lambda r: (-r.accuracy, getattr(r, key), r.size_mb)
    )
    base = {
        "percentile": percentile,
        "considered": len(rows),
        "eligible": eligible,
        "alpha": alpha,
        "constraints": {c.name: c.limit for c in cons},
        "threads": threads,
        "ignored": ignored,
        **machine_lines(data.header),
    }
    if not eligible:
        shortfalls = [_shortfall(c, cons, rows, key) for c in cons]
        missed = [s for s in shortfalls if s["gap"] > 0]
        reason = "no measured artifact meets " + _joined(cons) + ": " + "; ".join(s["text"] for s in missed)
        return {
            **base,
            "met": False,
            "choice": None,
            "best": None,
            "tied": [],
            "method": None,
            "runner_up": None,
            "reason": reason,
            "shortfalls": missed,
        }
    best = eligible[0]
    judged = [accuracy_tie(r, best, alpha) for r in eligible]
    tied = [t for t in judged if t.tied]
    choice = min(tied, key=lambda t: (t.row.size_mb, getattr(t.row, key))).row
    runner_up = next((r for r in eligible if r is not choice), None)
    method = max((t.method for t in judged), key=METHODS.index)  # the weakest judgement made
    return {
        **base,
        "met": True,
        "choice": choice,
        "best": best,
        "tied": tied,
        "method": method,
        "runner_up": runner_up,
        "shortfalls": [],
        "reason": _why(choice, best, tied, judged, eligible, rows, cons, key, alpha),
    }


@dataclass(frozen=True)
class Tie:
    """How a row's top-1 compares with a reference row's (the most accurate one)."""

    row: BenchRow
    tied: bool  # not significantly less accurate than the reference
    difference: float  # row - reference, a fraction
    p_value: float | None  # exact McNemar, where the two have per-image results on one test set
    method: str  # "exact McNemar" | "Wilson intervals" | "top-1 only"

    def text(self, seen_from_reference: bool = False) -> str:
        """ "p = 0.62, -0.05 pt" (paired; the difference row - reference, or the reverse), or what the judgement
        rests on."""
        diff = -self.difference if seen_from_reference else self.difference
        pts = f"{100 * diff + 0.0:+.2f} pt" if round(100 * diff, 2) else "+0.00 pt"
        if self.method == PAIRED:
            return f"p = {_p(self.p_value)}, {pts}"
        if self.method == WILSON:
            return f"95 % Wilson intervals {'overlap' if self.tied else 'apart'}, {pts}; no per-image results"
        return f"{pts}; top-1 only: no per-image results or counts to test it"


PAIRED, WILSON, TOP1 = "exact McNemar", "Wilson intervals", "top-1 only"
METHODS = (PAIRED, WILSON, TOP1)  # strongest first


def accuracy_tie(row: BenchRow, reference: BenchRow, alpha: float = stats.ALPHA) -> Tie:
    """Whether `row` is tied on accuracy with `reference` (not significantly less accurate, at `alpha`): the exact
    McNemar test where both carry per-image results on one test set; else overlapping Wilson 95 % intervals
    (not a paired test) where both carry counts; else only an equal top-1 is a tie."""
    diff = row.accuracy - reference.accuracy
    if row is reference:
        return Tie(row, True, 0.0, 1.0, PAIRED if stats.row_hits(row) else _counted(row))
    a, b = _hits(row), _hits(reference)
    if a is not None and b is not None and a[0] == b[0]:
        better, worse = int(np.sum(a[1] & ~b[1])), int(np.sum(~a[1] & b[1]))
        p = stats.mcnemar_exact(better, worse)
        return Tie(row, diff >= 0 or p >= alpha, (better - worse) / len(a[1]), p, PAIRED)
    if _counted(row) == WILSON and _counted(reference) == WILSON:
        high, ref_low = _wilson(row.correct, row.images)[1], _wilson(reference.correct, reference.images)[0]
        return Tie(row, diff >= 0 or high >= ref_low, diff, None, WILSON)
    return Tie(row, diff >= 0, diff, None, TOP1)


def more_accurate(a: BenchRow, b: BenchRow, alpha: float = stats.ALPHA) -> bool:
    """Whether `a` is significantly more accurate than `b` (accuracy_tie's rules, seen from `b`)."""
    return a.accuracy > b.accuracy and not accuracy_tie(b, a, alpha).tied


def faster(a: BenchRow, b: BenchRow, percentile: str = "p50") -> bool:
    """Whether `a`'s latency is below `b`'s beyond the noise: the bootstrap interval of the ratio of their trial
    medians (stats.latency_ratio) lies below 1; with one measurement each (an older bench), a lower figure."""
    ta, tb = stats.trials_of(a, percentile), stats.trials_of(b, percentile)
    if not ta or not tb:
        return False
    if len(ta) == 1 and len(tb) == 1:
        return ta[0] < tb[0]
    if max(ta) < min(tb):  # every trial faster: the interval of the ratio of medians excludes 1 too
        return True
    if np.median(ta) >= np.median(tb):
        return False
    return stats.latency_ratio(ta, tb, resamples=2000)[2] < 1


_HITS: dict[int, tuple[BenchRow, tuple[str, np.ndarray] | None]] = {}


def _hits(row: BenchRow) -> tuple[str, np.ndarray] | None:
    """stats.row_hits, unpacked once per row object (the front compares every pair)."""
    cached = _HITS.get(id(row))
    if cached is None or cached[0] is not row:
        if len(_HITS) > 4096:
            _HITS.clear()
        cached = _HITS[id(row)] = (row, stats.row_hits(row))
    return cached[1]


@functools.lru_cache(maxsize=4096)
def _wilson(correct: int, images: int) -> tuple[float, float]:
    return stats.wilson_interval(correct, images)


def _counted(row: BenchRow) -> str:
    ok = isinstance(row.correct, int) and isinstance(row.images, int) and row.images > 0
    return WILSON if ok and 0 <= row.correct <= row.images else TOP1


def _p(p: float | None) -> str:
    return "n/a" if p is None else (f"{p:.2g}" if p < 0.001 else f"{p:.2f}" if p < 0.995 else "1")


def machine_lines(header: dict[str, Any]) -> dict[str, str | None]:
    """{"machine": where the rows were measured, "machine_warning": a line when that CPU (model or ISA
    features) is not this one's, else None, "load_warning": a line when the bench ran on a busy CPU (its header's
    load average above its cores, stats.busy_note), else None}."""
    from .utils import machine_info

    there = header.get("machine") or {}
    loads = header.get("load_average")
    busy = (
        stats.busy_note(loads, there.get("cores_available") or there.get("cores")) if isinstance(loads, list) else None
    )
    contended = {
        "load_warning": None
        if busy is None
        else f"warning: {busy}: the latency limit and every 'faster' here are read from contended figures"
    }
    if not there.get("cpu"):
        return {"machine": "the bench does not record its machine", "machine_warning": None, **contended}
    isa = ", ".join(there.get("isa") or []) or "ISA not recorded"
    line = f"rows measured on {there['cpu']} ({isa}), {str(header.get('date', ''))[:10] or 'date not recorded'}"
    here = machine_info()
    if here["cpu"] == there["cpu"] and (not there.get("isa") or list(here["isa"]) == list(there["isa"])):
        return {"machine": line + " (this machine's CPU)", "machine_warning": None, **contended}
    here_isa = ", ".join(here["isa"]) or "no AVX2"
    return {
        "machine": line,
        "machine_warning": (
            f"warning: the bench was measured on {there['cpu']} ({isa}), not on this {here['cpu']} ({here_isa}): its "
            f"latencies may not hold here; bench on this machine for figures that do"
        ),
        **contended,
    }


def _measured(data: BenchResult, threads: int | None, key: str) -> tuple[list[BenchRow], list[str]]:
    """The usable measured rows (at `threads`, when given), and a line for each one left out (the file's rows
    that are not bench rows too, in the file's order)."""
    ok, ignored = [], []
    rows = iter(data)
    for i in range(len(data) + len(data.unread)):
        problem = data.unread.get(i)
        row = next(rows) if problem is None else None
        if row is not None and row.status not in (None, "ok"):
            continue  # skipped or failed at bench time: the bench said why
        problem = problem or _malformed(row, key)
        if problem:
            ignored.append(f"bench row {i + 1} ignored: {problem}")
        else:
            ok.append(row)
    if not ok:
        more = f" ({ignored[0]}{' ...' if len(ignored) > 1 else ''})" if ignored else ""
        raise BenchError(f"the bench result has no measured rows{more}")
    if threads is not None:
        picked = [r for r in ok if r.threads == threads]
        if not picked:
            measured = ", ".join(str(t) for t in sorted({r.threads for r in ok}))
            raise BenchError(f"no rows measured at {threads} threads (the result has {measured})")
        return picked, ignored
    machine = data.header.get("machine") or {}
    cores = machine.get("cores_available") or machine.get("cores")
    if isinstance(cores, int) and (over := [r for r in ok if r.threads > cores]) and len(over) < len(ok):
        ignored.append(
            f"{len(over)} rows measured at more threads than the bench machine's {cores} cores left out "
            f"(pass --threads N to consider them)"
        )
        ok = [r for r in ok if r.threads <= cores]
    return ok, ignored


def _malformed(row: BenchRow, key: str) -> str | None:
    """Why a bench row cannot be compared (None: it can)."""
    checks = {
        "model": lambda v: isinstance(v, str),
        "variant": lambda v: isinstance(v, str),
        "threads": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
        "accuracy": lambda v: _number(v) and 0 <= v <= 1,
        key: lambda v: _number(v) and v > 0,
        "size_mb": lambda v: _number(v) and v >= 0,
    }
    bad = [name for name, valid in checks.items() if not valid(getattr(row, name))]
    if bad:
        return (
            ", ".join(f"{name} {getattr(row, name)!r}" for name in bad) + " (the bench writes measured figures there)"
        )
    return None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def name(row: BenchRow) -> str:
    return f"{model_shown(row)} {row.variant} @{threads_shown(row)} thread{'s' if row.threads > 1 else ''}"


def describe(row: BenchRow, key: str) -> str:
    return f"top-1 {row.accuracy:.2%}, {key.split('_')[1]} {getattr(row, key):.3f} ms, {row.size_mb:.2f} MB"


def _joined(cons: list[Constraint]) -> str:
    return ", ".join(c.text() for c in cons) if cons else "no constraints"


def _why(
    choice: BenchRow,
    best: BenchRow,
    tied: list[Tie],
    judged: list[Tie],
    eligible: list[BenchRow],
    rows: list[BenchRow],
    cons: list[Constraint],
    key: str,
    alpha: float,
) -> str:
    """ "X: tied with Y on accuracy (p = 0.62, -0.05 pt), 3.3x smaller and 1.8x faster", or the clear winner
    and how far ahead of the next row it is."""
    percentile = key.split("_")[1]
    among = f"the {len(eligible)} of {len(rows)} measured rows that meet {_joined(cons)}"
    if choice is not best:
        tie = next(t for t in tied if t.row is choice)
        text = (
            f"{name(choice)}: tied with {name(best)} on accuracy ({tie.text()}), {_size_text(choice, best)} "
            f"and {stats.speed_text(choice, best, percentile)}; {name(best)} is the most accurate of {among} "
            f"({describe(best, key)}; this one {describe(choice, key)})"
        )
    else:
        text = f"{name(choice)} ({describe(choice, key)}): the most accurate of {among}"
        others = [t for t in tied if t.row is not choice]
        if others:
            other = others[0].row
            text += (
                f"; {len(others)} more tied with it on accuracy, none smaller (e.g. {name(other)}: "
                f"{others[0].text()}; this one {_size_text(choice, other)} and "
                f"{stats.speed_text(choice, other, percentile)})"
            )
        ahead = next((r for r in eligible if not any(t.row is r for t in tied)), None)
        if ahead is not None:
            text += (
                f"; the next, {name(ahead)} ({describe(ahead, key)}), is significantly less accurate "
                f"({accuracy_tie(ahead, best, alpha).text()})"
            )
    unpaired = [t for t in judged if t.method != PAIRED]
    if unpaired:
        how = (
            "overlapping Wilson intervals"
            if all(t.method == WILSON for t in unpaired)
            else "overlapping Wilson intervals or, without counts, equal top-1"
        )
        text += (
            f" [{len(unpaired)} of the {len(judged)} rows judged against {name(best)} by {how}, not a paired "
            f"test: no per-image results on one test set for them; bench again to pair them]"
        )
    fastest = min(eligible, key=lambda r: getattr(r, key))
    if fastest is not choice and faster(fastest, choice, percentile):
        text += f"; the fastest that qualifies is {name(fastest)} ({describe(fastest, key)})"
    return text


def _size_text(small: BenchRow, large: BenchRow) -> str:
    if small.size_mb == large.size_mb:
        return "the same size"
    ratio = large.size_mb / small.size_mb if small.size_mb else float("inf")
    shown = max(ratio, 1 / ratio)
    return f"{shown:.{1 if shown >= 1.5 else 2}f}x {'smaller' if ratio >= 1 else 'larger'}"


def _shortfall(c: Constraint, cons: list[Constraint], rows: list[BenchRow], key: str) -> dict[str, Any]:
    """The row closest to meeting `c` among those that meet every other constraint (or among all rows, when
    none does), and how far it is."""
    others = [r for r in rows if all(o.gap(r) <= 0 for o in cons if o is not c)]
    pool = others or rows
    best = min(pool, key=c.gap)
    gap = c.gap(best)
    where = "that meets the other constraints" if others and len(cons) > 1 else "of all measured rows"
    if not others:
        where = "of all measured rows (none meets the other constraints either)"
    text = (
        f"{c.text()} is missed by {gap:.3g} {c.unit.split()[0]}: the closest {where} is {name(best)} "
        f"({describe(best, key)})"
    )
    return {
        "constraint": c.name,
        "limit": c.limit,
        "value": c.value(best),
        "gap": gap,
        "unit": c.unit,
        "closest": best,
        "text": text,
    }


# The pipeline's answer for one edge core: batch-1 p50 within 1 ms and a file of at most 5 MB, the budget of a
# small always-on classifier beside other work on a device CPU.
DEFAULT_SHIPPING = {"max_latency_ms": 1.0, "max_size_mb": 5.0, "threads": 1}


def shipping_verdict(
    result: BenchResult | Path | str, alpha: float = stats.ALPHA, **constraints: Any
) -> dict[str, Any]:
    """Which file to ship under `constraints` (default DEFAULT_SHIPPING), with recommend()'s tie rule at `alpha`,
    and the Pareto front of accuracy against batch-1 p50 latency at that thread count (significant_front), each
    front file with the reason it is there.

    Returns {"recommendation": recommend()'s answer, "front": [{"row", "reason"}], "lines": [str]}.
    """
    wanted = {**DEFAULT_SHIPPING, **constraints}
    data = result if isinstance(result, BenchResult) else load_result(result)
    found = recommend(data, alpha=alpha, **wanted)
    rows, _ = _measured(data, wanted["threads"], "latency_p50_ms")
    front_rows = significant_front(rows, alpha)
    front = []
    for i, row in enumerate(front_rows):  # fastest first
        if i == 0:
            reason = "the fastest file measured"
        else:
            prev = front_rows[i - 1]
            tie = accuracy_tie(prev, row, alpha)
            how = (
                ("more accurate" if tie.method == TOP1 else "significantly more accurate")
                if not tie.tied
                else "as accurate"
            )
            reason = f"beside the faster {name(prev)}: {how} ({tie.text(seen_from_reference=True)}), {stats.speed_text(row, prev)}"
        front.append({"row": row, "reason": reason + "; no file is both faster and more accurate beyond the noise"})
    limits = ", ".join(c.text() for c in constraints_for(wanted["max_latency_ms"], wanted["max_size_mb"], None))
    lines = [
        f"ship ({limits}, {wanted['threads']} thread): "
        + (f"{found['choice'].path or name(found['choice'])}: {found['reason']}" if found["met"] else found["reason"])
    ]
    lines += [f"Pareto front (accuracy against p50 latency, {wanted['threads']} thread, ties at alpha {alpha:g}):"]
    lines += [f"  {name(f['row'])} ({describe(f['row'], 'latency_p50_ms')}): {f['reason']}" for f in front]
    lines.append(
        f"  ({found['machine']}; each figure is of one exported file of one training run: the paired tests "
        f"say whether two files differ, not whether their recipes do: `train --seeds N` measures that)"
    )
    return {"recommendation": found, "front": front, "lines": lines}


def significant_front(rows: list[BenchRow], alpha: float = stats.ALPHA, percentile: str = "p50") -> list[BenchRow]:
    """The Pareto front of accuracy against latency with ties respected, fastest first: a row is off the front
    when another row is significantly faster (faster()) and not significantly less accurate (accuracy_tie), or
    significantly more accurate (more_accurate()) and not significantly slower. Without per-image results or
    latency trials, the comparisons fall back as accuracy_tie and faster() say, which on an old bench gives the
    plain Pareto front."""
    key = f"latency_{percentile}_ms"
    timed = [r for r in rows if isinstance(r.latency(percentile), (int, float)) and r.accuracy is not None]
    order = sorted(timed, key=lambda r: (getattr(r, key), -r.accuracy))

    def dominates(s: BenchRow, r: BenchRow) -> bool:
        if faster(s, r, percentile) and accuracy_tie(s, r, alpha).tied:  # s not significantly less accurate
            return True
        return more_accurate(s, r, alpha) and not faster(r, s, percentile)

    return [r for r in order if not any(s is not r and dominates(s, r) for s in order)]
