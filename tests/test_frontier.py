"""The frontier on synthetic bench rows: families from the registry, per-family Pareto fronts, the budget table
(which family's best file wins, ties, what is tested and what is one run), crossovers, and the command."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from edgecifar.bench_rows import BenchResult
from edgecifar.cli import app
from edgecifar.errors import BenchError, UsageError
from edgecifar.frontier import (
    NOT_TESTED,
    build_frontier,
    crossovers,
    pareto_front,
    points_from_rows,
)
from edgecifar.records import BenchRow
from edgecifar.stats import per_image_record


def points_of(rows: list[dict], *args, **kwargs):
    """points_from_rows on rows as bench.json holds them."""
    return points_from_rows([BenchRow.from_json(r) for r in rows], *args, **kwargs)


def frontier_of(results: dict | list[dict], *args, **kwargs):
    """build_frontier on bench results as bench.json holds them."""
    read = [BenchResult.from_json(r) for r in ([results] if isinstance(results, dict) else results)]
    return build_frontier(read, *args, **kwargs)


N = 1000  # test images of the synthetic bench


def hits(correct: int, first: int = 0) -> np.ndarray:
    """A hit vector of N images with `correct` ones, starting at image `first` (wrapping)."""
    v = np.zeros(N, bool)
    v[(first + np.arange(correct)) % N] = True
    return v


def row(
    model: str,
    run: str,
    variant: str,
    latency: float,
    size: int,
    correct: int,
    *,
    threads: int = 1,
    per_image: np.ndarray | None = None,
    test_set: str = "set-a",
    fmt: str = "onnx",
    cap=None,
) -> dict:
    """A bench row as bench writes it (the fields the frontier reads)."""
    r = {
        "model": model,
        "source_run": run,
        "variant": variant,
        "format": fmt,
        "threads": threads,
        "status": "ok",
        "accuracy": correct / N,
        "correct": correct,
        "images": N,
        "size_bytes": size,
        "latency_p50_ms": latency,
        "input_size": "32x32",
        "path": f"exported/{run}/{variant.replace(' ', '-')}",
        "isa": {"cap": cap},
    }
    if per_image is not None:
        r["per_image"] = per_image_record(per_image, test_set)
    return r


def bench(rows: list[dict]) -> dict:
    return {"header": {"machine": {"cpu": "Test CPU", "cores": 2, "isa": ["avx2"]}}, "rows": rows}


SCRATCH_FAST = row("airnet_s", "airnet_s-kd", "ONNX INT8", 0.3, 500_000, 880)
SCRATCH_MID = row("airnet_m", "airnet_m-kd", "ONNX INT8", 0.9, 1_100_000, 900)
SCRATCH_SLOW = row("airnet_l", "airnet_l", "ONNX FP32", 3.0, 7_900_000, 895)  # dominated by SCRATCH_MID
TRANSFER_MID = row("efficientnet_lite0", "efficientnet_lite0", "ONNX INT8", 0.8, 3_800_000, 905)
TRANSFER_BIG = row("mobilenet_v2", "mobilenet_v2-96", "ONNX FP32", 2.5, 9_000_000, 930)


def test_families_come_from_the_registry_and_baselines_are_left_out():
    rows = [
        SCRATCH_MID,
        TRANSFER_MID,
        {**SCRATCH_MID, "format": "pytorch", "path": "runs/x/model.safetensors"},
        {**TRANSFER_MID, "isa": {"cap": "avx2"}, "latency_p50_ms": 3.0},  # a capped INT8 path: not native
        {**SCRATCH_MID, "threads": 2, "latency_p50_ms": 0.5},  # the same file at 2 threads: latency from 1
        row("some_timm_net", "t", "ONNX FP32", 1.0, 1, 500),
    ]
    points, notes = points_of(rows)
    assert {p.label: p.family for p in points} == {
        "airnet_m-kd ONNX INT8": "scratch",
        "efficientnet_lite0 ONNX INT8": "transfer",
        "t ONNX FP32": "other",
    }
    assert {p.label: p.latency_ms for p in points}["airnet_m-kd ONNX INT8"] == 0.9
    assert any("PyTorch baseline" in n for n in notes) and any("capped INT8 path" in n for n in notes)
    assert any("some_timm_net" in n for n in notes)
    mid = next(p for p in points if p.run == "airnet_m-kd")
    assert mid.low < 0.9 < mid.high and mid.high - mid.low == pytest.approx(0.0372, abs=0.002)  # Wilson, n=1000
    (own,) = points_of([{**SCRATCH_MID, "accuracy_low": 0.88, "accuracy_high": 0.91}])[0]
    assert (own.low, own.high) == (0.88, 0.91)  # the interval bench recorded, where the row has one


def test_pareto_front_per_family():
    points, _ = points_of(
        [SCRATCH_FAST, SCRATCH_MID, SCRATCH_SLOW, row("airnet_t", "airnet_t-kd", "ONNX FP32", 0.3, 300_000, 880)]
    )
    assert [p.label for p in pareto_front(points, "latency")] == ["airnet_s-kd ONNX INT8", "airnet_m-kd ONNX INT8"]
    # on size, the smaller file of equal top-1 is the one on the front
    assert [p.label for p in pareto_front(points, "size")] == ["airnet_t-kd ONNX FP32", "airnet_m-kd ONNX INT8"]
    fr = frontier_of(bench([SCRATCH_FAST, SCRATCH_MID, SCRATCH_SLOW, TRANSFER_MID, TRANSFER_BIG]))
    assert [p.label for p in fr.fronts["latency"]["transfer"]] == [
        "efficientnet_lite0 ONNX INT8",
        "mobilenet_v2-96 ONNX FP32",
    ]


def test_budget_table_says_which_family_wins_and_that_one_run_is_not_tested():
    fr = frontier_of(
        bench([SCRATCH_FAST, SCRATCH_MID, SCRATCH_SLOW, TRANSFER_MID, TRANSFER_BIG]),
        latency_budgets=(0.25, 0.5, 1.0, 4.0),
        size_budgets=(128_000, 4_000_000),
    )
    by = {v.budget: v for v in fr.budgets["latency"]}
    assert by[0.25].winner is None and by[0.25].test == "no file fits"
    assert by[0.5].winner == "scratch" and by[0.5].test == "only scratch fits"
    assert by[1.0].winner == "transfer" and by[1.0].best["scratch"].run == "airnet_m-kd"  # 90.5 against 90.0
    assert by[1.0].difference == pytest.approx(0.005) and by[1.0].test == NOT_TESTED
    assert by[4.0].best["transfer"].run == "mobilenet_v2-96" and by[4.0].winner == "transfer"
    size = {v.budget: v for v in fr.budgets["size"]}
    assert size[128_000].winner is None and size[4_000_000].best["transfer"].run == "efficientnet_lite0"
    assert any("not tested" in n for n in fr.notes)


def test_equal_top1_is_a_tie():
    twin = {**TRANSFER_MID, "correct": 900, "accuracy": 0.9}
    fr = frontier_of(bench([SCRATCH_MID, twin]), latency_budgets=(1.0,), size_budgets=(4_000_000,))
    verdict = fr.budgets["latency"][0]
    assert verdict.winner == "tie" and verdict.leader is None and verdict.difference == 0


def test_paired_results_decide_ties_and_significant_wins():
    """Per-image results on one test set: the exact McNemar test says whether the leader's margin is real."""
    close = [
        row("airnet_m", "airnet_m-kd", "ONNX INT8", 0.9, 1_100_000, 900, per_image=hits(900)),
        row("efficientnet_lite0", "efficientnet_lite0", "ONNX INT8", 0.8, 3_800_000, 905, per_image=hits(905, first=3)),
    ]  # 8 images only the transfer file gets, 3 only the scratch one
    v = frontier_of(bench(close), latency_budgets=(1.0,)).budgets["latency"][0]
    assert v.test == "exact McNemar" and v.winner == "tie" and v.leader == "transfer"
    assert v.p_value == pytest.approx(0.2266, abs=1e-3)  # binomial(3; 11, 1/2), two-sided
    clear = [
        close[0],
        row("efficientnet_lite0", "efficientnet_lite0", "ONNX INT8", 0.8, 3_800_000, 950, per_image=hits(950)),
    ]
    v = frontier_of(bench(clear), latency_budgets=(1.0,)).budgets["latency"][0]
    assert v.winner == "transfer" and v.p_value < 1e-10 and v.difference == pytest.approx(0.05)


