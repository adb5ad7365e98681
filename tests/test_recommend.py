"""`edgecifar recommend` on a hand-made bench table: the choice under each kind of constraint, ties, threads,
percentiles, unmeetable constraints with how far they are missed, and bad input."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from edgecifar.cli import app
from edgecifar.errors import BenchError, UsageError
from edgecifar.recommend import recommend


def row(model, variant, threads, acc, p50, size, status="ok", p99=None):
    return {"model": model, "variant": variant, "threads": threads, "status": status, "reason": "",
            "accuracy": acc, "latency_p50_ms": p50, "latency_p90_ms": p50 * 1.2 if p50 else None,
            "latency_p99_ms": p99 if p99 is not None else (p50 * 1.5 if p50 else None), "size_mb": size,
            "path": f"exported/{model}/{variant.replace(' ', '-').lower()}"}


ROWS = [
    row("scratch_cnn", "PyTorch", 1, 0.80, 0.60, 4.6),
    row("scratch_cnn", "ONNX INT8", 1, 0.79, 0.15, 1.2),
    row("lite0", "ONNX FP32", 1, 0.920, 3.00, 13.4, p99=3.2),
    row("lite0", "OpenVINO INT8", 1, 0.915, 1.20, 3.6, p99=9.0),  # fast at the median, a long tail
    row("lite0", "OpenVINO INT8", 2, 0.915, 0.70, 3.6, p99=1.0),
    row("lite0", "ONNX FP16", 1, None, None, 6.7, status="skipped"),
    row("lite0", "OpenVINO FP16", 1, 0.99, 0.01, 0.1, status="error"),  # never chosen, whatever its figures
]
RESULT = {"header": {}, "rows": ROWS}


def pick(**constraints):
    return recommend(RESULT, **constraints)


def test_no_constraints_gives_the_most_accurate():
    found = pick()
    assert found["met"] and found["choice"]["variant"] == "ONNX FP32" and found["considered"] == 5
    assert "most accurate" in found["reason"]


def test_latency_limit_with_a_tie_goes_to_the_faster():
    found = pick(max_latency_ms=2)
    assert (found["choice"]["variant"], found["choice"]["threads"]) == ("OpenVINO INT8", 2)
    assert found["runner_up"]["threads"] == 1 and len(found["eligible"]) == 4


def test_threads_restrict_the_rows():
    found = pick(max_latency_ms=2, threads=1)
    assert (found["choice"]["variant"], found["choice"]["threads"]) == ("OpenVINO INT8", 1)
    assert all(r["threads"] == 1 for r in found["eligible"])


def test_size_limit():
    found = pick(max_size_mb=2)
    assert found["choice"]["variant"] == "ONNX INT8"  # the only file under 2 MB
    found = pick(max_size_mb=5, min_accuracy=80)
    assert found["choice"]["variant"] == "OpenVINO INT8" and found["choice"]["threads"] == 2


def test_percentile_applies_the_limit_to_the_tail():
    assert pick(max_latency_ms=5, threads=1)["choice"]["variant"] == "ONNX FP32"
    found = pick(max_latency_ms=5, threads=1, min_accuracy=91.5, percentile="p99")
    assert found["choice"]["variant"] == "ONNX FP32"  # OpenVINO INT8's p99 of 9 ms is over the limit


def test_one_unmeetable_constraint_says_by_how_much():
    found = pick(max_latency_ms=0.1)
    assert not found["met"] and found["choice"] is None
    (short,) = found["shortfalls"]
    assert short["constraint"] == "max_latency_ms" and short["gap"] == pytest.approx(0.05)
    assert short["closest"]["variant"] == "ONNX INT8" and "0.05 ms" in found["reason"]


def test_constraints_that_conflict_report_each_gap():
    found = pick(min_accuracy=91, max_size_mb=2)
    assert not found["met"]
    gaps = {s["constraint"]: s for s in found["shortfalls"]}
    # best accuracy among files under 2 MB: 79 %, 12 points short; smallest file with >= 91 %: 3.6 MB, 1.6 over
    assert gaps["min_accuracy"]["gap"] == pytest.approx(12)
    assert gaps["min_accuracy"]["closest"]["variant"] == "ONNX INT8"
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
        recommend({"rows": [ROWS[-2]]})


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


MALFORMED = [None, "a string", ["a", "list"], {"status": "ok"},  # not rows, or rows with nothing in them
             {**ROWS[0], "accuracy": "high"}, {**ROWS[0], "latency_p50_ms": float("nan")},
             {**ROWS[0], "size_mb": None}, {**ROWS[0], "threads": "1"}, {**ROWS[0], "accuracy": 85.0}]


def test_malformed_rows_are_left_out_and_listed(tmp_path):
    found = recommend({"header": {}, "rows": ROWS + MALFORMED})
    assert found["choice"] is pick()["choice"] and found["considered"] == 5
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
    found = recommend(result, max_latency_ms=2.5)
    assert (found["choice"]["variant"], found["choice"]["threads"]) == ("OpenVINO INT8", 2)
    assert any("2 rows measured at more threads than the bench machine's 2 cores" in n for n in found["ignored"])
    found = recommend(result, max_latency_ms=2.5, threads=16)  # asked for: considered, labelled as run
    assert found["choice"]["threads"] == 16 and found["choice"]["variant"] == "ONNX FP32"
    assert "@16 threads" in found["reason"]
    assert "lite0 OpenVINO INT8 @16 (ran 2) threads" in recommend(result, max_size_mb=4, threads=16)["reason"]


def test_shipping_verdict_names_the_file_and_the_pareto_front_with_reasons():
    from edgecifar.recommend import shipping_verdict

    rows = ROWS + [row("airnet_m", "ONNX INT8", 1, 0.897, 0.55, 1.2), row("airnet_m", "ONNX FP32", 1, 0.897, 0.9, 4.5)]
    verdict = shipping_verdict({"header": {}, "rows": rows})  # 1 thread, p50 <= 1 ms, <= 5 MB
    assert verdict["recommendation"]["choice"]["model"] == "airnet_m"
    assert verdict["recommendation"]["choice"]["variant"] == "ONNX INT8"  # as accurate as FP32, and faster
    # at one thread: scratch INT8 (0.15 ms) < airnet INT8 (0.55 ms, +10.7 points) < lite0 OpenVINO INT8 (1.2 ms,
    # 91.5 %) < lite0 FP32 (3.0 ms, 92 %); the others are beaten on both
    front = [(f["row"]["model"], f["row"]["variant"]) for f in verdict["front"]]
    assert front == [("scratch_cnn", "ONNX INT8"), ("airnet_m", "ONNX INT8"), ("lite0", "OpenVINO INT8"),
                     ("lite0", "ONNX FP32")]
    assert "10.70 points more accurate" in verdict["front"][1]["reason"]
    assert verdict["lines"][0].startswith("ship (max-latency-ms 1 (p50), max-size-mb 5, 1 thread): exported/airnet_m/")
