"""`edgecifar compare A B`: are two files' accuracies different, on the same test images?

Each side is an exported model file measured now on `--data`, or a row of a bench result (`--bench`), named by
its file path or by "model variant" as the bench's tables show it; either way its per-image results and the
test set's fingerprint (edgecifar.stats). Two results from different test sets are refused: a paired test needs
the same images in the same order. The answer: both accuracies with their Wilson intervals, the discordant
counts, the exact McNemar p-value and the paired bootstrap interval of the difference (docs/statistics.md).

Two groups of training runs (one recipe, several seeds: edgecifar.seeds) are compared over their seeds instead:
the difference of the mean test accuracies with Welch's interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import stats
from .bench_rows import BenchResult
from .errors import UsageError
from .records import BenchRow


@dataclass(frozen=True)
class Measured:
    """One side of a comparison: what it is, the test set it was counted on and which images it got right."""

    name: str
    test_set: str  # stats.test_set_fingerprint
    hits: np.ndarray  # bool [images]
    source: str  # "bench <file>" or "measured now on <data>"


def compare(
    a: str,
    b: str,
    bench: Path | str | None = None,
    data: str | None = None,
    cache_dir: Path | str | None = None,
    alpha: float = stats.ALPHA,
) -> dict[str, Any]:
    """Compare two files (or bench rows, with `bench`) on the same test images; or, where both name seed runs
    (edgecifar.seeds.is_group), two models over their seeds (seeds.compare_seeds).

    Returns {"a", "b" (Measured), "comparison" (stats.PairedComparison), "alpha", "lines" (what the command
    prints)}. Raises UsageError for results from different test sets (exit 2) or a bad request, BenchError for an
    unreadable bench, ArtifactError/DataError for unreadable files or data.
    """
    if not 0 < alpha < 1:
        raise UsageError(f"--alpha is a significance level between 0 and 1, got {alpha:g}")
    from .seeds import compare_seeds, is_group, load_group

    if bench is None and is_group(a) and is_group(b):  # two models over their training seeds
        return {**compare_seeds(load_group(a), load_group(b), alpha), "alpha": alpha}
    if bench is not None:
        from .bench_rows import load_result

        result = load_result(bench)
        first, second = (from_bench(result, x, str(bench)) for x in (a, b))
    else:
        if not data:
            raise UsageError(
                "compare needs --data (the test set to measure both files on) or --bench (a bench "
                "result that holds both)"
            )
        first, second = measure_files([a, b], data, cache_dir)
    if first.test_set != second.test_set or len(first.hits) != len(second.hits):
        raise UsageError(
            f"{first.name} and {second.name} were measured on different test sets ({first.test_set}, "
            f"{len(first.hits):,} images; {second.test_set}, {len(second.hits):,} images): a paired "
            f"comparison needs the same images in the same order"
        )
    found = stats.paired_comparison(first.hits, second.hits)
    return {"a": first, "b": second, "comparison": found, "alpha": alpha, "lines": lines(first, second, found, alpha)}


def lines(a: Measured, b: Measured, c: stats.PairedComparison, alpha: float) -> list[str]:
    """The answer, one fact a line."""

    def side(tag: str, m: Measured, correct: int) -> str:
        low, high = stats.wilson_interval(correct, c.n)
        return (
            f"{tag}: {m.name}: top-1 {100 * correct / c.n:.2f} % ({correct:,} of {c.n:,}; Wilson 95 % interval "
            f"{100 * low:.2f}-{100 * high:.2f} %)"
        )

    low, high = (100 * x for x in c.interval)
    if c.significant(alpha):
        verdict = f"different at alpha {alpha:g}: {'A' if c.difference > 0 else 'B'} is more accurate"
    else:
        verdict = f"not significantly different at alpha {alpha:g} (tied on accuracy)"
    return [
        side("A", a, c.correct_a),
        side("B", b, c.correct_b),
        f"paired on the same {c.n:,} test images (test set {a.test_set}; A: {a.source}; B: {b.source})",
        f"discordant: A right and B wrong {c.b:,}; B right and A wrong {c.c:,}",
        f"exact McNemar p = {c.p_value:.4g} (two-sided)",
        f"A - B: {100 * c.difference:+.2f} points, paired bootstrap 95 % interval [{low:+.2f}, {high:+.2f}] points",
        verdict,
    ]


def from_bench(result: BenchResult, wanted: str, source: str) -> Measured:
    """The bench row `wanted` names (its file path as the row records it, the same file by another path, or
    "model variant"), with its per-image results. UsageError when no row or several different ones match, or
    the row has no per-image results (a bench written before they were kept)."""
    from .bench_rows import model_shown

    rows = [r for r in result if r.status == "ok"]
    target = Path(wanted).resolve()

    def named(r: BenchRow) -> bool:
        label = f"{model_shown(r)} {r.variant}"
        if wanted in (r.path, label, f"{r.model} {r.variant}"):
            return True
        return bool(r.path) and Path(str(r.path)).resolve() == target

    found = [r for r in rows if named(r)]
    if not found:
        raise UsageError(
            f"no measured row of {wanted} in {source} (name a row by its file path or as "
            f"'MODEL VARIANT', e.g. '{model_shown(rows[0])} {rows[0].variant}')"
            if rows
            else f"{source} has no measured rows"
        )
    distinct = {(stats.row_hits(r) or ("", np.zeros(0)))[1].tobytes(): r for r in found}
    if len(distinct) > 1:  # e.g. an OpenVINO FP32 file's f32 and bf16 rows: the same path, other results
        names = ", ".join(sorted({f"'{model_shown(r)} {r.variant}'" for r in distinct.values()}))
        raise UsageError(f"{wanted} names rows with different results in {source}: name one of {names}")
    row = found[0]
    got = stats.row_hits(row)
    if got is None:
        raise UsageError(
            f"the row of {wanted} in {source} has no per-image results (a bench written before they "
            f"were kept): bench it again, or compare the files with --data"
        )
    return Measured(f"{model_shown(row)} {row.variant} ({row.path})", got[0], got[1], f"bench {source}")


def measure_files(
    paths: Sequence[str], data: str, cache_dir: Path | str | None = None, batch: int = 500
) -> list[Measured]:
    """Run each model file over the test split of `data` (decoded at the file's input size) with its own
    runtime, the device path (edgecifar.runtime). DataError/ArtifactError for what cannot be read; UsageError
    when a file's classes are not the data's."""
    from .data import load_data
    from .runtime import load_artifact

    found, loaded = [], {}
    for path in paths:
        artifact = load_artifact(path)
        size = (
            tuple(int(v) for v in artifact.input_size)
            if all(isinstance(v, (int, np.integer)) and v > 0 for v in artifact.input_size)
            else None
        )
        if size not in loaded:
            splits = load_data(data, cache_dir, input_size=size)
            loaded[size] = (splits, stats.test_set_fingerprint(splits.test_y, splits.test_x, splits.classes))
        splits, fingerprint = loaded[size]
        if list(artifact.classes) != list(splits.classes):
            raise UsageError(f"{path} classifies {artifact.classes}, the test set of {data} has {splits.classes}")
        preds = np.concatenate(
            [artifact.run(splits.test_x[i : i + batch]).argmax(1) for i in range(0, len(splits.test_y), batch)]
        )
        found.append(Measured(str(path), fingerprint, preds == splits.test_y, f"measured now on {data}"))
        del artifact
    return found
