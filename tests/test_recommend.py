"""`edgecifar recommend` on a hand-made bench table: the choice under each kind of constraint, ties, threads,
percentiles, unmeetable constraints with how far they are missed, and bad input."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from edgecifar.bench_rows import BenchResult
from edgecifar.cli import app
from edgecifar.errors import BenchError, UsageError
from edgecifar.recommend import recommend


def row(model, variant, threads, acc, p50, size, status="ok", p99=None):
    return {
        "model": model,
        "variant": variant,
        "threads": threads,
        "status": status,
        "reason": "",
        "accuracy": acc,
        "latency_p50_ms": p50,
        "latency_p90_ms": p50 * 1.2 if p50 else None,
        "latency_p99_ms": p99 if p99 is not None else (p50 * 1.5 if p50 else None),
        "size_mb": size,
        "path": f"exported/{model}/{variant.replace(' ', '-').lower()}",
    }


ROWS = [
    row("scratch_cnn", "PyTorch", 1, 0.80, 0.60, 4.6),
    row("scratch_cnn", "ONNX INT8", 1, 0.79, 0.15, 1.2),
    row("lite0", "ONNX FP32", 1, 0.920, 3.00, 13.4, p99=3.2),
    row("lite0", "OpenVINO INT8", 1, 0.915, 1.20, 3.6, p99=9.0),  # fast at the median, a long tail
    row("lite0", "OpenVINO INT8", 2, 0.915, 0.70, 3.6, p99=1.0),
    row("lite0", "ONNX FP16", 1, None, None, 6.7, status="skipped"),
    row("lite0", "OpenVINO FP16", 1, 0.99, 0.01, 0.1, status="error"),  # never chosen, whatever its figures
]
RESULT = {"header": {}, "rows": ROWS}  # a bench.json's JSON


def read(result: dict) -> BenchResult:
    return BenchResult.from_json(result)


def pick(**constraints):
    return recommend(read(RESULT), **constraints)


def test_no_constraints_gives_the_most_accurate():
    found = pick()
    assert found["met"] and found["choice"].variant == "ONNX FP32" and found["considered"] == 5
    assert "most accurate" in found["reason"]


def test_latency_limit_with_a_tie_goes_to_the_faster():
    found = pick(max_latency_ms=2)
    assert (found["choice"].variant, found["choice"].threads) == ("OpenVINO INT8", 2)
    assert found["runner_up"].threads == 1 and len(found["eligible"]) == 4


def test_threads_restrict_the_rows():
    found = pick(max_latency_ms=2, threads=1)
    assert (found["choice"].variant, found["choice"].threads) == ("OpenVINO INT8", 1)
    assert all(r.threads == 1 for r in found["eligible"])


def test_size_limit():
    found = pick(max_size_mb=2)
    assert found["choice"].variant == "ONNX INT8"  # the only file under 2 MB
    found = pick(max_size_mb=5, min_accuracy=80)
    assert found["choice"].variant == "OpenVINO INT8" and found["choice"].threads == 2


def test_percentile_applies_the_limit_to_the_tail():
    assert pick(max_latency_ms=5, threads=1)["choice"].variant == "ONNX FP32"
    found = pick(max_latency_ms=5, threads=1, min_accuracy=91.5, percentile="p99")
    assert found["choice"].variant == "ONNX FP32"  # OpenVINO INT8's p99 of 9 ms is over the limit


def test_one_unmeetable_constraint_says_by_how_much():
    found = pick(max_latency_ms=0.1)
    assert not found["met"] and found["choice"] is None
    (short,) = found["shortfalls"]
    assert short["constraint"] == "max_latency_ms" and short["gap"] == pytest.approx(0.05)
    assert short["closest"].variant == "ONNX INT8" and "0.05 ms" in found["reason"]


def test_constraints_that_conflict_report_each_gap():
    found = pick(min_accuracy=91, max_size_mb=2)
    assert not found["met"]
    gaps = {s["constraint"]: s for s in found["shortfalls"]}
    # best accuracy among files under 2 MB: 79 %, 12 points short; smallest file with >= 91 %: 3.6 MB, 1.6 over
    assert gaps["min_accuracy"]["gap"] == pytest.approx(12)
    assert gaps["min_accuracy"]["closest"].variant == "ONNX INT8"
    assert gaps["max_size_mb"]["gap"] == pytest.approx(1.6)
    assert "min-accuracy 91 is missed by 12 points" in found["reason"]


def test_bad_requests():
    with pytest.raises(BenchError, match="no rows measured at 4 threads"):
        pick(threads=4)
    with pytest.raises(UsageError, match="percentage"):
        pick(min_accuracy=150)
    with pytest.raises(UsageError, match="unknown latency percentile"):
        pick(percentile="p95")
    with pytest.raises(BenchError, match="no measured rows"):
        recommend(read({"rows": [ROWS[-2]]}))


def test_cli(tmp_path):
    (tmp_path / "bench.json").write_text(json.dumps(RESULT))
    runner = CliRunner()
    result = runner.invoke(app, ["recommend", str(tmp_path), "--max-latency-ms", "2", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "exported/lite0/openvino-int8" in result.output and "1 thread" in result.output
    result = runner.invoke(app, ["recommend", str(tmp_path / "bench.json"), "--max-size-mb", "0.5"])
    assert result.exit_code == 1 and "missed by 0.7 MB" in result.output
    result = runner.invoke(app, ["recommend", str(tmp_path / "none")])
    assert result.exit_code == BenchError.exit_code and result.output.startswith("error: no bench result")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "bench.json").write_text("[1, 2]")
    result = runner.invoke(app, ["recommend", str(tmp_path / "bad")])
    assert result.exit_code == BenchError.exit_code and "corrupt bench result" in result.output


@pytest.mark.parametrize("fraction", [0.9, 0.855, 1])
def test_min_accuracy_as_a_fraction_is_refused_with_the_percent_to_pass(fraction):
    with pytest.raises(UsageError, match=f"pass --min-accuracy {100 * fraction:g}"):
        pick(min_accuracy=fraction)
    result = CliRunner().invoke(app, ["recommend", "--min-accuracy", str(fraction)])
    assert result.exit_code == UsageError.exit_code and result.output.startswith("error: --min-accuracy")
    assert pick(min_accuracy=0)["met"]  # 0: no constraint, not ambiguous


MALFORMED = [
    None,
    "a string",
    ["a", "list"],
    {"status": "ok"},  # not rows, or rows with nothing in them
    {**ROWS[0], "accuracy": "high"},
    {**ROWS[0], "latency_p50_ms": float("nan")},
    {**ROWS[0], "size_mb": None},
    {**ROWS[0], "threads": "1"},
    {**ROWS[0], "accuracy": 85.0},
]


def test_malformed_rows_are_left_out_and_listed(tmp_path):
    found = recommend(read({"header": {}, "rows": ROWS + MALFORMED}))
    assert found["choice"] == pick()["choice"] and found["considered"] == 5
    assert len(found["ignored"]) == len(MALFORMED)
    assert "accuracy 'high'" in found["ignored"][4] and "latency_p50_ms nan" in found["ignored"][5]
    (tmp_path / "bench.json").write_text(json.dumps({"header": {}, "rows": ROWS + MALFORMED}))
    result = CliRunner().invoke(app, ["recommend", str(tmp_path)])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert result.output.count("warning: bench row") == len(MALFORMED)
    (tmp_path / "bench.json").write_text(json.dumps({"header": {}, "rows": MALFORMED}))
    result = CliRunner().invoke(app, ["recommend", str(tmp_path)])
    assert result.exit_code == BenchError.exit_code and "error: the bench result has no measured rows" in result.output
    (tmp_path / "bench.json").write_text(json.dumps({"rows": "not a list"}))
    result = CliRunner().invoke(app, ["recommend", str(tmp_path)])
    assert result.exit_code == BenchError.exit_code and "corrupt bench result" in result.output


def test_rows_at_more_threads_than_cores_are_left_out_unless_asked_for():
    over = {**row("lite0", "ONNX FP32", 16, 0.920, 2.0, 13.4, p99=30.0), "threads_runtime": 16}
    capped = {**row("lite0", "OpenVINO INT8", 16, 0.915, 0.5, 3.6), "threads_runtime": 2}
    result = {"header": {"machine": {"cores": 2, "cores_available": 2}}, "rows": ROWS + [over, capped]}
    found = recommend(read(result), max_latency_ms=2.5)
    assert (found["choice"].variant, found["choice"].threads) == ("OpenVINO INT8", 2)
    assert any("2 rows measured at more threads than the bench machine's 2 cores" in n for n in found["ignored"])
    found = recommend(read(result), max_latency_ms=2.5, threads=16)  # asked for: considered, labelled as run
    assert found["choice"].threads == 16 and found["choice"].variant == "ONNX FP32"
    assert "@16 threads" in found["reason"]
    assert "lite0 OpenVINO INT8 @16 (ran 2) threads" in recommend(read(result), max_size_mb=4, threads=16)["reason"]


def test_shipping_verdict_names_the_file_and_the_pareto_front_with_reasons():
    from edgecifar.recommend import shipping_verdict

    rows = ROWS + [row("airnet_m", "ONNX INT8", 1, 0.897, 0.55, 1.2), row("airnet_m", "ONNX FP32", 1, 0.897, 0.9, 4.5)]
    verdict = shipping_verdict(read({"header": {}, "rows": rows}))  # 1 thread, p50 <= 1 ms, <= 5 MB
    assert verdict["recommendation"]["choice"].model == "airnet_m"
    assert verdict["recommendation"]["choice"].variant == "ONNX INT8"  # as accurate as FP32, and faster
    # at one thread: scratch INT8 (0.15 ms) < airnet INT8 (0.55 ms, +10.7 points) < lite0 OpenVINO INT8 (1.2 ms,
    # 91.5 %) < lite0 FP32 (3.0 ms, 92 %); the others are beaten on both
    front = [(f["row"].model, f["row"].variant) for f in verdict["front"]]
    assert front == [
        ("scratch_cnn", "ONNX INT8"),
        ("airnet_m", "ONNX INT8"),
        ("lite0", "OpenVINO INT8"),
        ("lite0", "ONNX FP32"),
    ]
    assert "more accurate (+10.70 pt; top-1 only" in verdict["front"][1]["reason"]
    assert verdict["lines"][0].startswith("ship (max-latency-ms 1 (p50), max-size-mb 5, 1 thread): exported/airnet_m/")


# ---------------------------------------------------------------- ties (issue 27)


def hits_row(model, variant, hits, p50, size, trials=None, test_set="set-1"):
    """A bench row with per-image results (stats.per_image_record) and, optionally, latency trials."""
    from edgecifar import stats

    r = {
        **row(model, variant, 1, float(hits.mean()), p50, size),
        "correct": int(hits.sum()),
        "images": len(hits),
        "per_image": stats.per_image_record(hits, test_set),
    }
    if trials is not None:
        r["latency_trial_p50_ms"] = trials
    return r


def vectors(n=2000, seed=0):
    """A best file (90 %), one tied with it (89.9 %: 4 images gained, 6 lost), and one clearly worse (85 %)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    best = np.zeros(n, dtype=bool)
    best[rng.permutation(n)[:1800]] = True
    tied = best.copy()
    right, wrong = np.flatnonzero(best), np.flatnonzero(~best)
    tied[right[:6]], tied[wrong[:4]] = False, True
    worse = best.copy()
    worse[right[:100]] = False
    return best, tied, worse