def test_results_on_different_test_sets_are_not_paired():
    rows = [
        row("airnet_m", "airnet_m-kd", "ONNX INT8", 0.9, 1_100_000, 900, per_image=hits(900)),
        row(
            "efficientnet_lite0",
            "efficientnet_lite0",
            "ONNX INT8",
            0.8,
            3_800_000,
            950,
            per_image=hits(950),
            test_set="set-b",
        ),
    ]
    v = frontier_of(bench(rows), latency_budgets=(1.0,)).budgets["latency"][0]
    assert v.test == NOT_TESTED and v.p_value is None and v.winner == "transfer"
    fr = frontier_of(bench([rows[0], TRANSFER_MID]), latency_budgets=(1.0,))
    assert fr.budgets["latency"][0].test == NOT_TESTED  # one of the two lacks per-image results
    assert "1 of 2 files carry per-image results" in " ".join(fr.notes)


def test_the_crossover_is_named():
    points, _ = points_of([SCRATCH_FAST, SCRATCH_MID, TRANSFER_MID, TRANSFER_BIG])
    # wherever both families have a file within the latency (from 0.8 ms), transfer's best is the more accurate
    assert crossovers(points, "latency") == []
    cheap_transfer = row("mobilenet_v2", "mobilenet_v2-32", "ONNX INT8", 0.2, 2_000_000, 850)
    points, _ = points_of([SCRATCH_FAST, SCRATCH_MID, cheap_transfer, TRANSFER_BIG])
    (cross,) = crossovers(points, "latency")  # scratch leads from 0.3 ms (88 against 85), transfer from 2.5 ms
    assert (cross.before, cross.after, cross.cost, cross.point) == (
        "scratch",
        "transfer",
        2.5,
        "mobilenet_v2-96 ONNX FP32",
    )
    (cross,) = crossovers(points, "size")  # 90.0 in 1.1 MB against 85.0 in 2 MB; 93.0 in 9 MB
    assert (cross.before, cross.after, cross.cost) == ("scratch", "transfer", 9_000_000)


