"""Runs that survive real life: resume with changed options, SIGTERM, a full disk, divergence, a few steps,
leftover folders and data paths (issue 18: G1, G2, G4, G5, G12; issue 12: F26)."""

from __future__ import annotations

import errno
import json
import resource
import signal
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

import edgecifar.train as train_module
from edgecifar.cli import app
from edgecifar.errors import CheckpointError, DataError, DiskFullError, EdgecifarError, TrainingError
from edgecifar.runs import load_run, read_config
from edgecifar.train import TrainConfig, make_scheduler, train
from edgecifar.utils import atomic_path, data_source, terminate_as_interrupt, write_json

QUIET = {"log": lambda *a: None}


def tiny(data, out, **kw) -> TrainConfig:
    """60 training images in batches of 16: 4 steps an epoch."""
    base = dict(model="scratch_cnn", data=str(data), epochs=2, batch_size=16, lr=0.01, out=str(out), seed=3)
    return TrainConfig(**{**base, **kw})


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def checkpoint_epoch(run) -> int:
    return torch.load(run / "checkpoint.pt", weights_only=True)["epoch"]


def stop_in_epoch(monkeypatch, index: int, action):
    """Make `action()` happen at the start of epoch `index` (0-based) instead of training it."""
    real = train_module._train_epoch

    def epoch(*args, **kwargs):
        if args[8] == index:
            action()
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "_train_epoch", epoch)


# ---------------------------------------------------------------- the schedule: any number of steps (F26)


def test_one_cycle_takes_any_step_count():
    for total in range(1, 41):
        optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1, momentum=0.9)
        scheduler = make_scheduler(optimizer, TrainConfig(lr=0.1), total)
        lrs = []
        for _ in range(total):
            lrs.append(scheduler.get_last_lr()[0])  # the rate of every step that is taken
            optimizer.step()
            scheduler.step()
        assert all(0 < lr <= 0.1 + 1e-12 for lr in lrs), total


def test_five_steps_train(image_tree, tmp_path):
    """40 images at batch 8 for one epoch, or one batch for five epochs: once a ZeroDivisionError."""
    run = train(tiny(image_tree, tmp_path / "run", cache_dir=str(tmp_path / "c"), epochs=5, batch_size=64), **QUIET)
    assert len(json.loads((run / "metrics.json").read_text())["epochs"]) == 5


def test_fast_forward_matches_stepping():
    """A resumed schedule starts where an uninterrupted one is after the same steps (learning rate and momentum)."""

    def stepped(done):
        optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1, momentum=0.9, nesterov=True)
        scheduler = make_scheduler(optimizer, TrainConfig(lr=0.3), 20)
        for _ in range(done):
            optimizer.step()
            scheduler.step()
        return optimizer.param_groups[0]

    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1, momentum=0.9, nesterov=True)
    make_scheduler(optimizer, TrainConfig(lr=0.3), 20, done_steps=7)
    assert optimizer.param_groups[0]["lr"] == stepped(7)["lr"]
    assert optimizer.param_groups[0]["momentum"] == stepped(7)["momentum"]


# ---------------------------------------------------------------- resume with changed options (G1)


def one_cycle_lr(peak: float, total: int, step: int) -> float:
    """torch's OneCycleLR on its own, stepped `step` times: what a run's schedule must give at that step."""
    optimizer = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=peak, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=peak, total_steps=total, pct_start=0.2, div_factor=20, final_div_factor=200
    )
    for _ in range(step):
        optimizer.step()
        scheduler.step()
    return scheduler.get_last_lr()[0]


