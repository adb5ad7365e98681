"""Bench reports: bench.json (header + rows), bench.csv (one flat row per artifact and thread setting),
bench.md (tables for people) and bench.png (accuracy against latency, with the Pareto front).

Every accuracy is shown with its Wilson 95 % interval and every p50 latency with its min-max over the latency
trials (error bars in the plot); the Pareto front is the one recommend.significant_front marks, where a file
leaves the front only to one that beats it beyond the noise (docs/statistics.md).

All four are written together or not at all: each goes to a temporary file beside its final name, and the
renames happen only after every one of them was written.
"""

from __future__ import annotations

import contextlib
import csv
import json
from pathlib import Path
from typing import Any, Sequence

from .backends import BACKENDS
from .bench_rows import REPORT_FILES, load_result, model_shown, threads_shown  # noqa: F401 (read from here too)
from .records import BenchRow
from .utils import atomic_path

FORMAT_MARKERS = {"pytorch": "o", **dict(zip(BACKENDS, "s^DvPX*"))}  # one marker per backend, registry order


def write_reports(header: dict[str, Any], rows: list[BenchRow], out_dir: Path | str) -> dict[str, Path]:
    """Write the four report files into `out_dir`, all or none; returns their paths."""
    out_dir = Path(out_dir)
    final = {kind: out_dir / name for kind, name in REPORT_FILES.items()}
    with contextlib.ExitStack() as stack:
        tmp = {kind: stack.enter_context(atomic_path(path)) for kind, path in final.items()}
        tmp["json"].write_text(json.dumps({"header": header, "rows": [r.to_json() for r in rows]}, indent=2) + "\n")
        write_csv(rows, tmp["csv"])
        tmp["md"].write_text(markdown(header, rows, image=REPORT_FILES["png"]))
        plot_pareto(rows, tmp["png"], title=_title(header))
        for path in tmp.values():
            path.chmod(0o644)  # results are for sharing (the temporary files start as 0600)
    return final


# ---------------------------------------------------------------- CSV


def flat_row(row: BenchRow) -> dict[str, Any]:
    """CSV form: per-class accuracy and per-image results left to the JSON, lists (the latency trials) as
    space-separated numbers, the ISA record as isa_<field> columns, library versions as version_<name> columns."""
    flat = {
        k: (" ".join(f"{x:.6g}" for x in v) if isinstance(v, list) else v)
        for k, v in row.to_json().items()
        if k not in ("per_class", "per_image", "versions", "isa")
    }
    isa = row.isa or {}
    flat.update({f"isa_{k}": (" ".join(v) if isinstance(v, list) else v) for k, v in isa.items() if k != "cpu"})
    flat.update({f"version_{name}": v for name, v in (row.versions or {}).items()})
    return flat


def write_csv(rows: list[BenchRow], path: Path) -> None:
    flats = [flat_row(r) for r in rows]
    columns = list(dict.fromkeys(k for f in flats for k in f))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(flats)


# ---------------------------------------------------------------- Markdown


def _fmt(value: Any, spec: str, scale: float | None = None) -> str:
    if value is None:
        return "-"
    return format(value * scale if scale is not None else value, spec)


def _title(header: dict[str, Any]) -> str:
    machine = header.get("machine", {})
    return f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, {header.get('date', '')[:10]}"


def accuracy_shown(row: BenchRow) -> str:
    """ "90.22 (89.63-90.79)": top-1 in percent with its 95 % interval, where the row has one."""
    if row.accuracy is None:
        return "-"
    low, high = row.accuracy_low, row.accuracy_high
    text = f"{100 * row.accuracy:.2f}"
    return text + (f" ({100 * low:.2f}-{100 * high:.2f})" if low is not None and high is not None else "")