def test_a_tie_ships_the_smaller_file_and_says_why():
    best, tied, _ = vectors()
    rows = [
        hits_row("lite0", "ONNX INT8", best, 0.92, 3.82, trials=[0.90, 0.92, 0.95, 0.91, 0.93]),
        hits_row("airnet_m-kd", "ONNX INT8", tied, 0.50, 1.16, trials=[0.49, 0.50, 0.52, 0.50, 0.51]),
    ]
    found = recommend(read({"header": {}, "rows": rows}))
    assert found["best"].model == "lite0" and found["choice"].model == "airnet_m-kd"
    assert found["method"] == "exact McNemar" and len(found["tied"]) == 2
    reason = found["reason"]
    assert reason.startswith(
        "airnet_m-kd ONNX INT8 @1 thread: tied with lite0 ONNX INT8 @1 thread on accuracy "
        "(p = 0.75, -0.10 pt), 3.3x smaller and 1.8x faster"
    ), reason


def test_a_clear_winner_is_shipped_whatever_its_size():
    best, _, worse = vectors()
    rows = [hits_row("lite0", "ONNX INT8", best, 0.92, 3.82), hits_row("scratch", "ONNX INT8", worse, 0.15, 1.17)]
    found = recommend(read({"header": {}, "rows": rows}))
    assert found["choice"].model == "lite0" and [t.row.model for t in found["tied"]] == ["lite0"]
    assert "significantly less accurate (p = " in found["reason"] and "-5.00 pt" in found["reason"]


