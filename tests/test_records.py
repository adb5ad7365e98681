"""edgecifar.records: every committed file of each kind reads into its record and writes back byte for byte;
unknown keys survive, keys a file predates take their defaults, a wrong type is one line of the record's error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgecifar.errors import ArtifactError, BenchError, CheckpointError
from edgecifar.records import BenchRow, ManifestEntry, ModelMeta, RunConfig

ROOT = Path(__file__).resolve().parents[1]


def _dumped(data) -> str:
    return json.dumps(data, indent=2) + "\n"  # how manifest.py, report.py and utils.write_json write


def test_committed_manifest_round_trips():
    path = ROOT / "exported" / "manifest.json"
    if not path.is_file():
        pytest.skip("no committed manifest")
    data = json.loads(path.read_text())
    entries = [ManifestEntry.from_json(e) for e in data["artifacts"]]
    assert entries and all(isinstance(e.classes, list) for e in entries)
    assert _dumped({**data, "artifacts": [e.to_json() for e in entries]}) == path.read_text()


def test_committed_run_configs_round_trip():
    paths = sorted((ROOT / "runs").glob("**/config.json"))
    if not paths:
        pytest.skip("no committed runs")
    for path in paths:
        config = RunConfig.from_json(json.loads(path.read_text()), str(path))
        assert isinstance(config.model, ModelMeta) and config.model.num_classes == len(config.model.classes)
        assert _dumped(config.to_json()) == path.read_text(), path


def test_committed_bench_rows_round_trip():
    paths = sorted((ROOT / "benchmarks" / "results").glob("**/bench.json"))
    if not paths:
        pytest.skip("no committed bench results")
    for path in paths:
        data = json.loads(path.read_text())
        rows = [BenchRow.from_json(r) for r in data["rows"]]
        assert _dumped({**data, "rows": [r.to_json() for r in rows]}) == path.read_text(), path


_ENTRY = {
    "model": "m",
    "format": "onnx",
    "precision": "fp32",
    "path": "m/m-fp32.onnx",
    "sha256": "0" * 64,
    "classes": ["a", "b"],
}


def test_unknown_keys_are_kept_and_written_back():
    entry = ManifestEntry.from_json({**_ENTRY, "notes": {"by": "hand"}, "zz": 1})
    assert entry.extra == {"notes": {"by": "hand"}, "zz": 1}
    assert list(entry.to_json()) == [*_ENTRY, "notes", "zz"]
    row = BenchRow.from_json({"model": "m", "variant": "v", "format": "onnx", "precision": "fp32", "threads": 1,
                              "status": "ok", "future_figure": 3.5})  # fmt: skip
    assert row.to_json()["future_figure"] == 3.5


def test_keys_a_file_predates_take_defaults_and_stay_out():
    entry = ManifestEntry.from_json(_ENTRY)  # no files, bytes, verification, ...: an early entry
    assert entry.files is None and entry.verification is None and entry.file_hashes() == {_ENTRY["path"]: "0" * 64}
    assert entry.to_json() == _ENTRY
    meta = {"model": "x", "num_classes": 2, "classes": ["a", "b"]}  # a run from before input sizes
    config = RunConfig.from_json({"model": meta, "train": {"epochs": 1}})
    assert config.model.input is None and config.resumed is None and config.qat is None
    assert config.to_json() == {"model": meta, "train": {"epochs": 1}}
    config.params = 7  # a field set since the read goes after the file's keys
    assert list(config.to_json()) == ["model", "train", "params"]


def test_records_built_by_code_write_declared_order_without_unset_optionals():
    entry = ManifestEntry(model="m", format="onnx", precision="fp32", path="m/m-fp32.onnx", classes=["a"])
    assert list(entry.to_json()) == ["model", "format", "precision", "classes", "path"]
    row = BenchRow(model="m", variant="v", format="onnx", precision="fp32", threads=1, status="skipped")
    assert "flash_bytes" not in row.to_json() and row.to_json()["accuracy"] is None


@pytest.mark.parametrize(
    ("record", "data", "error", "words"),
    [
        (ManifestEntry, [], ArtifactError, "must be a JSON object, found a list"),
        (ManifestEntry, {**_ENTRY, "bytes": "12"}, ArtifactError, "'bytes' must be a whole number or null"),
        (ManifestEntry, {k: v for k, v in _ENTRY.items() if k != "path"}, ArtifactError, "'path' is missing"),
        (BenchRow, {"model": "m", "threads": 1}, BenchError, "is missing"),
        (RunConfig, {"model": {"model": 3}}, CheckpointError, "'model': 'model' must be a string"),
        (RunConfig, {"model": {"model": "x", "num_classes": True, "classes": []}}, CheckpointError, "num_classes"),
    ],
)
def test_a_malformed_object_is_one_line(record, data, error, words):
    with pytest.raises(error) as caught:
        record.from_json(data, "the file")
    assert words in str(caught.value) and "\n" not in str(caught.value) and str(caught.value).startswith("the file")


def test_update_manifest_writes_the_committed_manifest_back_unchanged(tmp_path):
    from edgecifar.manifest import read_entries, update_manifest

    path = ROOT / "exported" / "manifest.json"
    if not path.is_file():
        pytest.skip("no committed manifest")
    copy = tmp_path / "manifest.json"
    copy.write_text(path.read_text())
    entries, problems = read_entries(copy)
    assert problems == [] and all(isinstance(e, ManifestEntry) for e in entries)
    update_manifest(copy, entries[:3])  # a re-export of the same entries: replaced by themselves
    assert copy.read_text() == path.read_text()


def test_an_fp16_file_exported_apart_from_its_fp32_one_gets_its_size_ratio(tmp_path):
    """`export --precision fp32`, then `--precision fp16`: the manifest still gives the FP16 file's size over the
    FP32 one's, per run and format."""
    from edgecifar.manifest import read_entries, update_manifest

    def made(run: str, fmt: str, precision: str, size: int) -> ManifestEntry:
        return ManifestEntry(
            model="m", format=fmt, precision=precision, bytes=size, classes=["a", "b"], sha256="0" * 64,
            path=f"{run}/{run}-{precision}{ {'onnx': '.onnx', 'litert': '.tflite'}[fmt]}",
        )  # fmt: skip

    manifest = tmp_path / "manifest.json"
    update_manifest(manifest, [made("r", "onnx", "fp32", 1000), made("s", "onnx", "fp32", 400)])
    update_manifest(manifest, [made("r", "onnx", "fp16", 501), made("r", "litert", "fp16", 300)])
    ratios = {e.path: e.size_vs_fp32 for e in read_entries(manifest)[0]}
    assert ratios["r/r-fp16.onnx"] == 0.501  # against its own run's FP32 file, not run s's
    assert ratios["r/r-fp16.tflite"] is None and ratios["r/r-fp32.onnx"] is None  # no FP32 LiteRT file; FP32 itself