def test_resume_extends_the_schedule_and_applies_a_new_lr(image_tree, tmp_path):
    cache = str(tmp_path / "c")
    run = train(tiny(image_tree, tmp_path / "run", cache_dir=cache), **QUIET)
    said = []
    train(TrainConfig(out=str(run), resume=True, epochs=4, lr=0.05), log=said.append)  # the rest: the run's
    epochs = json.loads((run / "metrics.json").read_text())["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4]
    # epochs 3 and 4 follow a 16-step schedule with peak 0.05, from step 8 on
    assert epochs[2]["lr"] == pytest.approx(one_cycle_lr(0.05, 16, 12))
    assert epochs[3]["lr"] == pytest.approx(one_cycle_lr(0.05, 16, 16))
    config = json.loads((run / "config.json").read_text())
    assert (config["train"]["epochs"], config["train"]["lr"], config["train"]["model"]) == (4, 0.05, "scratch_cnn")
    assert config["resumed"] == [{"at_epoch": 2, "changed": {"epochs": [2, 4], "lr": [0.01, 0.05]}}]
    assert any("from epoch 3" in line and "epochs 2 -> 4" in line for line in said)


def test_resume_refuses_other_changes_and_leaves_the_run_alone(image_tree, tmp_path):
    cache = str(tmp_path / "c")
    run = train(tiny(image_tree, tmp_path / "run", cache_dir=cache), **QUIET)
    before = snapshot(run)
    for change, match in (
        ({"optimizer": "adamw"}, "cannot change --optimizer adamw"),
        ({"batch_size": 8}, "cannot change --batch-size 8"),
        ({"model": "edge_tiny", "seed": 5}, "--model edge_tiny .*--seed 5"),
        ({"epochs": 1}, "already trained 2 epochs"),
    ):
        with pytest.raises(CheckpointError, match=match):
            train(tiny(image_tree, run, cache_dir=cache, resume=True, **change), **QUIET)
    assert snapshot(run) == before


def test_config_changes_only_once_the_resume_has_saved_an_epoch(image_tree, tmp_path, monkeypatch):
    cache = str(tmp_path / "c")
    run = train(tiny(image_tree, tmp_path / "run", cache_dir=cache), **QUIET)
    before = snapshot(run)

    def fail():
        raise EdgecifarError("boom")

    stop_in_epoch(monkeypatch, 2, fail)
    with pytest.raises(EdgecifarError, match="boom"):
        train(tiny(image_tree, run, cache_dir=cache, resume=True, epochs=4), **QUIET)
    assert snapshot(run) == before  # config.json still says 2 epochs, as the weights and metrics do


def test_resume_refuses_other_data(image_tree, tmp_path):
    from export_fixtures import make_image_tree

    cache = str(tmp_path / "c")
    run = train(tiny(image_tree, tmp_path / "run", cache_dir=cache, epochs=1), **QUIET)
    other = make_image_tree(tmp_path / "other", n_train=4, n_test=2)
    with pytest.raises(CheckpointError, match="not the run's"):
        train(tiny(other, run, cache_dir=cache, resume=True), **QUIET)


# ---------------------------------------------------------------- SIGTERM and leftovers (G2)


def deliver(signum: int) -> None:
    """Run the Python handler installed for `signum`, as the interpreter does when the signal arrives. A real
    signal raised inside pytest's process once it has loaded OpenVINO and onnxruntime crashed the interpreter
    (exit 139, twice in CI runs); real delivery is tested in a process of its own
    (test_export.py::test_sigterm_cleans_up_like_ctrl_c)."""
    signal.getsignal(signum)(signum, None)


def sigterm():
    deliver(signal.SIGTERM)


def test_sigterm_in_the_first_epoch_leaves_no_run(image_tree, tmp_path, monkeypatch):
    before = signal.getsignal(signal.SIGTERM)
    stop_in_epoch(monkeypatch, 0, sigterm)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(image_tree, tmp_path / "run", cache_dir=str(tmp_path / "c")), **QUIET)
    assert not (tmp_path / "run").exists()
    assert signal.getsignal(signal.SIGTERM) is before  # the handler lives only as long as the training


def test_sigterm_later_keeps_a_resumable_run(image_tree, tmp_path, monkeypatch):
    stop_in_epoch(monkeypatch, 1, sigterm)
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--data",
            str(image_tree),
            "--epochs",
            "2",
            "--batch-size",
            "16",
            "--cache-dir",
            str(tmp_path / "c"),
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 143 and "interrupted" in result.output
    assert "--resume --out" in result.output and checkpoint_epoch(tmp_path / "run") == 1
    monkeypatch.undo()
    train(TrainConfig(out=str(tmp_path / "run"), resume=True), **QUIET)
    assert checkpoint_epoch(tmp_path / "run") == 2 and (tmp_path / "run" / "model.safetensors").is_file()


def test_a_folder_without_checkpoint_is_not_a_run(image_tree, tmp_path):
    cache = str(tmp_path / "c")
    for name, resume in (("killed", False), ("killed-resumed", True)):
        folder = tmp_path / name  # what SIGKILL in the first epoch leaves
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        (folder / ".checkpoint.pt.k3j2x9.pt").write_bytes(b"half")
        said = []
        train(tiny(image_tree, folder, cache_dir=cache, epochs=1, resume=resume), log=said.append)
        assert sorted(p.name for p in folder.iterdir()) == [
            "checkpoint.pt",
            "config.json",
            "metrics.json",
            "model.safetensors",
        ]
        assert not resume or any("nothing to resume" in line for line in said)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(EdgecifarError, match="not a run"):
        train(tiny(image_tree, foreign, cache_dir=cache, epochs=1), **QUIET)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_terminate_as_interrupt_raises_once():
    with pytest.raises(KeyboardInterrupt) as caught, terminate_as_interrupt():
        deliver(signal.SIGTERM)
    assert caught.value.signum == signal.SIGTERM
    with terminate_as_interrupt():
        try:
            deliver(signal.SIGHUP)
        except KeyboardInterrupt:
            deliver(signal.SIGHUP)  # a second signal does not cut the cleanup short


