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

from edgecifar import stats
from edgecifar.backends import BACKENDS
from edgecifar.bench import bench, run_worker
from edgecifar.cli import app
from edgecifar.errors import ArtifactError, BenchError, UsageError

pytest.register_assert_rewrite("export_fixtures")
from export_fixtures import CLASSES, VARIANTS, edit_manifest, listed_path  # noqa: E402

pytest_plugins = ["export_fixtures"]  # tiny_run, exported: the session-wide export shared with test_export.py

FAST = {"latency_seconds": 0.05, "throughput_seconds": 0.05, "latency_trials": 2}
ONE_TRIAL = {**FAST, "latency_trials": 1}  # where the rows' latency trials are not what a test checks
REPORTS = ("bench.json", "bench.csv", "bench.md", "bench.png")
# The damaged copies hold no ExecuTorch file: its runtime imports torch and executorch.exir in every worker, the
# slowest start of all runtimes, and those tests check how the bench reads a manifest, the same for every format.
# `benched` measures the ExecuTorch files with all the others.
NOT_COPIED = BACKENDS["executorch"]
COPIED = [v for v in VARIANTS if not v.startswith(f"{NOT_COPIED.label} ")]


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
    """A private copy of the export (this file's tests damage it) but its ExecuTorch files (NOT_COPIED), with its
    run folder beside it: the bench of the copy's folder has a row for each of COPIED."""
    out_dir, _ = exported
    copy = tmp_path / "exported"
    shutil.copytree(out_dir, copy, ignore=shutil.ignore_patterns(*(f"*{s}" for s in NOT_COPIED.suffixes)))

    def leave_out(entries):
        entries[:] = [e for e in entries if e["format"] != NOT_COPIED.name]

    edit_manifest(copy, leave_out)
    shutil.copytree(tiny_run, tmp_path / "runs" / tiny_run.name)
    return copy


def test_one_row_per_artifact_and_thread_setting(benched, exported):
    rows, _ = benched
    assert sorted((r.variant, r.threads) for r in rows) == sorted((v, n) for v in VARIANTS for n in (1, 2))
    assert all(r.status == "ok" and r.reason == "" for r in rows)
    _, entries = exported
    for e in entries:  # file size and checksum are the manifest's
        row = next(r for r in rows if r.format == e.format and r.precision == e.precision)
        assert row.size_bytes == e.bytes and row.sha256 == e.sha256 and row.checksum == "ok"


def test_fields_present_and_sane(benched):
    rows, _ = benched
    params, macs = {r.params for r in rows}, {r.macs for r in rows}
    assert len(params) == len(macs) == 1 and params.pop() > 0 and macs.pop() > 0  # one architecture
    for r in rows:
        assert 0 < r.latency_p50_ms <= r.latency_p90_ms <= r.latency_p99_ms
        # two trials, each a fresh session: the row's p50 is their median, with their min-max
        assert r.latency_trials == 2 and len(r.latency_trial_p50_ms) == len(r.latency_trial_p99_ms) == 2
        assert r.latency_p50_min_ms <= r.latency_p50_ms <= r.latency_p50_max_ms
        assert r.latency_p50_ms == pytest.approx(float(np.median(r.latency_trial_p50_ms)))
        assert r.accuracy_low <= r.accuracy <= r.accuracy_high  # Wilson 95 %
        # the same CPU; under EDGECIFAR_CPU_FLAGS the ISA record says its flags are the switch's
        assert r.isa["cpu"].startswith(r.cpu) and isinstance(r.isa["flags"], list)
        assert r.latency_iterations >= 20 and r.throughput_ips > 0 and r.load_s >= 0
        assert r.threads_runtime == r.threads  # the runtime reports the pinned count
        assert r.images == 3 * 70 and list(r.per_class) == CLASSES
        assert r.cpu and r.cores >= 1 and r.date and r.device == "cpu"
        assert {"onnxruntime", "openvino", "numpy"} <= set(r.versions)
    for variant in VARIANTS:  # accuracy is counted once per artifact and shared by its thread settings
        pair = [r for r in rows if r.variant == variant]
        assert pair[0].correct == pair[1].correct and pair[0].per_class == pair[1].per_class


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
    splits = load_data(config.data["source"], config.train["cache_dir"])
    fingerprint = stats.test_set_fingerprint(splits.test_y, splits.test_x, splits.classes)
    for e in entries:
        preds = load_artifact(out_dir / e.path).run(splits.test_x).argmax(1)
        for r in (r for r in rows if r.format == e.format and r.precision == e.precision):
            # which images it got right, kept per row with the test set's fingerprint
            assert stats.row_hits(r)[0] == r.test_set == fingerprint
            assert np.array_equal(stats.row_hits(r)[1], preds == splits.test_y)
        hits = int((preds == splits.test_y).sum())
        # per class: the share of that class's test images predicted as that class
        per_class = {c: float(np.mean(preds[splits.test_y == i] == i)) for i, c in enumerate(CLASSES)}
        for r in (r for r in rows if r.format == e.format and r.precision == e.precision):
            assert r.correct == hits and r.accuracy == hits / len(splits.test_y)
            assert r.per_class == pytest.approx(per_class)
    logits = predict_logits(load_run(tiny_run), torch.from_numpy(splits.test_x))
    hits = int((logits.argmax(1).numpy() == splits.test_y).sum())
    assert {r.correct for r in rows if r.format == "pytorch"} == {hits}


