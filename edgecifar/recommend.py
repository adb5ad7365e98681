"""`edgecifar recommend`: from a bench result and constraints, the best artifact that meets them and why, or
which constraint cannot be met and by how much.

"Best" is the most accurate row that meets every constraint; ties go to the faster, then the smaller one.
Rows measured at more threads than the bench machine's cores are left out unless `threads` asks for them
(oversubscribed pools win a median and lose the tail badly); malformed rows are left out and listed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import BenchError, UsageError
from .report import load_result, model_shown, threads_shown

PERCENTILES = ("p50", "p90", "p99")


@dataclass(frozen=True)
class Constraint:
    name: str  # the CLI option
    limit: float
    value: Callable[[dict[str, Any]], float]  # the row's figure, in the limit's unit
    upper: bool  # True: value <= limit; False: value >= limit
    unit: str

    def gap(self, row: dict[str, Any]) -> float:
        """How far the row is from meeting it (<= 0: met)."""
        v = self.value(row)
        return v - self.limit if self.upper else self.limit - v

    def text(self) -> str:
        unit = f" ({self.unit.split()[1].strip('()')})" if " " in self.unit else ""
        return f"{self.name.replace('_', '-')} {self.limit:g}{unit}"


def constraints_for(max_latency_ms: float | None, max_size_mb: float | None, min_accuracy: float | None,
                    percentile: str = "p50") -> list[Constraint]:
    if percentile not in PERCENTILES:
        raise UsageError(f"unknown latency percentile '{percentile}': use one of {', '.join(PERCENTILES)}")
    found = []
    if max_latency_ms is not None:
        found.append(Constraint("max_latency_ms", max_latency_ms, lambda r: r[f"latency_{percentile}_ms"], True,
                                f"ms {percentile}"))
    if max_size_mb is not None:
        found.append(Constraint("max_size_mb", max_size_mb, lambda r: r["size_mb"], True, "MB"))
    if min_accuracy is not None:
        if not 0 <= min_accuracy <= 100:
            raise UsageError(f"--min-accuracy is a top-1 percentage (0-100), got {min_accuracy}")
        if 0 < min_accuracy <= 1:  # 0.9 is far likelier to mean 90 % than 0.9 %: refuse to guess
            raise UsageError(f"--min-accuracy is top-1 in percent, so {min_accuracy:g} would mean {min_accuracy:g} %: "
                             f"for {min_accuracy:.0%} pass --min-accuracy {100 * min_accuracy:g}")
        found.append(Constraint("min_accuracy", min_accuracy, lambda r: 100 * r["accuracy"], False, "points"))
    return found


def recommend(result: dict[str, Any] | Path | str, max_latency_ms: float | None = None,
              max_size_mb: float | None = None, min_accuracy: float | None = None, threads: int | None = None,
              percentile: str = "p50") -> dict[str, Any]:
    """Pick the best measured row under the constraints (min_accuracy in percent, e.g. 85.5).

    Returns {"met", "choice", "reason", "runner_up", "eligible", "considered", "shortfalls", "percentile",
    "ignored"}; `choice` is None and `shortfalls` says by how much each constraint is missed when nothing meets
    them all; `ignored` has a line per row left out (malformed, or more threads than cores). Raises UsageError
    for bad constraints, BenchError when no usable row is left.
    """
    cons = constraints_for(max_latency_ms, max_size_mb, min_accuracy, percentile)
    key = f"latency_{percentile}_ms"
    data = result if isinstance(result, dict) else load_result(result)
    rows, ignored = _measured(data, threads, key)
    eligible = sorted((r for r in rows if all(c.gap(r) <= 0 for c in cons)),
                      key=lambda r: (-r["accuracy"], r[key], r["size_mb"]))
    base = {"percentile": percentile, "considered": len(rows), "eligible": eligible,
            "constraints": {c.name: c.limit for c in cons}, "threads": threads, "ignored": ignored}
    if not eligible:
        shortfalls = [_shortfall(c, cons, rows, key) for c in cons]
        missed = [s for s in shortfalls if s["gap"] > 0]
        reason = "no measured artifact meets " + _joined(cons) + ": " + "; ".join(s["text"] for s in missed)
        return {**base, "met": False, "choice": None, "runner_up": None, "reason": reason, "shortfalls": missed}
    choice = eligible[0]
    runner_up = eligible[1] if len(eligible) > 1 else None
    return {**base, "met": True, "choice": choice, "runner_up": runner_up, "shortfalls": [],
            "reason": _why(choice, runner_up, eligible, rows, cons, key)}


def _measured(data: dict[str, Any], threads: int | None, key: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The usable measured rows (at `threads`, when given), and a line for each one left out."""
    ok, ignored = [], []
    for i, row in enumerate(data["rows"]):
        if isinstance(row, dict) and row.get("status") not in (None, "ok"):
            continue  # skipped or failed at bench time: the bench said why
        problem = _malformed(row, key)
        if problem:
            ignored.append(f"bench row {i + 1} ignored: {problem}")
        else:
            ok.append(row)
    if not ok:
        more = f" ({ignored[0]}{' ...' if len(ignored) > 1 else ''})" if ignored else ""
        raise BenchError(f"the bench result has no measured rows{more}")
    if threads is not None:
        picked = [r for r in ok if r["threads"] == threads]
        if not picked:
            measured = ", ".join(str(t) for t in sorted({r["threads"] for r in ok}))
            raise BenchError(f"no rows measured at {threads} threads (the result has {measured})")
        return picked, ignored
    machine = (data.get("header") or {}).get("machine") or {}
    cores = machine.get("cores_available") or machine.get("cores")
    if isinstance(cores, int) and (over := [r for r in ok if r["threads"] > cores]) and len(over) < len(ok):
        ignored.append(f"{len(over)} rows measured at more threads than the bench machine's {cores} cores left out "
                       f"(pass --threads N to consider them)")
        ok = [r for r in ok if r["threads"] <= cores]
    return ok, ignored


