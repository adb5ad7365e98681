"""`edgecifar pipeline --quick` end to end on tiny synthetic data: train, export to every format and precision,
bench, report; a re-run skips every valid step; a damaged export is redone; a run made with other settings
is not silently replaced."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from edgecifar.cli import app
from edgecifar.errors import CheckpointError

from export_fixtures import ALL_EXPORTS, VARIANTS  # noqa: E402


def run_pipeline(*args):
    return CliRunner().invoke(app, ["pipeline", *map(str, args)])


def test_pipeline_quick_end_to_end(image_tree, cache_dir, tmp_path):
    root = tmp_path / "work"
    common = [
        "--quick",
        "--models",
        "scratch_cnn",
        "--data",
        image_tree,
        "--cache-dir",
        cache_dir,
        "--root",
        root,
        "--threads",
        "1",
    ]
    result = run_pipeline(*common)
    assert result.exit_code == 0, result.output
    assert "train scratch_cnn: done" in result.output and "export scratch_cnn: done" in result.output
    run = root / "runs" / "scratch_cnn"
    assert (run / "model.safetensors").is_file() and (run / "metrics.json").is_file()
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["epochs"] == 1  # the quick profile
    manifest = json.loads((root / "exported" / "manifest.json").read_text())
    assert len(manifest["artifacts"]) == len(ALL_EXPORTS) and {e["source_run"] for e in manifest["artifacts"]} == {
        "scratch_cnn"
    }
    results = root / "results"
    assert sorted(p.name for p in results.iterdir()) == ["bench.csv", "bench.json", "bench.md", "bench.png"]
    rows = json.loads((results / "bench.json").read_text())["rows"]
    assert {r["variant"] for r in rows} == set(VARIANTS) and all(r["status"] == "ok" for r in rows)
    assert all(r["images"] == 30 and r["threads"] == 1 for r in rows)

    # a re-run finds every output valid and redoes nothing
    stamp = (results / "bench.json").stat().st_mtime_ns
    result = run_pipeline(*common)
    assert result.exit_code == 0, result.output
    for step in ("train scratch_cnn", "export scratch_cnn", "bench all"):
        assert f"{step}: skipped" in result.output, result.output
    assert (results / "bench.json").stat().st_mtime_ns == stamp

    # a damaged artifact fails its checksum: the export is redone and the run stays; the bench is redone
    # unless the new files are byte for byte the ones benched (exports are reproducible)
    weights = (run / "model.safetensors").stat().st_mtime_ns
    artifact = root / "exported" / manifest["artifacts"][0]["path"]
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    result = run_pipeline(*common)
    assert result.exit_code == 0, result.output
    assert "train scratch_cnn: skipped" in result.output and "export scratch_cnn: done" in result.output
    assert (run / "model.safetensors").stat().st_mtime_ns == weights
    manifest = json.loads((root / "exported" / "manifest.json").read_text())
    rows = json.loads((results / "bench.json").read_text())["rows"]
    assert {e["sha256"] for e in manifest["artifacts"]} == {r["sha256"] for r in rows if r["format"] != "pytorch"}

    # the full profile into the same folders meets a quick run: it says so instead of replacing it
    result = run_pipeline(*[a for a in common if a != "--quick"])
    assert result.exit_code == CheckpointError.exit_code
    assert "other settings" in result.output and "--force" in result.output and "Traceback" not in result.output


def test_bad_options_fail_before_any_work(tmp_path):
    result = run_pipeline("--models", "no_such_model", "--data", tmp_path / "none", "--root", tmp_path / "w")
    assert result.exit_code != 0 and result.output.startswith("error:")
    result = run_pipeline("--threads", "0", "--root", tmp_path / "w")
    assert result.exit_code != 0 and "--threads" in result.output
    assert not (tmp_path / "w").exists()


def test_a_typo_in_models_stops_before_any_work(image_tree, cache_dir, tmp_path):
    from edgecifar.errors import ModelError

    result = run_pipeline(
        "--quick",
        "--models",
        "scratch_cnn,scrach_cnn",
        "--data",
        image_tree,
        "--cache-dir",
        cache_dir,
        "--root",
        tmp_path / "w",
        "--threads",
        "1",
    )
    assert result.exit_code == ModelError.exit_code and "unknown model 'scrach_cnn'" in result.output
    assert not (tmp_path / "w").exists()  # scratch_cnn was not trained first


def test_a_changed_dataset_retrains(image_tree, cache_dir, tmp_path):
    """The data fingerprint is part of what makes a run valid: new images, new run (and so new exports)."""
    import shutil

    from PIL import Image

    from edgecifar.pipeline import layout_for, train_step

    data = tmp_path / "data"
    shutil.copytree(image_tree, data)
    step = ("scratch_cnn", layout_for(True, tmp_path / "w"), str(data), cache_dir, True, False, False, lambda _: None)
    assert train_step(*step)[1] == "done"
    assert train_step(*step)[1] == "skipped"
    Image.new("RGB", (32, 32), (250, 10, 10)).save(data / "train" / "cat" / "new.png")
    run, status, detail = train_step(*step)
    assert status == "done" and "data changed" in detail and "60 -> 61 training images" in detail
    assert json.loads((run / "config.json").read_text())["data"]["train"] == 61
    assert train_step(*step)[1] == "skipped"


def test_a_teacher_run_distils_the_model(image_tree, cache_dir, tmp_path):
    """`--teacher MODEL=RUN` trains MODEL-kd from the run's flip-averaged logits, evaluated once at the end."""
    from edgecifar.train import TrainConfig, train

    teacher = train(
        TrainConfig(
            model="scratch_cnn",
            data=str(image_tree),
            cache_dir=str(cache_dir),
            epochs=1,
            batch_size=16,
            out=str(tmp_path / "teacher"),
        ),
        log=lambda *a: None,
    )
    root = tmp_path / "w"
    result = run_pipeline(
        "--quick",
        "--models",
        "scratch_cnn",
        "--teacher",
        f"scratch_cnn={teacher}",
        "--data",
        image_tree,
        "--cache-dir",
        cache_dir,
        "--root",
        root,
        "--threads",
        "1",
    )
    assert result.exit_code == 0, result.output
    assert "train scratch_cnn-kd: done" in result.output and "export scratch_cnn-kd: done" in result.output
    run = root / "runs" / "scratch_cnn-kd"
    made = json.loads((run / "config.json").read_text())["train"]
    assert made["teacher"] == str(teacher.resolve()) and made["teacher_tta"] and made["eval_every"] == 0
    epochs = json.loads((run / "metrics.json").read_text())["epochs"]
    assert [e["epoch"] for e in epochs if "test_acc" in e] == [len(epochs)]
    rows = json.loads((root / "results" / "bench.json").read_text())["rows"]
    assert {r["source_run"] for r in rows} == {"scratch_cnn-kd"}


