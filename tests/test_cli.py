"""The `edgecifar` command through Typer's runner: happy paths, one-line errors, literal names, classes with no
test images and many classes in `evaluate`, the registry in a fresh process."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgecifar.cli import app
from edgecifar.errors import UsageError

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
    result = invoke(
        "train",
        "--model",
        "scratch_cnn",
        "--data",
        image_tree,
        "--cache-dir",
        root / "cache",
        "--epochs",
        1,
        "--batch-size",
        16,
        "--out",
        out,
    )
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


def test_models_lists_the_whole_registry_in_a_fresh_process():
    """In this process other tests have imported every module; a fresh one has imported only what the
    command imports, and must still list the models that nets.py registers."""
    import edgecifar.nets  # noqa: F401 - registers the scratch models, as training imports it
    from edgecifar.models import list_models

    REGISTERED = list_models()
    assert {"airnet_m", "edge_tiny", "efficientnet_lite0", "resnet18", "scratch_cnn"} <= set(REGISTERED)
    root = Path(__file__).resolve().parents[1]
    listed = subprocess.run(
        [sys.executable, "-c", "from edgecifar.models import list_models; print(list_models())"],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=120,
    )
    assert listed.stdout.strip() == str(REGISTERED), listed.stderr
    shown = subprocess.run(
        [sys.executable, "-m", "edgecifar", "models"],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=120,
        env={"COLUMNS": "200", "PATH": ""},
    )
    assert shown.returncode == 0, shown.stderr
    assert [
        line.split("│")[1].strip()
        for line in shown.stdout.splitlines()
        if line.startswith("│") and line.split("│")[1].strip()
    ] == REGISTERED


@pytest.mark.parametrize(
    "args, code",
    [
        (["train", "--model", "nonsense_net", "--data", "DATA"], 3),
        (["train", "--data", "/does/not/exist"], 2),
        (["train", "--resume", "--data", "DATA"], 4),  # nothing to resume in --out
        (["evaluate", "/does/not/exist"], 4),
    ],
)
def test_bad_input_is_one_line(args, code, image_tree, tmp_path):
    result = invoke(
        *[str(image_tree) if a == "DATA" else a for a in args],
        *(["--out", tmp_path / "x"] if args[0] == "train" else []),
    )
    assert_one_line_error(result, code)
    assert not (tmp_path / "x").exists()


def test_resume_without_out_is_a_usage_error():
    result = invoke("train", "--resume", "--data", "nowhere")
    assert_one_line_error(result, UsageError.exit_code)
    assert "--resume needs --out" in result.output


def test_error_line_prints_bracketed_paths_literally(tmp_path):
    for name in ("run [red]", "run [/x]", "run [bold"):
        result = invoke("evaluate", tmp_path / name)
        assert_one_line_error(result, 4)
        assert result.output.strip() == f"error: run folder not found: {tmp_path / name}"


def test_class_without_test_images_is_not_zero_percent(cli_run, image_tree, tmp_path):
    """A class with no test images has no accuracy: n/a (null), where 0.00 % would say "always wrong"."""
    data = tmp_path / "data"
    shutil.copytree(image_tree, data)
    shutil.rmtree(data / "test" / "dog")
    result = invoke("evaluate", cli_run, "--data", data, "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    dog = next(line for line in result.output.splitlines() if " dog " in line)
    assert "n/a (no test images)" in dog and "0.00%" not in dog
    report = json.loads((cli_run / "confusion.json").read_text())
    assert report["per_class"]["dog"] is None and report["per_class_images"]["dog"] == 0
    confusion = np.array(report["confusion"])
    for i, c in enumerate(report["classes"]):  # the others: hits over their own test images
        if c != "dog":
            assert report["per_class"][c] == confusion[i, i] / confusion[i].sum()
    assert report["images"] == confusion.sum() == 20


def test_many_classes_evaluate_with_a_summary_plot(tmp_path):
    """G9's kind at 40 classes: the table shows the least accurate classes and the plot has no per-cell text."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 2), ("test", 1)):
        for k in range(40):
            folder = tmp_path / "data" / split / f"class{k:02d}"
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    run = tmp_path / "run"
    result = invoke(
        "train",
        "--data",
        tmp_path / "data",
        "--cache-dir",
        tmp_path / "cache",
        "--epochs",
        1,
        "--batch-size",
        40,
        "--out",
        run,
    )
    assert result.exit_code == 0, result.output
    result = invoke("evaluate", run)
    assert result.exit_code == 0, result.output
    assert "the 30 least accurate of 40 classes" in " ".join(result.output.split())
    report = json.loads((run / "confusion.json").read_text())
    assert len(report["per_class"]) == 40 and np.array(report["confusion"]).shape == (40, 40)
    assert (run / "confusion.png").read_bytes()[:4] == b"\x89PNG"


def test_confusion_plot_of_1000_classes_draws_no_cell_text(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    from edgecifar.evaluate import CELL_TEXT_MAX, plot_confusion

    texts = []
    monkeypatch.setattr(Axes, "text", lambda self, *a, **k: texts.append(a))  # counts what would be drawn
    matrix = np.random.default_rng(0).integers(0, 3, (1000, 1000))
    matrix[7] = 0  # a class without test images
    plot_confusion(matrix, [f"c{i}" for i in range(1000)], "1,000 classes", tmp_path / "big.png")
    assert texts == [] and (tmp_path / "big.png").read_bytes()[:4] == b"\x89PNG"
    plot_confusion(
        matrix[:CELL_TEXT_MAX, :CELL_TEXT_MAX], [f"c{i}" for i in range(CELL_TEXT_MAX)], "few", tmp_path / "small.png"
    )
    assert len(texts) == CELL_TEXT_MAX**2


def test_evaluate_corrupt_checkpoint(cli_run, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(cli_run, broken)
    (broken / "model.safetensors").write_bytes(b"junk")
    assert_one_line_error(invoke("evaluate", broken), 4)
    (broken / "config.json").write_text("{not json")
    assert_one_line_error(invoke("evaluate", broken), 4)