def _malformed(row: Any, key: str) -> str | None:
    """Why a bench row cannot be compared (None: it can)."""
    if not isinstance(row, dict):
        return f"not an object ({type(row).__name__})"
    checks = {"model": lambda v: isinstance(v, str), "variant": lambda v: isinstance(v, str),
              "threads": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
              "accuracy": lambda v: _number(v) and 0 <= v <= 1, key: lambda v: _number(v) and v > 0,
              "size_mb": lambda v: _number(v) and v >= 0}
    bad = [name for name, valid in checks.items() if not valid(row.get(name))]
    if bad:
        return ", ".join(f"{name} {row.get(name)!r}" for name in bad) + " (the bench writes measured figures there)"
    return None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def name(row: dict[str, Any]) -> str:
    return f"{model_shown(row)} {row['variant']} @{threads_shown(row)} thread{'s' if row['threads'] > 1 else ''}"


def describe(row: dict[str, Any], key: str) -> str:
    return f"top-1 {row['accuracy']:.2%}, {key.split('_')[1]} {row[key]:.3f} ms, {row['size_mb']:.2f} MB"


def _joined(cons: list[Constraint]) -> str:
    return ", ".join(c.text() for c in cons) if cons else "no constraints"


def _why(choice: dict, runner_up: dict | None, eligible: list[dict], rows: list[dict], cons: list[Constraint],
         key: str) -> str:
    text = (f"{name(choice)} ({describe(choice, key)}): the most accurate of the {len(eligible)} of {len(rows)} "
            f"measured rows that meet {_joined(cons)}")
    if runner_up is not None:
        delta = 100 * (choice["accuracy"] - runner_up["accuracy"])
        than = f"{delta:.2f} points less accurate" if delta > 0 else "as accurate, but slower or larger"
        text += f"; next best {name(runner_up)} ({describe(runner_up, key)}: {than})"
    fastest = min(eligible, key=lambda r: r[key])
    if fastest is not choice:
        text += f"; the fastest that qualifies is {name(fastest)} ({describe(fastest, key)})"
    return text


def _shortfall(c: Constraint, cons: list[Constraint], rows: list[dict], key: str) -> dict[str, Any]:
    """The row closest to meeting `c` among those that meet every other constraint (or among all rows, when
    none does), and how far it is."""
    others = [r for r in rows if all(o.gap(r) <= 0 for o in cons if o is not c)]
    pool = others or rows
    best = min(pool, key=c.gap)
    gap = c.gap(best)
    where = "that meets the other constraints" if others and len(cons) > 1 else "of all measured rows"
    if not others:
        where = "of all measured rows (none meets the other constraints either)"
    text = (f"{c.text()} is missed by {gap:.3g} {c.unit.split()[0]}: the closest {where} is {name(best)} "
            f"({describe(best, key)})")
    return {"constraint": c.name, "limit": c.limit, "value": c.value(best), "gap": gap, "unit": c.unit,
            "closest": best, "text": text}


# The pipeline's answer for one edge core: batch-1 p50 within 1 ms and a file of at most 5 MB, the budget of a
# small always-on classifier beside other work on a device CPU.
DEFAULT_SHIPPING = {"max_latency_ms": 1.0, "max_size_mb": 5.0, "threads": 1}


def shipping_verdict(result: dict[str, Any] | Path | str, **constraints: Any) -> dict[str, Any]:
    """Which file to ship under `constraints` (default DEFAULT_SHIPPING), and the Pareto front of accuracy
    against batch-1 p50 latency at that thread count, each front file with the reason it is there.

    Returns {"recommendation": recommend()'s answer, "front": [{"row", "reason"}], "lines": [str]}.
    """
    from .report import pareto_front

    wanted = {**DEFAULT_SHIPPING, **constraints}
    data = result if isinstance(result, dict) else load_result(result)
    found = recommend(data, **wanted)
    rows, _ = _measured(data, wanted["threads"], "latency_p50_ms")
    front_rows = [rows[i] for i in pareto_front([(r["latency_p50_ms"], r["accuracy"]) for r in rows])]
    front = []
    for i, row in enumerate(front_rows):  # fastest first: each is more accurate than every faster file
        faster = front_rows[i - 1] if i else None
        reason = ("the fastest file measured" if faster is None else
                  f"{100 * (row['accuracy'] - faster['accuracy']):.2f} points more accurate than the faster "
                  f"{name(faster)}")
        front.append({"row": row, "reason": reason + "; no file is both faster and more accurate"})
    limits = ", ".join(c.text() for c in constraints_for(wanted["max_latency_ms"], wanted["max_size_mb"], None))
    lines = [f"ship ({limits}, {wanted['threads']} thread): " + (
        f"{found['choice'].get('path', name(found['choice']))}: {found['reason']}" if found["met"] else found["reason"])]
    lines += [f"Pareto front (accuracy against p50 latency, {wanted['threads']} thread):"]
    lines += [f"  {name(f['row'])} ({describe(f['row'], 'latency_p50_ms')}): {f['reason']}" for f in front]
    return {"recommendation": found, "front": front, "lines": lines}