def test_the_threshold_is_an_option():
    best, tied, _ = vectors()
    rows = [hits_row("lite0", "ONNX INT8", best, 0.92, 3.82), hits_row("airnet_m-kd", "ONNX INT8", tied, 0.5, 1.16)]
    assert recommend(read({"header": {}, "rows": rows}), alpha=0.05)["choice"].model == "airnet_m-kd"  # p = 0.75
    assert recommend(read({"header": {}, "rows": rows}), alpha=0.8)["choice"].model == "lite0"  # p < 0.8: not tied
    with pytest.raises(UsageError, match="--alpha"):
        recommend(read({"header": {}, "rows": rows}), alpha=1.5)
    result = CliRunner().invoke(app, ["recommend", "--alpha", "0"])
    assert result.exit_code == UsageError.exit_code and result.output.startswith("error: --alpha")


def test_without_per_image_results_ties_fall_back_to_wilson_intervals_and_say_so():
    rows = [
        {**row("lite0", "ONNX INT8", 1, 0.8998, 0.92, 3.82), "correct": 8998, "images": 10000},
        {**row("airnet_m-kd", "ONNX INT8", 1, 0.8990, 0.50, 1.16), "correct": 8990, "images": 10000},
        {**row("scratch", "ONNX INT8", 1, 0.8530, 0.15, 1.17), "correct": 8530, "images": 10000},
    ]
    found = recommend(read({"header": {}, "rows": rows}))
    assert found["choice"].model == "airnet_m-kd" and found["method"] == "Wilson intervals"
    assert "Wilson intervals overlap" in found["reason"] and "not a paired test" in found["reason"]
    # test sets that differ cannot be paired either: the same fallback
    best, tied, _ = vectors()
    rows = [
        hits_row("lite0", "ONNX INT8", best, 0.92, 3.82),
        hits_row("airnet_m-kd", "ONNX INT8", tied, 0.5, 1.16, test_set="another"),
    ]
    assert recommend(read({"header": {}, "rows": rows}))["method"] == "Wilson intervals"