# ---------------------------------------------------------------- a full disk (G4)


@pytest.fixture()
def file_size_limit():
    """set(bytes): make larger writes fail with EFBIG, as `ulimit -f` does; the limit is lifted afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    yield lambda limit: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_full_disk_keeps_the_last_checkpoint(image_tree, tmp_path, monkeypatch, file_size_limit):
    """scratch_cnn's checkpoint is 9 MB: under a 1 MB limit the second one cannot be written."""
    stop_in_epoch(monkeypatch, 1, lambda: file_size_limit(1 << 20))
    with pytest.raises(DiskFullError, match="file-size limit .*checkpoint.pt.* keeps its checkpoint of epoch 1"):
        train(tiny(image_tree, tmp_path / "run", cache_dir=str(tmp_path / "c")), **QUIET)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint.pt", "config.json"]
    assert checkpoint_epoch(tmp_path / "run") == 1


def test_full_disk_in_the_cli_is_one_line(image_tree, tmp_path):
    """A real file-size limit on a real `edgecifar train`: one line, exit 8, no folder left."""
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))  # noqa: E731
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgecifar",
            "train",
            "--data",
            str(image_tree),
            "--epochs",
            "1",
            "--cache-dir",
            str(tmp_path / "c"),
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        preexec_fn=limit,
        timeout=600,
    )
    assert done.returncode == DiskFullError.exit_code, done.stderr
    assert "error: the file-size limit is reached" in done.stderr and "Traceback" not in done.stderr
    assert "nothing was kept" in done.stderr and not (tmp_path / "run").exists()


def test_atomic_path_says_the_disk_is_full(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    target.write_text("old")
    with pytest.raises(DiskFullError, match=f"the disk is full: could not write {target}; no file was replaced"):
        with atomic_path(target) as tmp:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["report.json"]


# ---------------------------------------------------------------- divergence (G5)


def test_divergence_stops_and_keeps_the_last_good_epoch(image_tree, tmp_path):
    cache = str(tmp_path / "c")
    run = train(tiny(image_tree, tmp_path / "run", cache_dir=cache, epochs=1), **QUIET)
    before = snapshot(run)
    with pytest.raises(
        TrainingError,
        match=r"loss became (nan|inf) in epoch 2, step \d of 4 .*keeps its checkpoint "
        r"of epoch 1",
    ):
        train(tiny(image_tree, run, cache_dir=cache, resume=True, epochs=3, lr=1e6), **QUIET)
    assert snapshot(run) == before
    train(tiny(image_tree, run, cache_dir=cache, resume=True, epochs=3), **QUIET)  # a sound --lr goes on from it
    assert checkpoint_epoch(run) == 3


def test_divergence_in_the_first_epoch_keeps_nothing(image_tree, tmp_path):
    args = ["--lr", "1e6", "--epochs", "2", "--batch-size", "8", "--cache-dir", str(tmp_path / "c")]
    result = CliRunner().invoke(app, ["train", "--data", str(image_tree), *args, "--out", str(tmp_path / "run")])
    assert result.exit_code == TrainingError.exit_code
    assert "training diverged" in result.output and "nothing was kept" in result.output
    assert not (tmp_path / "run").exists()


def test_non_finite_weights_are_never_loaded(image_tree, tmp_path):
    from safetensors.torch import load_file, save_file

    run = train(tiny(image_tree, tmp_path / "run", cache_dir=str(tmp_path / "c"), epochs=1), **QUIET)
    state = load_file(str(run / "model.safetensors"))
    next(iter(state.values()))[0] = float("nan")
    save_file(state, str(run / "model.safetensors"))
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        load_run(run)


def test_json_is_always_strict(tmp_path):
    write_json(tmp_path / "m.json", {"loss": float("nan"), "acc": [1.0, float("inf")]})
    assert json.loads((tmp_path / "m.json").read_text(), parse_constant=pytest.fail) == {
        "loss": None,
        "acc": [1.0, None],
    }


# ---------------------------------------------------------------- data paths (G12)


def test_relative_data_is_recorded_absolute(image_tree, tmp_path, monkeypatch):
    monkeypatch.chdir(image_tree.parent)
    run = train(tiny(image_tree.name, tmp_path / "run", cache_dir=str(tmp_path / "c"), epochs=1), **QUIET)
    config = read_config(run)
    assert config.data["source"] == config.train["data"] == str(image_tree)
    monkeypatch.chdir(tmp_path)
    assert data_source(config) == str(image_tree)
    gone = replace(config, data={**config.data, "source": str(tmp_path / "moved-away")})
    with pytest.raises(DataError, match="moved-away, is not there: pass --data"):
        data_source(gone)
    assert data_source(gone, "elsewhere") == "elsewhere"


def test_any_command_says_the_disk_is_full(monkeypatch, tmp_path):
    """A full disk that no library call reported itself still ends in one line and exit 8."""
    import edgecifar.evaluate

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "confusion.png"))

    monkeypatch.setattr(edgecifar.evaluate, "evaluate_run", full)
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path)])
    assert result.exit_code == DiskFullError.exit_code
    assert result.output.strip() == f"error: the disk is full: could not write {tmp_path / 'confusion.png'}"