def latency_shown(row: BenchRow) -> str:
    """ "0.512 (0.498-0.530)": the median over trials of the p50s with their min-max, where the row has trials."""
    if row.latency_p50_ms is None:
        return "-"
    low, high = row.latency_p50_min_ms, row.latency_p50_max_ms
    text = f"{row.latency_p50_ms:.3f}"
    return text + (
        f" ({low:.3f}-{high:.3f})" if low is not None and high is not None and (row.latency_trials or 0) > 1 else ""
    )


def markdown_table(rows: Sequence[BenchRow]) -> str:
    """The measured rows as a Markdown table (the README embeds this one): top-1 with its Wilson 95 % interval,
    p50 with its min-max over trials."""
    lines = [
        "| model | variant | threads | top-1 % (95 % CI) | size MB | params | MMACs | p50 ms (trials min-max) | "
        "p90 ms | p99 ms | img/s | load s |",
        "|" + "---|" * 12,
    ]
    for r in rows:
        lines.append(
            f"| {model_shown(r)} | {r.variant} | {threads_shown(r)} | {accuracy_shown(r)} | "
            f"{_fmt(r.size_mb, '.2f')} | {_fmt(r.params, ',')} | {_fmt(r.macs, '.1f', 1e-6)} | "
            f"{latency_shown(r)} | {_fmt(r.latency_p90_ms, '.3f')} | "
            f"{_fmt(r.latency_p99_ms, '.3f')} | {_fmt(r.throughput_ips, ',.0f')} | "
            f"{_fmt(r.load_s, '.2f')} |"
        )
    return "\n".join(lines)


