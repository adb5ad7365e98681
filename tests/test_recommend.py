"""`edgecifar recommend` on a hand-made bench table: the choice under each kind of constraint, ties, threads,
percentiles, unmeetable constraints with how far they are missed, and bad input."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from edgecifar.cli import app
from edgecifar.errors import BenchError
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
    with pytest.raises(BenchError, match="percentage"):
        pick(min_accuracy=150)
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
