"""The `edgecifar` command through Typer's runner: happy paths and one-line errors."""

import json

import pytest
from typer.testing import CliRunner

from edgecifar.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, code=None):
    assert result.exit_code != 0
    if code is not None:
        assert result.exit_code == code
    text = result.output.strip()
    assert text.startswith("error:") and "Traceback" not in text, text
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.fixture(scope="module")
def cli_run(image_tree, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    out = root / "run"
    result = invoke("train", "--model", "scratch_cnn", "--data", image_tree, "--cache-dir", root / "cache",
                    "--epochs", 1, "--batch-size", 16, "--out", out)
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output
    return out


def test_train_and_evaluate(cli_run):
    result = invoke("evaluate", cli_run)
    assert result.exit_code == 0, result.output
    report = json.loads((cli_run / "confusion.json").read_text())
    assert sum(map(sum, report["confusion"])) == report["images"] == 30
    assert set(report["per_class"]) == {"cat", "dog", "ship"}
    assert (cli_run / "confusion.png").read_bytes()[:4] == b"\x89PNG"


def test_models_lists_the_registry():
    result = invoke("models")
    assert result.exit_code == 0 and "scratch_cnn" in result.output and "efficientnet_lite0" in result.output


@pytest.mark.parametrize("args, code", [
    (["train", "--model", "nonsense_net", "--data", "DATA"], 3),
    (["train", "--data", "/does/not/exist"], 2),
    (["train", "--resume", "--data", "DATA"], 4),  # nothing to resume in --out
    (["evaluate", "/does/not/exist"], 4),
])
def test_bad_input_is_one_line(args, code, image_tree, tmp_path):
    result = invoke(*[str(image_tree) if a == "DATA" else a for a in args], *(["--out", tmp_path / "x"]
                                                                            if args[0] == "train" else []))
    assert_one_line_error(result, code)
    assert not (tmp_path / "x").exists()


def test_evaluate_corrupt_checkpoint(cli_run, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(cli_run, broken)
    (broken / "model.safetensors").write_bytes(b"junk")
    assert_one_line_error(invoke("evaluate", broken), 4)
    (broken / "config.json").write_text("{not json")
    assert_one_line_error(invoke("evaluate", broken), 4)