def test_the_pareto_front_respects_ties():
    from edgecifar.recommend import shipping_verdict

    best, tied, worse = vectors()
    rows = [
        hits_row("lite0", "ONNX INT8", best, 0.92, 3.82, trials=[0.90, 0.92, 0.95, 0.91, 0.93]),
        hits_row("airnet_m-kd", "ONNX INT8", tied, 0.50, 1.16, trials=[0.49, 0.50, 0.52, 0.50, 0.51]),
        hits_row("scratch", "ONNX INT8", worse, 0.15, 1.17, trials=[0.14, 0.15, 0.16, 0.15, 0.15]),
        # as accurate as airnet_m-kd and its latency inside airnet's noise: on the front beside it
        hits_row("airnet_m-kd", "LiteRT INT8", tied, 0.505, 1.15, trials=[0.48, 0.53, 0.50, 0.51, 0.49]),
    ]
    verdict = shipping_verdict(read({"header": {}, "rows": rows}))
    front = [(f["row"].model, f["row"].variant) for f in verdict["front"]]
    # lite0 is more accurate than airnet_m-kd by 2 images of 2,000, not significantly, and 1.8x slower: off it
    assert front == [("scratch", "ONNX INT8"), ("airnet_m-kd", "ONNX INT8"), ("airnet_m-kd", "LiteRT INT8")]
    assert "significantly more accurate (p = " in verdict["front"][1]["reason"]
    assert "as accurate (p = 1, +0.00 pt), as fast (p50 ratio" in verdict["front"][2]["reason"]


def test_recommend_names_the_machine_and_warns_when_it_is_another(tmp_path):
    from edgecifar.utils import machine_info

    here = machine_info()
    found = recommend(
        read({"header": {"machine": {"cpu": here["cpu"], "isa": here["isa"]}, "date": "2026-11-30"}, "rows": ROWS})
    )
    assert found["machine"].startswith(f"rows measured on {here['cpu']}") and found["machine_warning"] is None
    other = {"header": {"machine": {"cpu": "Some Other CPU 9000", "isa": ["avx2"]}, "date": "2026-11-30"}, "rows": ROWS}
    found = recommend(read(other))
    assert "Some Other CPU 9000 (avx2)" in found["machine_warning"] and "not on this" in found["machine_warning"]
    (tmp_path / "bench.json").write_text(json.dumps(other))
    result = CliRunner().invoke(app, ["recommend", str(tmp_path)])
    assert result.exit_code == 0 and result.output.count("warning: the bench was measured on Some Other CPU 9000") == 1
    assert found["load_warning"] is None  # no load recorded: nothing said


def test_recommend_warns_when_the_bench_ran_on_a_busy_cpu(tmp_path):
    """Latencies taken beside other work are the contention's: recommend still answers, and says so once."""
    machine = {"cpu": "Some CPU", "isa": ["avx2"], "cores_available": 2}
    quiet = {"header": {"machine": machine, "load_average": [0.3, 1.1]}, "rows": ROWS}
    assert recommend(read(quiet))["load_warning"] is None
    busy = {"header": {"machine": machine, "load_average": [1.5, 4.6]}, "rows": ROWS}
    found = recommend(read(busy))
    assert "load average up to 4.6 on 2 cores" in found["load_warning"] and found["met"]
    (tmp_path / "bench.json").write_text(json.dumps(busy))
    result = CliRunner().invoke(app, ["recommend", str(tmp_path)])
    assert result.exit_code == 0 and result.output.count("latencies are contended") == 1
