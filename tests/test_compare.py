"""`edgecifar compare A B`: two files measured now on one test set, or two rows of a bench result, compared on the
same images (accuracies, discordant counts, exact McNemar p, paired bootstrap interval); a file against itself
(p = 1, zero width); refusal (one line, exit 2) of results from different test sets or without per-image
results; two groups of seed runs compared with Welch's interval."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from edgecifar import stats
from edgecifar.cli import app
from edgecifar.compare import compare
from edgecifar.errors import UsageError

pytest.register_assert_rewrite("export_fixtures")
pytest_plugins = ["export_fixtures"]  # tiny_run, exported: the session-wide export shared with test_bench.py


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    text = result.output.strip()
    assert text.startswith("error:") and "Traceback" not in text and len(text.splitlines()) <= 3, text
    return text


def test_two_files_on_one_test_set(exported, tiny_run):
    from edgecifar.data import load_data
    from edgecifar.runs import read_config
    from edgecifar.runtime import load_artifact

    out_dir, entries = exported
    fp32 = next(out_dir / e.path for e in entries if e.format == "onnx" and e.precision == "fp32")
    int8 = next(out_dir / e.path for e in entries if e.format == "onnx" and e.precision == "int8")
    config = read_config(tiny_run)
    data, cache = config.data["source"], config.train["cache_dir"]
    result = invoke("compare", fp32, int8, "--data", data, "--cache-dir", cache)
    assert result.exit_code == 0, result.output
    splits = load_data(data, cache)
    a, b = (load_artifact(f).run(splits.test_x).argmax(1) == splits.test_y for f in (fp32, int8))
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    assert f"discordant: A right and B wrong {only_a}; B right and A wrong {only_b}" in result.output
    assert f"exact McNemar p = {stats.mcnemar_exact(only_a, only_b):.4g}" in result.output
    assert f"top-1 {100 * a.mean():.2f} %" in result.output and f"top-1 {100 * b.mean():.2f} %" in result.output
    # a file against itself: p = 1 and a zero-width interval
    found = compare(str(int8), str(int8), data=data, cache_dir=cache)
    assert found["comparison"].p_value == 1.0 and found["comparison"].interval == (0.0, 0.0)
    assert "p = 1 (two-sided)" in found["lines"][4] and "interval [+0.00, +0.00] points" in found["lines"][5]
    one_line_error(invoke("compare", fp32, int8))  # no --data, no --bench


def bench_file(tmp_path, rows) -> str:
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"header": {}, "rows": rows}))
    return str(path)


def bench_row(model, variant, hits, test_set="set-1", threads=1):
    return {
        "model": model,
        "variant": variant,
        "threads": threads,
        "status": "ok",
        "accuracy": float(hits.mean()),
        "correct": int(hits.sum()),
        "images": len(hits),
        "path": f"exported/{model}.onnx",
        "per_image": stats.per_image_record(hits, test_set),
    }


def test_two_bench_rows_are_compared_without_running_anything(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.random(1000) < 0.9
    b = a.copy()
    b[:40] = ~b[:40]
    rows = [
        bench_row("m1", "ONNX INT8", a),
        bench_row("m1", "ONNX INT8", a, threads=2),
        bench_row("m2", "ONNX INT8", b),
    ]
    path = bench_file(tmp_path, rows)
    found = compare("exported/m1.onnx", "m2 ONNX INT8", bench=path)
    c = found["comparison"]
    assert (c.b, c.c) == (int(np.sum(a & ~b)), int(np.sum(~a & b))) and c.n == 1000
    assert c.interval[0] <= c.difference <= c.interval[1]
    result = invoke("compare", "m1 ONNX INT8", "m1 ONNX INT8", "--bench", path)
    assert result.exit_code == 0 and "exact McNemar p = 1 (two-sided)" in result.output, result.output


def test_different_test_sets_are_refused(tmp_path):
    hits = np.ones(100, dtype=bool)
    path = bench_file(tmp_path, [bench_row("m1", "ONNX INT8", hits), bench_row("m2", "ONNX INT8", hits, "set-2")])
    text = one_line_error(invoke("compare", "m1 ONNX INT8", "m2 ONNX INT8", "--bench", path))
    assert "different test sets" in text and "set-1" in text and "set-2" in text
    with pytest.raises(UsageError, match="different test sets"):
        compare("m1 ONNX INT8", "m2 ONNX INT8", bench=path)
    # the same fingerprint with another number of images is not the same test set either
    path = bench_file(tmp_path, [bench_row("m1", "ONNX INT8", hits), bench_row("m2", "ONNX INT8", hits[:50])])
    assert "different test sets" in one_line_error(invoke("compare", "m1 ONNX INT8", "m2 ONNX INT8", "--bench", path))


def test_rows_that_cannot_be_compared_say_why(tmp_path):
    hits = np.ones(100, dtype=bool)
    old = {k: v for k, v in bench_row("old", "ONNX INT8", hits).items() if k != "per_image"}
    path = bench_file(tmp_path, [bench_row("m1", "ONNX INT8", hits), old])
    assert "no per-image results" in one_line_error(invoke("compare", "m1 ONNX INT8", "old ONNX INT8", "--bench", path))
    assert "no measured row of nothing" in one_line_error(invoke("compare", "m1 ONNX INT8", "nothing", "--bench", path))
    other = hits.copy()
    other[0] = False
    same_path = {**bench_row("m1", "OpenVINO FP32 bf16", other), "path": "exported/m1.onnx"}
    path = bench_file(tmp_path, [bench_row("m1", "ONNX INT8", hits), same_path])
    assert "name one of" in one_line_error(invoke("compare", "exported/m1.onnx", "m1 ONNX INT8", "--bench", path))
    assert one_line_error(invoke("compare", "a", "b", "--bench", tmp_path / "none"), 7).startswith(
        "error: no bench result"
    )