def test_a_teacher_must_fit_the_data(image_tree, cache_dir, tmp_path, monkeypatch):
    """A given teacher trained on other data, or no run at all, stops the pipeline before any work; a default
    teacher that does not fit is left out and the log says why."""
    import shutil

    import edgecifar.pipeline as pipeline_module
    from edgecifar.errors import UsageError
    from edgecifar.train import TrainConfig, train

    other = tmp_path / "other"
    shutil.copytree(image_tree, other)
    shutil.rmtree(other / "train" / "ship")
    shutil.rmtree(other / "test" / "ship")
    teacher = train(
        TrainConfig(
            model="scratch_cnn",
            data=str(other),
            cache_dir=str(cache_dir),
            epochs=1,
            batch_size=16,
            out=str(tmp_path / "teacher"),
        ),
        log=lambda *a: None,
    )
    for given, why in (
        (teacher, "trained on other data (its classes, train, test, per_class differ)"),
        (tmp_path / "none", "holds no trained run"),
    ):
        result = run_pipeline(
            "--quick",
            "--models",
            "scratch_cnn",
            "--teacher",
            f"scratch_cnn={given}",
            "--data",
            image_tree,
            "--cache-dir",
            cache_dir,
            "--root",
            tmp_path / "w",
            "--threads",
            "1",
        )
        assert result.exit_code == UsageError.exit_code and why in result.output, result.output
        assert "Traceback" not in result.output and not (tmp_path / "w").exists()

    said = []
    monkeypatch.setattr(pipeline_module, "DEFAULT_TEACHERS", {"scratch_cnn": str(teacher), "airnet_m": str(teacher)})
    assert pipeline_module.teachers_for(["scratch_cnn"], None, str(image_tree), cache_dir, said.append) == {}
    assert said == [
        f"pipeline: scratch_cnn trains without a teacher: {teacher} was trained on other data (its "
        "classes, train, test, per_class differ)"
    ]
    assert pipeline_module.teachers_for(["scratch_cnn"], None, str(other), cache_dir, said.append) == {
        "scratch_cnn": str(teacher.resolve())
    }


@pytest.mark.parametrize("text, parsed", [(None, None), ("none", {}), ("a=r1, b=r2", {"a": "r1", "b": "r2"})])
def test_parse_teachers(text, parsed):
    from edgecifar.pipeline import parse_teachers

    assert parse_teachers(text) == parsed


@pytest.mark.parametrize("text", ["", "airnet_m", "airnet_m=", "=run", "a=r,none"])
def test_malformed_teachers_are_refused(text):
    from edgecifar.errors import UsageError
    from edgecifar.pipeline import parse_teachers

    with pytest.raises(UsageError, match="--teacher"):
        parse_teachers(text)


def test_a_teacher_for_a_model_not_trained_is_refused(tmp_path):
    result = run_pipeline(
        "--models", "scratch_cnn", "--teacher", "airnet_m=runs/reference/airnet_m", "--root", tmp_path / "w"
    )
    assert result.exit_code != 0 and "airnet_m is not one of --models" in result.output
    assert not (tmp_path / "w").exists()