def test_report_files(benched):
    rows, results = benched
    assert sorted(p.name for p in results.iterdir()) == sorted(REPORTS)  # no temporary files left
    data = json.loads((results / "bench.json").read_text())
    assert data["rows"] == json.loads(json.dumps([r.to_json() for r in rows]))
    assert data["header"]["machine"]["cores"] >= 1 and data["header"]["settings"]["threads"] == [1, 2]
    with open(results / "bench.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows)
    assert {
        "cpu",
        "cores",
        "latency_p50_ms",
        "latency_p90_ms",
        "latency_p99_ms",
        "throughput_ips",
        "load_s",
        "params",
        "macs",
        "size_bytes",
        "accuracy",
        "threads",
        "version_onnxruntime",
        "version_openvino",
        "accuracy_low",
        "accuracy_high",
        "latency_p50_min_ms",
        "latency_p50_max_ms",
        "test_set",
        "isa_int8_path",
        "isa_flags",
    } <= set(table[0])
    assert "per_image" not in table[0] and len(table[0]["latency_trial_p50_ms"].split()) == 2
    md = (results / "bench.md").read_text()
    row = next(r for r in rows if r.threads == 1)
    shown = f"{100 * row.accuracy:.2f} ({100 * row.accuracy_low:.2f}-{100 * row.accuracy_high:.2f})"
    assert shown in md and "p50 ms (trials min-max)" in md
    md = (results / "bench.md").read_text()
    assert "## 1 thread" in md and "## 2 threads" in md and "Pareto front" in md and "bench.png" in md
    assert all(f"| {v} |" in md for v in VARIANTS)
    assert (results / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_artifact_worker_is_a_fresh_process_without_torch(exported, tiny_run):
    from edgecifar.data import load_data
    from edgecifar.runs import read_config

    out_dir, entries = exported
    config = read_config(tiny_run)
    splits = load_data(config.data["source"], config.train["cache_dir"])
    data = out_dir.parent / "worker-test.npz"
    np.savez(data, test_x=splits.test_x[:40], test_y=splits.test_y[:40])
    for e in entries:
        if e.precision == "int8":
            job = {
                "kind": "artifact",
                "path": str(out_dir / e.path),
                "threads": 1,
                "classes": e.classes,
                "data": str(data),
                "accuracy": True,
                "batch_size": 16,
                "images": 40,
                **FAST,
            }
            result = run_worker(job, 1)
            # ExecuTorch's Python runtime imports torch itself (README: on the device side)
            assert result["ok"] and result["torch_imported"] is (e.format == "executorch"), result
            assert result["accuracy"]["images"] == 40


def test_checksum_mismatch_skips_that_row_and_says_so(exported_copy, tmp_path):
    bad = exported_copy / "tiny" / "tiny-fp16.onnx"
    bad.write_bytes(bad.read_bytes() + b"\0")
    good = exported_copy / "tiny" / "tiny-int8.onnx"
    result = invoke(
        "bench",
        bad,
        good,
        "--threads",
        "1",
        "--no-baseline",
        "--runs",
        tmp_path / "runs",
        "--out",
        tmp_path / "res",
        "--latency-seconds",
        0.05,
        "--throughput-seconds",
        0.05,
        "--latency-trials",
        1,
    )
    assert result.exit_code == 0, result.output
    assert "skipped" in result.output and "checksum mismatch" in result.output
    rows = json.loads((tmp_path / "res" / "bench.json").read_text())["rows"]
    status = {r["variant"]: (r["status"], r["checksum"]) for r in rows}
    assert status == {"ONNX FP16": ("skipped", "mismatch"), "ONNX INT8": ("ok", "ok")}
    assert "checksum mismatch" in (tmp_path / "res" / "bench.md").read_text()


def test_listed_but_missing_artifact_is_skipped(exported_copy, tmp_path):
    (exported_copy / "tiny" / "tiny-fp32.bin").unlink()
    rows = bench(
        [exported_copy],
        threads=(1,),
        out_dir=tmp_path / "res",
        runs_dir=tmp_path / "runs",
        show_progress=True,
        **ONE_TRIAL,
    )  # the progress bar (on stderr) along the way
    by_variant = {r.variant: r for r in rows}
    assert by_variant["OpenVINO FP32"].status == "skipped" and "missing" in by_variant["OpenVINO FP32"].reason
    assert sum(r.status == "ok" for r in rows) == len(COPIED) - 1


def test_runtime_not_installed_is_that_rows_error(exported_copy, tmp_path, monkeypatch):
    fake = tmp_path / "fake"
    (fake / "openvino").mkdir(parents=True)
    (fake / "openvino" / "__init__.py").write_text("raise ImportError('No module named openvino')\n")
    monkeypatch.setenv("PYTHONPATH", str(fake))  # the worker processes see no usable openvino
    rows = bench(
        [exported_copy / "tiny" / "tiny-fp32.xml", exported_copy / "tiny" / "tiny-fp32.onnx"],
        threads=(1,),
        out_dir=tmp_path / "res",
        runs_dir=tmp_path / "runs",
        baseline=False,
        **ONE_TRIAL,
    )
    by_variant = {r.variant: r for r in rows}
    assert by_variant["ONNX FP32"].status == "ok"
    assert by_variant["OpenVINO FP32"].status == "error"
    assert "openvino is not installed" in by_variant["OpenVINO FP32"].reason


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


@pytest.mark.parametrize(
    "case",
    [
        "missing manifest",
        "empty manifest",
        "corrupt manifest",
        "no such path",
        "unsupported device",
        "unwritable out",
        "bad threads",
        "negative threads",
    ],
)
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
        code = UsageError.exit_code
    elif case == "unwritable out":
        (tmp_path / "file").write_text("")
        args[4] = tmp_path / "file" / "res"  # a folder under a file cannot be made, even by root
        code = BenchError.exit_code
    elif case == "bad threads":
        args[-1] = "0,x"
        code = UsageError.exit_code
    elif case == "negative threads":
        args[-1] = "1,-1"
        code = UsageError.exit_code
    result = invoke("bench", *args)
    assert_one_line_error(result, code)
    assert not (tmp_path / "res").exists()  # no partial report files
    if case == "unsupported device":
        assert "cuda" in result.output and "cpu" in result.output


def test_reuse_returns_a_current_result_without_measuring(benched, exported, tiny_run):
    rows, results = benched
    out_dir, _ = exported
    again = bench(
        [out_dir], threads=(1, 2), batch_size=32, out_dir=results, runs_dir=tiny_run.parent, reuse=True, **FAST
    )
    assert again.reused and [r.to_json() for r in again] == json.loads(json.dumps([r.to_json() for r in rows]))


# ---------------------------------------------------------------- manifests edited by hand, files it does not list


def test_hand_edited_manifest_costs_only_its_broken_entries(exported_copy, tmp_path):
    """Each problem is one line; every valid entry is still measured; a label that the file's own metadata
    contradicts fails that row instead of naming it wrongly."""

    def edit(entries):
        by = {(e["format"], e["precision"]): e for e in entries}
        by["onnx", "fp32"]["files"] = list(by["onnx", "fp32"]["files"])  # a bad merge
        del by["openvino", "fp32"]["classes"]
        by["onnx", "fp16"]["precision"] = "int4"
        by["openvino", "fp16"]["precision"] = "int8"  # valid, but not what the file says
        entries += [None, "tiny/tiny-fp32.onnx"]

    edit_manifest(exported_copy, edit)
    # one bench, through the command line: its report holds the rows and notes, its output the log lines
    result = invoke(
        "bench",
        exported_copy,
        "--runs",
        tmp_path / "runs",
        "--no-baseline",
        "--threads",
        "1",
        "--out",
        tmp_path / "res",
        "--latency-seconds",
        0.05,
        "--throughput-seconds",
        0.05,
        "--latency-trials",
        1,
    )
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    logs = result.output.splitlines()
    report = json.loads((tmp_path / "res" / "bench.json").read_text())
    rows, notes = report["rows"], report["header"]["notes"]
    assert len([n for n in notes if "manifest.json: artifacts[" in n]) == 5
    expected = [
        "'files' must be an object",
        "'classes' is missing",
        "precision 'int4' is not one of",
        "an entry must be an object, found null",
        "an entry must be an object, found a string",
    ]
    assert all(any(e in n for n in notes) for e in expected), notes
    assert all(any(n in line for line in logs) for n in notes)
    untouched = [(v, "ok") for v in COPIED if v != "PyTorch" and not v.startswith(("ONNX", "OpenVINO"))]
    assert sorted((r["variant"], r["status"]) for r in rows) == sorted(
        [("ONNX INT8", "ok"), ("OpenVINO INT8", "error"), ("OpenVINO INT8", "ok")] + untouched
    )
    wrong = next(r for r in rows if r["status"] == "error")
    assert "the manifest says precision 'int8', the file's own metadata 'fp16'" in wrong["reason"]
    assert not any("INT4" in r["variant"] for r in rows)
    md = (tmp_path / "res" / "bench.md").read_text()
    assert "## Notes" in md and "precision 'int4'" in md


def test_export_and_bench_refuse_what_they_cannot_read(exported_copy, tiny_run, tmp_path):
    from edgecifar.export import export_run

    edit_manifest(exported_copy, lambda entries: entries.append(None))
    with pytest.raises(ArtifactError, match=r"(?s)invalid manifest.*\n  artifacts\[\d+\]: an entry must be an object"):
        export_run(tiny_run, "onnx", "fp32", out_dir=exported_copy, verify_size=20)
    fast = [
        "--no-baseline",
        "--runs",
        tmp_path / "runs",
        "--threads",
        "1",
        "--latency-seconds",
        0.05,
        "--throughput-seconds",
        0.05,
        "--latency-trials",
        1,
    ]
    result = invoke("bench", exported_copy / "tiny" / "tiny-int8.onnx", *fast, "--out", tmp_path / "res")
    assert result.exit_code == 0, result.output  # a named file with a valid entry: the others do not matter
    edit_manifest(exported_copy, lambda entries: entries[0].update(files=["x"]))
    result = invoke("bench", exported_copy / listed_path(exported_copy, 0), *fast, "--out", tmp_path / "r")
    assert_one_line_error(result, ArtifactError.exit_code)
    assert "'files' must be an object" in result.output


def test_unlisted_files_and_uncommitted_artifacts_are_said(exported_copy, tmp_path):
    shutil.copy(exported_copy / "tiny" / "tiny-int8.onnx", exported_copy / "tiny" / "extra.onnx")
    (exported_copy / ".staging-x").mkdir()  # an interrupted export's leftovers are not artifacts
    shutil.copy(exported_copy / "tiny" / "tiny-int8.onnx", exported_copy / ".staging-x" / "tiny-int8.onnx")
    regenerate = "uv run edgecifar export runs/tiny --format openvino --precision fp32"
    edit_manifest(
        exported_copy,
        lambda entries: next(e for e in entries if e["path"] == "tiny/tiny-fp32.xml").update(regenerate=regenerate),
    )
    for name in ("tiny-fp32.xml", "tiny-fp32.bin"):  # as a clone has it: not committed (size budget)
        (exported_copy / "tiny" / name).unlink()
    rows = bench(
        [exported_copy],
        threads=(1,),
        out_dir=tmp_path / "res",
        runs_dir=tmp_path / "runs",
        baseline=False,
        **ONE_TRIAL,
    )
    assert all(r.status == "ok" for r in rows) and "OpenVINO FP32" not in {r.variant for r in rows}
    assert len(rows) == len(COPIED) - 2  # no baseline, and not the artifact that is not here
    notes = rows.header["notes"]
    assert any("tiny/extra.onnx is not listed in" in n for n in notes)
    assert any("tiny/tiny-fp32.xml is not in this checkout" in n and regenerate in n for n in notes)
    assert not any("staging" in n for n in notes)


def test_threads_above_the_cores_warn_and_record_what_ran(exported_copy, tmp_path):
    from edgecifar.utils import available_cores

    over = available_cores() + 2
    logs = []
    rows = bench(
        [exported_copy / "tiny" / "tiny-int8.onnx", exported_copy / "tiny" / "tiny-int8.xml"],
        threads=(1, over),
        out_dir=tmp_path / "res",
        runs_dir=tmp_path / "runs",
        baseline=False,
        log=logs.append,
        **ONE_TRIAL,
    )
    assert sum(f"warning: {over} threads is more than the {available_cores()} core" in line for line in logs) == 1
    for r in rows:  # what the runtime reports it used, beside what was asked
        assert isinstance(r.threads_runtime, int) and 1 <= r.threads_runtime <= r.threads
    md = (tmp_path / "res" / "bench.md").read_text()
    assert all(f"| {r.threads} (ran {r.threads_runtime}) |" in md for r in rows if r.threads_runtime != r.threads)
    assert rows.header["machine"]["cores_available"] == available_cores()


def test_class_without_test_images_is_null_in_the_bench(exported, tmp_path):
    from export_fixtures import make_image_tree

    data = make_image_tree(tmp_path / "data", n_train=2, n_test=4)
    shutil.rmtree(data / "test" / "gamma")
    out_dir, _ = exported
    logs = []
    rows = bench(
        [out_dir / "tiny" / "tiny-fp32.onnx"],
        threads=(1,),
        out_dir=tmp_path / "res",
        data=str(data),
        cache_dir=tmp_path / "cache",
        runs_dir=None,
        baseline=False,
        log=logs.append,
        **ONE_TRIAL,
    )
    (row,) = rows
    assert row.per_class["gamma"] is None and row.images == 8
    assert all(isinstance(row.per_class[c], float) for c in ("alpha", "beta"))
    assert any("no images of 'gamma'" in line for line in logs)
    assert json.loads((tmp_path / "res" / "bench.json").read_text())["rows"][0]["per_class"]["gamma"] is None


def test_committed_manifest_lists_committed_files_or_how_to_regenerate_them():
    """A fresh clone has only what git tracks: every other artifact in exported/manifest.json carries the
    command that makes it, and the bench of exported/ finds no listed file missing."""
    import subprocess

    from edgecifar.bench_targets import resolve_targets
    from edgecifar.manifest import entry_files, read_manifest

    root = Path(__file__).resolve().parents[1]
    listed = subprocess.run(["git", "ls-files", "exported"], cwd=root, capture_output=True, text=True)
    if listed.returncode != 0 or not listed.stdout:
        pytest.skip("not a git checkout")
    tracked = set(listed.stdout.split())
    for entry in read_manifest(root / "exported" / "manifest.json").artifacts:
        untracked = [f for f in entry_files(entry) if f"exported/{f}" not in tracked]
        command = entry.regenerate or ""
        assert not untracked or (command.startswith("uv run ") and " edgecifar export " in command), untracked
    targets, notes = resolve_targets([root / "exported"], runs_dir=None, baseline=False, data="unused")
    assert [t.checksum for t in targets] == ["ok"] * len(targets)
    assert all("not in this checkout" in n for n in notes), notes


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the live processes whose parent is `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(
                    (int(stat.parent.name), (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode())
                )
        except (OSError, IndexError, ValueError):
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from Linux's /proc")
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT", "SIGHUP", "SIGKILL"])
def test_a_signal_stops_bench_and_its_worker_at_once(signame, exported, tiny_run, tmp_path):
    """H14: a real `edgecifar bench` process, its worker caught while measuring (seen in the process table, not
    waited for by a sleep), then signalled: the bench exits with one line and 128 + the signal, its worker is gone
    with it (also when the bench is killed outright), the previous report is untouched."""
    import signal
    import subprocess
    import sys
    import time

    out_dir, _ = exported
    results = tmp_path / "results"
    results.mkdir()
    (results / "bench.json").write_text('{"previous": "report"}')
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgecifar",
            "bench",
            str(out_dir),
            "--runs",
            str(tiny_run.parent),
            "--no-baseline",
            "--threads",
            "1",
            "--latency-seconds",
            "900",
            "--out",
            str(results),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        worker = None
        deadline = time.monotonic() + 300  # a guard against a hung test only: the worker shows up in seconds
        while worker is None and proc.poll() is None and time.monotonic() < deadline:
            worker = next((pid for pid, cmd in _children(proc.pid) if "edgecifar.bench_worker" in cmd), None)
            time.sleep(0.05)
        assert worker is not None, f"no worker started: {proc.poll()}"
        proc.send_signal(getattr(signal, signame))
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    signum = getattr(signal, signame)
    if signame == "SIGKILL":  # the bench cannot act; the kernel stops the worker with it (PR_SET_PDEATHSIG)
        assert proc.returncode == -signum
        deadline = time.monotonic() + 60
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
    else:
        assert proc.returncode == 128 + signum, err
        assert err.strip().splitlines()[-1] == "interrupted" and "Traceback" not in err, err
    assert not _alive(worker)
    assert [p.name for p in results.iterdir()] == ["bench.json"]
    assert (results / "bench.json").read_text() == '{"previous": "report"}'


def test_a_busy_cpu_is_said_in_the_header():
    from edgecifar.stats import busy_note

    assert busy_note([0.4, 1.2], 2) is None and busy_note([None, None], 2) is None
    note = busy_note([3.1, 14.5], 2)
    assert "load average up to 14.5 on 2 cores" in note and "latencies are contended" in note