# ---------------------------------------------------------------- one process per run folder (H6)

HOLD = """
import sys, time
from pathlib import Path
from edgecifar.utils import take_folder
Path(sys.argv[1]).mkdir()
take_folder(Path(sys.argv[1]), sys.argv[2])  # what claim_run_dir takes (without importing torch here)
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture
def held(tmp_path):
    """A run folder taken by another real process (which claim_run_dir left holding it), and that process."""
    out = tmp_path / "dual"
    from edgecifar.runs import LOCK

    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out), LOCK], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "held\n"
    yield out, proc
    proc.kill()
    proc.wait()


def test_a_folder_held_by_another_process_is_refused_at_once(image_tree, tmp_path, held):
    from edgecifar.runs import choose_run_dir, claim_run_dir

    out, proc = held
    (out / "config.json").write_text('{"train": "the other run\'s"}')  # what it wrote so far: never touched
    before = snapshot(out)
    for attempt in (
        lambda: choose_run_dir(str(out), "scratch_cnn"),
        lambda: claim_run_dir(out),
        lambda: train(tiny(image_tree, out, cache_dir=str(tmp_path / "c"), epochs=1), **QUIET),
        lambda: train(tiny(image_tree, out, cache_dir=str(tmp_path / "c"), epochs=1, resume=True), **QUIET),
    ):
        with pytest.raises(EdgecifarError, match=rf"{out} is in use by another process \(pid {proc.pid} on "):
            attempt()
    result = CliRunner().invoke(
        app,
        ["train", "--data", str(image_tree), "--epochs", "1", "--cache-dir", str(tmp_path / "c"), "--out", str(out)],
    )
    assert result.exit_code == 1 and result.output.count("\n") == 1 and f"pid {proc.pid}" in result.output
    assert snapshot(out) == before


def test_a_killed_holder_releases_the_folder(image_tree, tmp_path, held):
    out, proc = held
    proc.kill()  # SIGKILL: no cleanup ran, the lock file stays, the system released the lock
    proc.wait()
    assert (out / ".edgecifar-lock").is_file()
    run = train(tiny(image_tree, out, cache_dir=str(tmp_path / "c"), epochs=1), **QUIET)
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoint.pt",
        "config.json",
        "metrics.json",
        "model.safetensors",
    ]  # its lock file gone with its end


def test_unnamed_runs_pass_a_held_folder_by(tmp_path, held, monkeypatch):
    from edgecifar.runs import choose_run_dir

    out, _ = held
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    out.rename(tmp_path / "runs" / "scratch_cnn")  # the lock moves with its folder
    assert choose_run_dir(None, "scratch_cnn") == tmp_path.joinpath("runs", "scratch_cnn-2").relative_to(tmp_path)


def test_a_finished_training_lets_the_folder_go(image_tree, tmp_path):
    run = train(tiny(image_tree, tmp_path / "run", cache_dir=str(tmp_path / "c"), epochs=1), **QUIET)
    code = (
        "import sys; from pathlib import Path; from edgecifar.utils import take_folder; "
        "print(take_folder(Path(sys.argv[1]), '.edgecifar-lock') or 'taken')"
    )
    taken = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True, text=True)
    assert taken.stdout == "taken\n", taken.stderr


def test_another_tools_config_json_is_not_a_corrupt_run(tmp_path):
    from edgecifar.runs import read_config

    hf = tmp_path / "bert-base"  # a Hugging Face model folder
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "hidden_size": 768}))
    with pytest.raises(
        CheckpointError,
        match=r"bert-base is not a run folder made by `edgecifar train`: its "
        r"config.json is another tool's",
    ):
        read_config(hf)
    (hf / "config.json").write_text(json.dumps({"model": {"classes": []}, "train": {}}))  # ours, hand-edited
    with pytest.raises(CheckpointError, match=r"corrupt .*config.json: no model name"):
        read_config(hf)
    (hf / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"corrupt .*config.json"):
        read_config(hf)


def test_an_unwritable_out_is_one_line_naming_the_option(tmp_path):
    from edgecifar.runs import claim_run_dir

    (tmp_path / "file").write_text("")
    with pytest.raises(EdgecifarError, match=r"cannot write to .*file/run: .*pass --out with a folder you can write"):
        claim_run_dir(tmp_path / "file" / "run")  # under a file: cannot be made, even by root
