"""Seeds of one recipe (`train --seeds N`, edgecifar.seeds): the runs, the summary (mean, standard deviation,
each run), a series that continues where it stopped, refusal of runs that are not one recipe, and two models
compared over their seeds (difference of the means with Welch's interval) by `compare`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from edgecifar.cli import app
from edgecifar.errors import UsageError
from edgecifar.seeds import compare_seeds, load_group, summarize, train_seeds
from edgecifar.train import TrainConfig


def recipe(data, out, cache, **kw) -> TrainConfig:
    base = dict(
        model="scratch_cnn",
        data=str(data),
        cache_dir=str(cache),
        epochs=1,
        batch_size=16,
        lr=0.01,
        out=str(out),
        seed=5,
    )
    return TrainConfig(**{**base, **kw})


def test_seeds_train_into_their_folders_and_are_summarized(image_tree, tmp_path):
    lines: list[str] = []
    summary = train_seeds(recipe(image_tree, tmp_path / "m", tmp_path / "c"), 2, log=lines.append)
    runs = [tmp_path / "m-s5", tmp_path / "m-s6"]
    assert [r["run"] for r in summary["runs"]] == [str(r) for r in runs] and [r["seed"] for r in summary["runs"]] == [
        5,
        6,
    ]
    accs = [json.loads((r / "metrics.json").read_text())["test_acc"] for r in runs]
    assert summary["mean"] == pytest.approx(np.mean(accs)) and summary["std"] == pytest.approx(np.std(accs, ddof=1))
    assert summary["n"] == 2 and summary["model"] == "scratch_cnn" and summary["test_images"] == 30
    assert json.loads((tmp_path / "m-seeds.json").read_text()) == summary
    assert lines[-1].startswith("scratch_cnn over 2 seeds: mean ")
    # run again with one more seed: the two finished runs are kept, only the third is trained
    lines.clear()
    summary = train_seeds(recipe(image_tree, tmp_path / "m", tmp_path / "c"), 3, log=lines.append)
    assert summary["n"] == 3 and sum("already holds" in line for line in lines) == 2


def test_the_cli_option(image_tree, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--model",
            "scratch_cnn",
            "--data",
            str(image_tree),
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--cache-dir",
            str(tmp_path / "c"),
            "--seeds",
            "1",
            "--seed",
            "4",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r-s4" / "metrics.json").is_file() and "over 1 seed: mean" in result.output
    assert json.loads((tmp_path / "r-seeds.json").read_text())["std"] is None  # one run: no spread to give
    result = CliRunner().invoke(app, ["train", "--seeds", "2", "--nproc", "2", "--data", str(image_tree)])
    assert result.exit_code == UsageError.exit_code and "leave it out" in result.output


MODEL = {"model": "m", "num_classes": 2, "classes": ["a", "b"]}  # config.json's model section, its required keys


def fake_run(folder, seed, acc, lr=0.01, images=30):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model": MODEL,
                "train": {"model": "m", "lr": lr, "seed": seed, "out": str(folder)},
                "data": {"test": images},
            }
        )
    )
    (folder / "metrics.json").write_text(json.dumps({"test_acc": acc}))
    return folder


def test_two_models_over_seeds_with_welch(tmp_path):
    a = [fake_run(tmp_path / f"a-s{i}", i, acc) for i, acc in enumerate([0.902, 0.898, 0.905])]
    b = [fake_run(tmp_path / f"b-s{i}", i, acc) for i, acc in enumerate([0.899, 0.900, 0.897])]
    found = compare_seeds(summarize(a), summarize(b))
    assert found["comparison"].difference == pytest.approx(
        np.mean([0.902, 0.898, 0.905]) - np.mean([0.899, 0.9, 0.897])
    )
    assert found["comparison"].p_value > 0.05 and "not significantly different" in found["lines"][-1]
    result = CliRunner().invoke(app, ["compare", ",".join(map(str, a)), ",".join(map(str, b))])
    assert result.exit_code == 0 and "Welch 95 % interval" in result.output, result.output
    (tmp_path / "a-seeds.json").write_text(json.dumps(summarize(a)))
    assert load_group(str(tmp_path / "a-seeds.json"))["mean"] == pytest.approx(np.mean([0.902, 0.898, 0.905]))
    with pytest.raises(UsageError, match="at least 2 runs"):
        compare_seeds(summarize(a[:1]), summarize(b))


def test_runs_of_different_recipes_are_refused(tmp_path):
    a = [fake_run(tmp_path / "a-s0", 0, 0.9), fake_run(tmp_path / "a-s1", 1, 0.91, lr=0.02)]
    with pytest.raises(UsageError, match="differ in lr"):
        summarize(a)
    with pytest.raises(UsageError, match="no finished run"):
        summarize([tmp_path / "nothing"])
    result = CliRunner().invoke(app, ["compare", f"{a[0]},{tmp_path / 'nothing'}", f"{a[0]},{a[1]}"])
    assert result.exit_code == UsageError.exit_code and result.output.startswith("error:")


def test_a_run_made_before_an_option_existed_is_the_same_recipe(tmp_path):
    """An older config.json lacks options added since (their defaults keep the old behaviour) and names its size
    as img_size; a newer one records every option and the resolved input_size: the same recipe. A real
    difference (the backbone size) is still refused."""

    def run(folder, seed, train, model_side=32):
        folder.mkdir()
        config = {
            "model": {**MODEL, "img_size": model_side},
            "train": {"model": "m", "seed": seed, **train},
            "data": {"test": 9},
        }
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "metrics.json").write_text(json.dumps({"test_acc": 0.9}))
        return folder

    old = run(tmp_path / "old", 0, {"lr": 0.1, "img_size": 32})
    new = run(tmp_path / "new", 1, {"lr": 0.1, "img_size": None, "input_size": [32, 32], "eval_every": 1})
    assert summarize([old, new])["n"] == 2
    bigger = run(tmp_path / "bigger", 2, {"lr": 0.1, "img_size": 40, "input_size": [32, 32]})
    with pytest.raises(UsageError, match="differ in img_size"):
        summarize([old, bigger])
