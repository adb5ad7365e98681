"""Training on several processes: torchrun + DDP on gloo, 2 CPU processes over tiny synthetic data."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from typer.testing import CliRunner

from edgecifar import distributed
from edgecifar.cli import app
from edgecifar.distributed import Ranks, follower_errors
from edgecifar.errors import DataError, EdgecifarError, TrainingError
from edgecifar.train import TrainConfig, train

# 49 images in global batches of 16: the last one holds 1 image, so process 1's part of it is empty; fp32, since
# bf16 autocast (scratch_cnn's recipe on bf16 CPUs) rounds a split batch's gradients apart from the whole one's
OPTIONS = dict(
    model="scratch_cnn", epochs=2, batch_size=16, lr=0.01, optimizer="muon", seed=3, max_train=49, bf16=False
)
KILL_IN_EPOCH_2 = """
import os, signal, time
import edgecifar.train as t
if os.environ.get("RANK") == "0":  # a slow evaluation: the others must not start epoch 2 before it is saved
    evaluate = t.evaluate
    t.evaluate = lambda *args, **kwargs: (time.sleep(3), evaluate(*args, **kwargs))[1]
if os.environ.get("RANK") == os.environ["KILLED_RANK"]:
    real = t._train_epoch
    def killed(*args, **kwargs):
        if args[8] == 1:  # the epoch index
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    t._train_epoch = killed
"""


def command_line(data, cache, out, **options) -> list[str]:
    given = {**OPTIONS, "data": data, "cache_dir": cache, "out": out, **options}
    return [
        (f"--{'' if v else 'no-'}{k}" if isinstance(v, bool) else f"--{k.replace('_', '-')}={v}")
        for k, v in given.items()
    ]


def launch(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    """`edgecifar train ARGS` in a new process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "edgecifar", "train", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )


def assert_same_weights(a, b):
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.fixture(scope="module")
def one_process(image_tree, tmp_path_factory):
    """The reference: the same options trained in one process."""
    root = tmp_path_factory.mktemp("single")
    cfg = TrainConfig(data=str(image_tree), cache_dir=str(root / "cache"), out=str(root / "run"), **OPTIONS)
    return train(cfg, log=lambda *a: None)


def test_two_processes_train_as_one(image_tree, one_process, tmp_path):
    out = tmp_path / "two"
    done = launch(["--nproc=2", *command_line(image_tree, tmp_path / "cache", out)])
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("training scratch_cnn") == 1 and done.stdout.count("epoch 2/2") == 1  # rank 0 speaks
    assert "x 2 processes (gloo, global batch 16)" in done.stdout
    assert_same_weights(one_process, out)  # augmentation on: each process augments the global batch as one would
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in one_process.iterdir())
    configs = [json.loads((run / "config.json").read_text()) for run in (one_process, out)]
    assert configs[0].keys() == configs[1].keys() and configs[0]["train"].keys() == configs[1]["train"].keys()
    assert configs[1]["distributed"] == {
        "world_size": 2,
        "backend": "gloo",
        "global_batch_size": 16,
        "batch_size_per_process": [8, 8],
        "lr": 0.01,
        "sync_batchnorm": False,
    }
    assert configs[0]["distributed"]["world_size"] == 1
    metrics = [json.loads((run / "metrics.json").read_text()) for run in (one_process, out)]
    assert metrics[0].keys() == metrics[1].keys() and metrics[1]["processes"] == 2
    assert metrics[1]["test_acc"] == pytest.approx(metrics[0]["test_acc"], abs=0.04)  # at most one image of 30


