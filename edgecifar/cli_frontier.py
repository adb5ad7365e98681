"""`edgecifar frontier`: scratch against transfer at every latency and size budget, from a bench result."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .cli_common import app, console, handle_errors, note, say
from .errors import UsageError


@app.command()
@handle_errors
def frontier(
    results: Annotated[
        list[Path] | None,
        typer.Argument(
            help="bench.json files (or folders holding one); a file in several counts as measured by the last "
            "[default: benchmarks/results]"
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="folder for frontier.json, frontier.md and frontier.png")] = Path(
        "benchmarks/results/frontier"
    ),
    fmt: Annotated[
        list[str] | None, typer.Option("--format", help="only this runtime's files (repeatable), e.g. onnx")
    ] = None,
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="significance level of the paired test")] = 0.05,
) -> None:
    """Accuracy against 1-thread batch-1 latency and against file size, per family (scratch, transfer): each
    family's Pareto front, and per budget which family's best file wins and whether that is significant."""
    from rich.table import Table

    from .backends import BACKENDS
    from .frontier import (
        AXES,
        FAMILIES,
        build_frontier,
        cost_text,
        verdict_text,
        write_frontier,
    )
    from .bench_rows import load_result

    if bad := [f for f in fmt or [] if f not in BACKENDS]:
        raise UsageError(f"--format {bad[0]}: choose from {', '.join(BACKENDS)}")
    results = results or [Path("benchmarks/results")]
    fr = build_frontier([load_result(r) for r in results], alpha=alpha, formats=fmt or None)
    command = " ".join(
        [
            "uv run edgecifar frontier",
            *map(str, results),
            "--out",
            str(out),
            *(f"--format {f}" for f in fmt or []),
            *([f"--alpha {alpha:g}"] if alpha != 0.05 else []),
        ]
    )
    files = write_frontier(fr, out, ", ".join(map(str, results)), command)
    for line in fr.notes:
        note(f"note: {line}")
    note(f"machine: {fr.machine}")
    for axis, (_, title) in AXES.items():
        table = Table(title=escape(f"budget: {title}"))
        table.add_column("budget", no_wrap=True, justify="right")
        for f in FAMILIES:
            table.add_column(f"best {f} (top-1 %)")
        table.add_column("verdict")
        for v in fr.budgets[axis]:
            best = [
                escape(f"{p.label}: {100 * p.accuracy:.2f}") if p else "none fits"
                for p in (v.best[f] for f in FAMILIES)
            ]
            table.add_row(cost_text(axis, v.budget), *best, escape(verdict_text(v)))
        console.print(table)
        for c in fr.crossovers[axis]:
            say(
                f"crossover ({axis}): {c.before} leads below {cost_text(axis, c.cost, False)}, {c.after} from there "
                f"({c.point})"
            )
    say(f"wrote {files['md']}, {files['json']} and {files['png']}")
