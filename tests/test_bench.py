"""`edgecifar bench`: rows for every artifact and thread setting (fields present and sane, accuracy equal to an
independent count), the four report files, fresh worker processes, and bad input (one line, non-zero exit, no
partial reports). Never asserts on timing values, only on their structure."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgecifar.bench import bench, run_worker
from edgecifar.cli import app
from edgecifar.errors import ArtifactError, BenchError

pytest.register_assert_rewrite("export_fixtures")
from export_fixtures import CLASSES  # noqa: E402

pytest_plugins = ["export_fixtures"]  # tiny_run, exported: the session-wide export shared with test_export.py

FAST = {"latency_seconds": 0.05, "throughput_seconds": 0.05}
VARIANTS = ["PyTorch"] + [f"{f} {p}" for f in ("ONNX", "OpenVINO") for p in ("FP32", "FP16", "INT8")]
REPORTS = ("bench.json", "bench.csv", "bench.md", "bench.png")


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_line_error(result, code: int) -> None:
    assert result.exit_code == code, result.output
    text = result.output.strip()
    assert text.startswith("error:") and "Traceback" not in text, text
    assert len(text.splitlines()) <= 3, text  # one line, soft-wrapped at most


@pytest.fixture(scope="module")
def benched(exported, tiny_run, tmp_path_factory):
    out_dir, _ = exported
    results = tmp_path_factory.mktemp("bench") / "results"
    rows = bench([out_dir], threads=(1, 2), batch_size=32, out_dir=results, runs_dir=tiny_run.parent, **FAST)
    return rows, results


@pytest.fixture()
def exported_copy(exported, tiny_run, tmp_path) -> Path:
    """A private copy of the export (this file's tests damage it), with its run folder beside it."""
    out_dir, _ = exported
    copy = tmp_path / "exported"
    shutil.copytree(out_dir, copy)
    shutil.copytree(tiny_run, tmp_path / "runs" / tiny_run.name)
    return copy


def test_one_row_per_artifact_and_thread_setting(benched, exported):
    rows, _ = benched
    assert sorted((r["variant"], r["threads"]) for r in rows) == sorted((v, n) for v in VARIANTS for n in (1, 2))
    assert all(r["status"] == "ok" and r["reason"] == "" for r in rows)
    _, entries = exported
    for e in entries:  # file size and checksum are the manifest's
        row = next(r for r in rows if r["format"] == e["format"] and r["precision"] == e["precision"])
        assert row["size_bytes"] == e["bytes"] and row["sha256"] == e["sha256"] and row["checksum"] == "ok"


def test_fields_present_and_sane(benched):
    rows, _ = benched
    params, macs = {r["params"] for r in rows}, {r["macs"] for r in rows}
    assert len(params) == len(macs) == 1 and params.pop() > 0 and macs.pop() > 0  # one architecture
    for r in rows:
        assert 0 < r["latency_p50_ms"] <= r["latency_p90_ms"] <= r["latency_p99_ms"]
        assert r["latency_iterations"] >= 20 and r["throughput_ips"] > 0 and r["load_s"] >= 0
        assert r["threads_runtime"] == r["threads"]  # the runtime reports the pinned count
        assert r["images"] == 3 * 70 and r["correct"] == round(r["accuracy"] * r["images"])
        assert list(r["per_class"]) == CLASSES and all(0 <= v <= 1 for v in r["per_class"].values())
        assert r["cpu"] and r["cores"] >= 1 and r["date"] and r["device"] == "cpu"
        assert {"onnxruntime", "openvino", "numpy"} <= set(r["versions"])
    for variant in VARIANTS:  # accuracy is counted once per artifact and shared by its thread settings
        pair = [r for r in rows if r["variant"] == variant]
        assert pair[0]["correct"] == pair[1]["correct"] and pair[0]["per_class"] == pair[1]["per_class"]


def test_accuracy_equals_an_independent_count(benched, exported, tiny_run):
    """Every figure is the artifact's own: its runtime alone, outside the bench, counts the same hits."""
    import torch

    from edgecifar.data import load_data
    from edgecifar.runs import load_run, read_config
    from edgecifar.runtime import load_artifact
    from edgecifar.train import predict_logits

    rows, _ = benched
    out_dir, entries = exported
    config = read_config(tiny_run)
    splits = load_data(config["data"]["source"], config["train"]["cache_dir"])
    for e in entries:
        hits = int((load_artifact(out_dir / e["path"]).run(splits.test_x).argmax(1) == splits.test_y).sum())
        assert {r["correct"] for r in rows if r["format"] == e["format"] and r["precision"] == e["precision"]} == {hits}
    logits = predict_logits(load_run(tiny_run), torch.from_numpy(splits.test_x))
    hits = int((logits.argmax(1).numpy() == splits.test_y).sum())
    assert {r["correct"] for r in rows if r["format"] == "pytorch"} == {hits}


def test_report_files(benched):
    rows, results = benched
    assert sorted(p.name for p in results.iterdir()) == sorted(REPORTS)  # no temporary files left
    data = json.loads((results / "bench.json").read_text())
    assert data["rows"] == json.loads(json.dumps(list(rows)))
    assert data["header"]["machine"]["cores"] >= 1 and data["header"]["settings"]["threads"] == [1, 2]
    with open(results / "bench.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows)
    assert {"cpu", "cores", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "throughput_ips", "load_s", "params",
            "macs", "size_bytes", "accuracy", "threads", "version_onnxruntime", "version_openvino"} <= set(table[0])
    md = (results / "bench.md").read_text()
    assert "## 1 thread" in md and "## 2 threads" in md and "Pareto front" in md and "bench.png" in md
    assert all(f"| {v} |" in md for v in VARIANTS)
    assert (results / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_artifact_worker_is_a_fresh_process_without_torch(exported, tiny_run):
    from edgecifar.data import load_data
    from edgecifar.runs import read_config

    out_dir, entries = exported
    config = read_config(tiny_run)
    splits = load_data(config["data"]["source"], config["train"]["cache_dir"])
    data = out_dir.parent / "worker-test.npz"
    np.savez(data, test_x=splits.test_x[:40], test_y=splits.test_y[:40])
    for e in entries:
        if e["precision"] == "int8":
            job = {"kind": "artifact", "path": str(out_dir / e["path"]), "threads": 1, "classes": e["classes"],
                   "data": str(data), "accuracy": True, "batch_size": 16, "images": 40, **FAST}
            result = run_worker(job, 1)
            assert result["ok"] and result["torch_imported"] is False, result
            assert result["accuracy"]["images"] == 40


def test_checksum_mismatch_skips_that_row_and_says_so(exported_copy, tmp_path):
    bad = exported_copy / "tiny" / "tiny-fp16.onnx"
    bad.write_bytes(bad.read_bytes() + b"\0")
    good = exported_copy / "tiny" / "tiny-int8.onnx"
    result = invoke("bench", bad, good, "--threads", "1", "--no-baseline", "--runs", tmp_path / "runs", "--out",
                    tmp_path / "res",
                    "--latency-seconds", 0.05, "--throughput-seconds", 0.05)
    assert result.exit_code == 0, result.output
    assert "skipped" in result.output and "checksum mismatch" in result.output
    rows = json.loads((tmp_path / "res" / "bench.json").read_text())["rows"]
    status = {r["variant"]: (r["status"], r["checksum"]) for r in rows}
    assert status == {"ONNX FP16": ("skipped", "mismatch"), "ONNX INT8": ("ok", "ok")}
    assert "checksum mismatch" in (tmp_path / "res" / "bench.md").read_text()


def test_listed_but_missing_artifact_is_skipped(exported_copy, tmp_path):
    (exported_copy / "tiny" / "tiny-fp32.bin").unlink()
    rows = bench([exported_copy], threads=(1,), out_dir=tmp_path / "res", runs_dir=tmp_path / "runs",
                 show_progress=True, **FAST)  # the progress bar (on stderr) along the way
    by_variant = {r["variant"]: r for r in rows}
    assert by_variant["OpenVINO FP32"]["status"] == "skipped" and "missing" in by_variant["OpenVINO FP32"]["reason"]
    assert sum(r["status"] == "ok" for r in rows) == len(VARIANTS) - 1


def test_runtime_not_installed_is_that_rows_error(exported_copy, tmp_path, monkeypatch):
    fake = tmp_path / "fake"
    (fake / "openvino").mkdir(parents=True)
    (fake / "openvino" / "__init__.py").write_text("raise ImportError('No module named openvino')\n")
    monkeypatch.setenv("PYTHONPATH", str(fake))  # the worker processes see no usable openvino
    rows = bench([exported_copy / "tiny" / "tiny-fp32.xml", exported_copy / "tiny" / "tiny-fp32.onnx"],
                 threads=(1,), out_dir=tmp_path / "res", runs_dir=tmp_path / "runs", baseline=False, **FAST)
    by_variant = {r["variant"]: r for r in rows}
    assert by_variant["ONNX FP32"]["status"] == "ok"
    assert by_variant["OpenVINO FP32"]["status"] == "error"
    assert "openvino is not installed" in by_variant["OpenVINO FP32"]["reason"]


def test_nothing_measurable_fails_and_writes_nothing(exported_copy, tmp_path):
    bad = exported_copy / "tiny" / "tiny-int8.onnx"
    bad.write_bytes(b"\0" + bad.read_bytes())
    out = tmp_path / "new" / "res"
    with pytest.raises(BenchError, match="nothing could be measured.*checksum mismatch"):
        bench([bad], threads=(1,), out_dir=out, runs_dir=tmp_path / "runs", baseline=False, **FAST)
    assert not (tmp_path / "new").exists()
    result = invoke("bench", bad, "--no-baseline", "--runs", tmp_path / "runs", "--out", out)
    assert_one_line_error(result, BenchError.exit_code)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("case", ["missing manifest", "empty manifest", "corrupt manifest", "no such path",
                                  "unsupported device", "unwritable out", "bad threads"])
def test_bad_input_is_one_clear_line(case, exported_copy, tmp_path):
    args = [exported_copy, "--runs", tmp_path / "runs", "--out", tmp_path / "res", "--threads", "1"]
    code = ArtifactError.exit_code
    if case == "missing manifest":
        (exported_copy / "manifest.json").unlink()
    elif case == "empty manifest":
        (exported_copy / "manifest.json").write_text('{"version": 1, "artifacts": []}')
    elif case == "corrupt manifest":
        (exported_copy / "manifest.json").write_text("{not json")
    elif case == "no such path":
        args[0] = tmp_path / "nowhere"
    elif case == "unsupported device":
        args += ["--device", "cuda"]
        code = BenchError.exit_code
    elif case == "unwritable out":
        (tmp_path / "file").write_text("")
        args[4] = tmp_path / "file" / "res"  # a folder under a file cannot be made, even by root
        code = BenchError.exit_code
    elif case == "bad threads":
        args[-1] = "0,x"
        code = BenchError.exit_code
    result = invoke("bench", *args)
    assert_one_line_error(result, code)
    assert not (tmp_path / "res").exists()  # no partial report files
    if case == "unsupported device":
        assert "cuda" in result.output and "cpu" in result.output


def test_reuse_returns_a_current_result_without_measuring(benched, exported, tiny_run):
    rows, results = benched
    out_dir, _ = exported
    again = bench([out_dir], threads=(1, 2), batch_size=32, out_dir=results, runs_dir=tiny_run.parent, reuse=True,
                  **FAST)
    assert again.reused and list(again) == json.loads(json.dumps(list(rows)))