@pytest.mark.parametrize("killed", [0, 1])
def test_a_killed_process_stops_the_run_in_one_line_and_it_resumes(image_tree, one_process, tmp_path, killed):
    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(KILL_IN_EPOCH_2)
    out = tmp_path / "run"
    args = ["--nproc=2", *command_line(image_tree, tmp_path / "cache", out)]
    done = launch(args, env={"PYTHONPATH": str(tmp_path / "inject"), "KILLED_RANK": str(killed)})
    assert done.returncode == 128 + 9, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: training process {killed} of 2 was killed by SIGKILL"), done.stderr
    assert "Traceback" not in done.stderr and "ChildFailedError" not in done.stderr, done.stderr
    assert (out / "checkpoint.pt").exists() and not (out / "model.safetensors").exists()

    resumed = launch(["--nproc=2", "--resume", f"--out={out}"])
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(one_process, out)
    assert json.loads((out / "config.json").read_text())["resumed"][0]["at_epoch"] == 1


def test_each_process_takes_its_part_and_their_mean_gradient_is_the_global_batchs():
    torch.manual_seed(0)
    layer = torch.nn.Linear(5, 3)
    for batch in (1, 5, 16, 17):
        x, y = torch.randn(batch, 5), torch.randint(0, 3, (batch,))
        whole = torch.autograd.grad(F.cross_entropy(layer(x), y), layer.weight)[0]
        for world in (1, 2, 3, 4):
            parts = [Ranks(r, world).bounds(batch) for r in range(world)]
            assert [i for start, stop in parts for i in range(start, stop)] == list(range(batch))
            assert max(b - a for a, b in parts) - min(b - a for a, b in parts) <= 1
            mean = (
                sum(
                    torch.autograd.grad(
                        F.cross_entropy(layer(x[a:b]), y[a:b]) * Ranks(r, world).share(batch)
                        if b > a
                        else layer(x[a:b]).sum() * 0.0,
                        layer.weight,
                    )[0]
                    for r, (a, b) in enumerate(parts)
                )
                / world
            )  # what DDP's all-reduce computes
            torch.testing.assert_close(mean, whole)


def test_nproc_passes_the_given_options_on_to_torchrun(monkeypatch):
    launched = []
    monkeypatch.setattr(distributed, "launch", lambda nproc, argv: launched.append((nproc, argv)))
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--nproc",
            "3",
            "--model",
            "airnet_s",
            "--no-pretrained",
            "--lr",
            "0.5",
            "--flip",
            "alternating",
            "--teacher",
            "runs/a",
            "--teacher",
            "runs/b",
            "--out",
            "runs/x",
            "--resume",
        ],
    )
    assert result.exit_code == 0, result.output
    assert launched == [
        (
            3,
            [
                "--model",
                "airnet_s",
                "--no-pretrained",
                "--lr",
                "0.5",
                "--flip",
                "alternating",
                "--teacher",
                "runs/a",
                "--teacher",
                "runs/b",
                "--out",
                "runs/x",
                "--resume",
            ],
        )
    ]


def test_nproc_under_torchrun_is_refused(monkeypatch):
    for key, value in {
        "WORLD_SIZE": "2",
        "RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29500",
        "TORCHELASTIC_RUN_ID": "job",
    }.items():  # what torchrun gives each process
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(app, ["train", "--nproc", "2"])
    assert result.exit_code == 2 and "--nproc starts torchrun itself: under torchrun" in result.output


def test_rank_0_speaks_for_the_run():
    follower = Ranks(1, 2)
    with pytest.raises(SystemExit) as stopped, follower_errors(follower):
        raise KeyboardInterrupt  # torchrun stopping the others after one failed
    assert stopped.value.code == 130
    with pytest.raises(SystemExit) as stopped, follower_errors(follower):
        raise TrainingError("diverged")  # rank 0 says it
    assert stopped.value.code == TrainingError.exit_code
    with pytest.raises(DataError, match="^process 1 of 2: data path not found"), follower_errors(follower):
        raise DataError("data path not found")
    with (
        pytest.raises(EdgecifarError, match="^process 1 of 2: RuntimeError: connection closed$"),
        follower_errors(follower),
    ):
        raise RuntimeError("connection closed\n(a page more)")
    with pytest.raises(KeyboardInterrupt), follower_errors(Ranks(0, 2)):
        raise KeyboardInterrupt
    with pytest.raises(RuntimeError), follower_errors(Ranks(0, 2)):  # rank 0 shows a bug's traceback
        raise RuntimeError("a bug")