def test_several_bench_results_combine_and_the_last_measurement_counts():
    """New runs benched on their own beside the reference bench; a file in both counts as the later bench's."""
    later = {**TRANSFER_MID, "latency_p50_ms": 0.45}
    other_machine = {"header": {"machine": {"cpu": "Other CPU", "cores": 4}}, "rows": [later, TRANSFER_BIG]}
    fr = frontier_of([bench([SCRATCH_FAST, SCRATCH_MID, TRANSFER_MID]), other_machine], latency_budgets=(0.5,))
    assert len(fr.points) == 4 and {p.label: p.latency_ms for p in fr.points}["efficientnet_lite0 ONNX INT8"] == 0.45
    assert fr.budgets["latency"][0].winner == "transfer"  # 90.5 within 0.5 ms now
    assert any("2 machines" in n and "Other CPU" in n for n in fr.notes)


def test_the_command_writes_all_three_files_and_prints_the_budgets(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(bench([SCRATCH_FAST, SCRATCH_MID, TRANSFER_MID, TRANSFER_BIG])))
    out = tmp_path / "frontier"
    result = CliRunner().invoke(app, ["frontier", str(path), "--out", str(out)], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "budget: batch-1 p50 latency" in result.output and "transfer by 0.50 pt" in result.output
    assert {f.name for f in out.iterdir()} == {"frontier.json", "frontier.md", "frontier.png"}
    data = json.loads((out / "frontier.json").read_text())
    assert data["command"].startswith("uv run edgecifar frontier") and data["machine"].startswith("Test CPU")
    assert [b["winner"] for b in data["budgets"]["latency"]] == [None, "scratch", "transfer", "transfer", "transfer"]
    md = (out / "frontier.md").read_text()
    assert "| 0.5 ms | airnet_s-kd ONNX INT8 (0.300 ms) | 88.00" in md and "![frontier](frontier.png)" in md
    assert (out / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    only = CliRunner().invoke(app, ["frontier", str(path), "--out", str(tmp_path / "f2"), "--format", "openvino"])
    assert only.exit_code == BenchError.exit_code and "for openvino" in only.output
    assert not (tmp_path / "f2").exists() or not any((tmp_path / "f2").iterdir())


def test_bad_input_is_one_line(tmp_path):
    bad = CliRunner().invoke(app, ["frontier", str(tmp_path / "missing.json"), "--out", str(tmp_path / "o")])
    assert bad.exit_code == BenchError.exit_code and len(bad.output.strip().splitlines()) == 1
    (tmp_path / "b.json").write_text(json.dumps(bench([SCRATCH_MID])))
    fmt = CliRunner().invoke(app, ["frontier", str(tmp_path / "b.json"), "--format", "nonsense"])
    assert fmt.exit_code == UsageError.exit_code and "--format nonsense" in fmt.output
    assert "Traceback" not in bad.output + fmt.output