def markdown(header: dict[str, Any], rows: list[BenchRow], image: str | None = None) -> str:
    settings, machine, versions = header["settings"], header["machine"], header["versions"]
    ok = [r for r in rows if r.status == "ok"]
    images = ok[0].images if ok else None
    isa = ", ".join(machine.get("isa", [])) or "ISA not recorded"
    parts = [
        f"# edgecifar bench, {header['date'][:10]}",
        "",
        f"- Machine: {machine['cpu']}, {machine['cores']} cores ({isa}), {machine['platform']}, "
        f"Python {machine['python']}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"- Test set: {ok[0].data if ok else '-'} ({images or '-'} images"
        f"{', at ' + ok[0].input_size if ok and ok[0].input_size else ''}), top-1 through each "
        f"file's own "
        f"runtime; device {settings['device']}",
        "- Top-1: with its 95 % Wilson interval; per-image results kept in bench.json (`edgecifar compare` "
        "pairs any two rows)",
        f"- Latency: batch 1, {settings.get('latency_trials', 1)} trial(s) each on a fresh session over about "
        f"{settings['latency_seconds']} s of calls in all, after a warm-up: the median of the trials' "
        f"percentiles, the p50's min-max over trials in brackets; "
        f"throughput at batch {settings['batch_size']}; each artifact and thread setting in a fresh process "
        f"with the runtime's threads pinned",
        f"- Took {header['bench_seconds']} s",
        "",
    ]
    for n in settings["threads"]:
        measured = [r for r in ok if r.threads == n]
        if measured:
            front = _front(measured)  # emulated rows have no timings, and no place on it
            parts += [
                f"## {n} thread{'s' if n > 1 else ''}",
                "",
                markdown_table(measured),
                "",
                "Pareto front (no other row is faster and not less accurate, or more accurate and not "
                "slower, beyond the noise: exact McNemar at 0.05, latency ratio's 95 % interval): "
                + ", ".join(f"{model_shown(r)} {r.variant}" for r in front),
                "",
            ]
    parts += _isa_lines(ok) + _memory_lines(ok)
    bad = [r for r in rows if r.status != "ok"]
    if bad:
        parts += ["## Not measured", "", "| model | variant | threads | status | reason |", "|---|---|---|---|---|"]
        parts += [
            f"| {model_shown(r)} | {r.variant} | {r.threads} | {r.status} | {(r.reason or '').replace('|', '/')} |"
            for r in bad
        ]
        parts.append("")
    if header.get("notes"):
        parts += ["## Notes", ""] + [f"- {note}" for note in header["notes"]] + [""]
    if image:
        parts += [f"![accuracy against latency]({image})", ""]
    return "\n".join(parts)


def _isa_lines(rows: list[BenchRow]) -> list[str]:
    """Which INT8 path each figure ran on (when not all the CPU's own), and the VNNI warnings."""
    lines = []
    capped = [r for r in rows if (r.isa or {}).get("cap")]
    if capped:
        lines += ["## INT8 paths", "", "Rows marked @PATH ran on a narrower INT8 path than this CPU's:", ""]
        lines += list(
            dict.fromkeys(
                f"- {r.variant}: {r.isa['int8_path']} ({r.isa['cap']})"
                + ("; emulated, so no timings" if r.latency_p50_ms is None else "")
                for r in capped
            )
        ) + [""]
    warned = list(dict.fromkeys(f"- {model_shown(r)} {r.variant}: {r.isa_warning}" for r in rows if r.isa_warning))
    return lines + (["## ISA warnings", "", *warned, ""] if warned else [])


def _memory_lines(rows: list[BenchRow]) -> list[str]:
    """A microcontroller's two budgets for the rows that report them (a backend's device_figures, e.g. TFLite
    Micro's): flash (the file's bytes) and the exact arena (the smallest that allocates and runs), with the
    interpreter's split of that arena."""
    measured = list({r.path: r for r in rows if r.arena_bytes is not None}.values())
    if not measured:
        return []
    lines = [
        "## Microcontroller memory",
        "",
        "Flash: the file's bytes. Arena: the smallest tensor arena with which the interpreter allocates and runs "
        "the file (found by bisection), and the interpreter's own account of it (head: activations, tail: "
        "persistent buffers and tensors).",
        "",
        "| model | variant | top-1 % (95 % CI) | flash bytes | arena bytes | head | tail |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in measured:
        detail = r.arena_detail or {}
        lines.append(
            f"| {model_shown(r)} | {r.variant} | {accuracy_shown(r)} | {_fmt(r.flash_bytes, ',')} | "
            f"{_fmt(r.arena_bytes, ',')} | {_fmt(detail.get('head'), ',')} | {_fmt(detail.get('tail'), ',')} |"
        )
    return lines + [""]


# ---------------------------------------------------------------- Pareto plot


def _front(rows: list[BenchRow]) -> list[BenchRow]:
    from .recommend import significant_front

    return significant_front([r for r in rows if r.latency_p50_ms is not None and r.accuracy is not None])


def plot_pareto(rows: list[BenchRow], path: Path, title: str = "") -> None:
    """Accuracy against p50 latency, one panel per thread setting: colour per model, marker per format, marker
    area by file size, error bars (top-1's Wilson 95 % interval; the p50's min-max over trials), the Pareto
    front (significant_front) as a step line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    ok = [r for r in rows if r.status == "ok" and r.latency_p50_ms and r.accuracy is not None]
    threads = sorted({r.threads for r in ok}) or [1]
    models = list(dict.fromkeys(model_shown(r) for r in ok))
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(models)}
    biggest = max((r.size_mb or 0 for r in ok), default=1) or 1
    fig, axes = plt.subplots(1, len(threads), figsize=(6.5 * len(threads), 5), sharey=True, squeeze=False)
    for ax, n in zip(axes[0], threads, strict=True):
        measured = [r for r in ok if r.threads == n]
        for r in measured:
            _error_bars(ax, r, colours[model_shown(r)])
            ax.scatter(
                r.latency_p50_ms,
                100 * r.accuracy,
                s=30 + 470 * (r.size_mb or 0) / biggest,
                color=colours[model_shown(r)],
                marker=FORMAT_MARKERS.get(r.format, "o"),
                alpha=0.75,
                edgecolors="black",
                linewidths=0.5,
            )
            ax.annotate(
                r.variant,
                (r.latency_p50_ms, 100 * r.accuracy),
                fontsize=6,
                xytext=(4, 3),
                textcoords="offset points",
            )
        front = _front(measured)
        if front:
            ax.plot(
                [r.latency_p50_ms for r in front],
                [100 * r.accuracy for r in front],
                color="grey",
                linestyle="--",
                drawstyle="steps-post",
                linewidth=1,
                label="Pareto front",
            )
        ax.set_xscale("log")
        # plain numbers (0.2, 0.5, 2, 5 ...) rather than 2x10^-1: latencies span a decade or two
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if _leading_digit(v) in (2, 5) else ""))
        ax.set(xlabel="p50 latency, batch 1 (ms, log scale)", title=f"{n} thread{'s' if n > 1 else ''}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("top-1 accuracy (%)")
    handles = [Line2D([], [], color=colours[m], marker="o", linestyle="", label=m) for m in models]
    handles += [
        Line2D([], [], color="grey", marker=FORMAT_MARKERS[f], linestyle="", label=f)
        for f in dict.fromkeys(r.format for r in ok)
        if f in FORMAT_MARKERS
    ]
    handles.append(Line2D([], [], color="grey", linestyle="--", label="Pareto front (beyond the noise)"))
    axes[0][-1].legend(handles=handles, fontsize=7, loc="lower right", title="marker area: file size", title_fontsize=7)
    fig.suptitle(f"accuracy against latency ({title})" if title else "accuracy against latency", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def _error_bars(ax, row: BenchRow, colour) -> None:
    """The row's top-1 interval (vertical) and p50 min-max over trials (horizontal), where it has them."""
    x, y = row.latency_p50_ms, 100 * row.accuracy
    yerr = xerr = None
    if row.accuracy_low is not None and row.accuracy_high is not None:
        yerr = [[y - 100 * row.accuracy_low], [100 * row.accuracy_high - y]]
    if row.latency_p50_min_ms is not None and row.latency_p50_max_ms is not None:
        xerr = [[x - row.latency_p50_min_ms], [row.latency_p50_max_ms - x]]
    if yerr or xerr:
        ax.errorbar(
            x, y, yerr=yerr, xerr=xerr, fmt="none", ecolor=colour, elinewidth=0.7, capsize=1.5, alpha=0.6, zorder=1
        )


def _leading_digit(value: float) -> int:
    return int(f"{value:e}"[0]) if value > 0 else 0


# ---------------------------------------------------------------- terminal


def rich_table(rows: Sequence[BenchRow], title: str = ""):
    """The rows as a rich Table, a section per model: measured ones with their figures, the others in yellow
    with the reason (in full in the caption). Names and reasons are shown literally, never as rich markup."""
    from rich.markup import escape
    from rich.table import Table

    reasons = dict.fromkeys(escape(f"{model_shown(r)} {r.variant}: {r.reason}") for r in rows if r.status != "ok")
    table = Table(
        title=f"{title} (latency: batch 1, ms; load: s)" if title else None,
        caption="\n".join(reasons) or None,
        caption_justify="left",
        box=None,
        padding=(0, 1),
        pad_edge=False,
        header_style="bold underline",
    )
    for col in ("variant", "thr", "status", "top-1%", "MB", "p50", "p90", "p99", "img/s", "load"):
        # never wrapped or cut: the reasons of skipped rows are in the caption, where they can wrap
        table.add_column(col, justify="left" if col in ("variant", "status") else "right", no_wrap=True)
    for model in dict.fromkeys(model_shown(r) for r in rows):
        table.add_row(f"[bold]{escape(model)}[/bold]")
        for r in (r for r in rows if model_shown(r) == model):
            ok = r.status == "ok"
            latency = (_fmt(r.latency(p), ".3g") for p in ("p50", "p90", "p99"))
            table.add_row(
                escape(r.variant),
                threads_shown(r),
                r.status,
                _fmt(r.accuracy, ".2f", 100),
                _fmt(r.size_mb, ".2f"),
                *latency,
                _fmt(r.throughput_ips, ".0f"),
                _fmt(r.load_s, ".2f"),
                style=None if ok else "yellow",
            )
    return table