# ---------------------------------------------------------------- a distributed environment nobody launched (H7)

STALE = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29511"}


def test_torchrun_variables_left_in_the_shell_are_one_line(image_tree, tmp_path, monkeypatch):
    for key, value in STALE.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    result = CliRunner().invoke(
        app,
        [
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
    )
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert (
        "process 0 of 2 (RANK=0, WORLD_SIZE=2, LOCAL_RANK=0, MASTER_ADDR=127.0.0.1, MASTER_PORT=29511)" in result.output
        and "no torchrun started it" in result.output
    )
    assert "`unset RANK WORLD_SIZE LOCAL_RANK MASTER_ADDR MASTER_PORT`" in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "env, message",
    [
        ({"RANK": "2"}, "RANK 2 is not below WORLD_SIZE 2"),
        ({"LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "2"}, "LOCAL_RANK 3 is not below LOCAL_WORLD_SIZE 2"),
        ({"MASTER_PORT": None}, "MASTER_ADDR and MASTER_PORT are needed"),
        ({"RANK": "zero"}, "not whole numbers"),
    ],
)
def test_a_distributed_environment_that_contradicts_itself(monkeypatch, env, message):
    for key, value in {**STALE, "TORCHELASTIC_RUN_ID": "job", **env}.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    with pytest.raises(EdgecifarError, match=message) as error:
        distributed.from_environment()
    assert "unset" in str(error.value) and "\n" not in str(error.value)


def test_one_process_ignores_a_lone_rank(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.from_environment() == Ranks()


def test_a_rendezvous_that_never_completes_is_bounded(monkeypatch):
    import threading

    monkeypatch.setattr(distributed, "WAIT_NOTICE_S", 0.0)
    said = []
    with pytest.raises(TrainingError, match=r"process 0 of 2 waited 1 s at .* did not come"):
        distributed.rendezvous(threading.Event().wait, Ranks(0, 2), timeout=0.6, notice=said.append)
    assert len(said) == 1 and "is waiting for the others" in said[0]

    def refused():
        raise RuntimeError("connection refused")

    with pytest.raises(RuntimeError, match="connection refused"):
        distributed.rendezvous(refused, Ranks(0, 2), timeout=60)


@pytest.mark.parametrize("signum", [2, 15], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_a_waiting_rendezvous(image_tree, tmp_path, signum):
    """A real rendezvous (torch's TCPStore, one process of two): Ctrl-C and SIGTERM end it, with their code."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, **STALE, "MASTER_PORT": str(port), "TORCHELASTIC_RUN_ID": "test", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgecifar",
            "train",
            *command_line(image_tree, tmp_path / "cache", tmp_path / "run", epochs=1),
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stderr.readline()  # the first line it says: that it waits
        assert "process 0 of 2 is waiting for the others" in line, line
        proc.send_signal(signum)
        assert proc.wait(timeout=60) == 128 + signum
    finally:
        proc.kill()
        proc.wait()


def test_variables_of_a_torchrun_that_is_gone(monkeypatch):
    """A shell or notebook started under torchrun keeps every variable its agent set, TORCHELASTIC_RUN_ID
    included; the agent, which hosted the group's store at MASTER_ADDR:MASTER_PORT, is gone."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    for key, value in {
        **STALE,
        "MASTER_PORT": str(port),
        "TORCHELASTIC_RUN_ID": "none",
        "TORCHELASTIC_USE_AGENT_STORE": "True",
    }.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(
        EdgecifarError,
        match=rf"the torchrun that set this environment is gone \(nothing listens "
        rf"at 127.0.0.1:{port}.*`unset RANK WORLD_SIZE LOCAL_RANK",
    ):
        distributed.from_environment()
