"""Training on several processes (and machines) with PyTorch's own engine: torchrun + DistributedDataParallel.

`torchrun --nproc_per_node N -m edgecifar train ...` starts N copies of the command and gives each its RANK,
LOCAL_RANK and WORLD_SIZE; `edgecifar train --nproc N` runs that torchrun for the user (`launch`). Each copy
joins PyTorch's process group (gloo for CPU tensors, NCCL for CUDA ones) and trains the same model:

- `--batch-size` is the global batch. Every process draws the epoch's seeded permutation, cuts it into the
  global batches one process would use, augments each whole batch as one process would, and trains on its
  own slice of it (`shard`). Its loss is weighted by its share of the batch (`Ranks.share`), so the mean of
  the processes' gradients that DDP computes is the gradient of the global batch's mean loss: the update of
  one process, whatever the number of processes. The learning rate is that global batch's, not rescaled.
- Batch norm: on CUDA, SyncBatchNorm normalizes over the global batch, so models with batch norm train as on
  one process too. PyTorch's SyncBatchNorm runs on accelerators only; on CPUs each process normalizes its own
  slice (DDP copies rank 0's running statistics to all processes at every step).
- Every process computes the same update from the same all-reduced gradients (the optimizers here, Muon
  included, are deterministic functions of gradient and state), so the weights stay identical;
  `check_in_sync` verifies it after every epoch.
- Rank 0 alone decides the options (resume included), writes the run folder, logs and evaluates; the others
  receive its options and checkpoint (`broadcast`) and train silently.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from .errors import TrainingError, UsageError
from .utils import available_cores

ELASTIC_LOGGERS = ("torch.distributed.run", "torch.distributed.elastic")


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes: (0, 1, 0, None) on one process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def main(self) -> bool:
        """Whether this process writes the run, logs and evaluates."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def bounds(self, batch: int) -> tuple[int, int]:
        """This process's slice [start, stop) of a global batch of `batch` images: contiguous, the sizes of
        the processes' slices differing by one at most (the first ones take the extra images)."""
        per, extra = divmod(batch, self.world_size)
        start = self.rank * per + min(self.rank, extra)
        return start, start + per + (self.rank < extra)

    def share(self, batch: int) -> float:
        """The weight of this process's mean loss: its slice's size times the number of processes, over the
        global batch, so that DDP's mean of the gradients is the global batch's (1.0 on one process)."""
        start, stop = self.bounds(batch)
        return (stop - start) * self.world_size / batch

    def summary(self, batch_size: int, sync_batchnorm: bool) -> str:
        """What the run's first line says of the processes ("" on one process)."""
        if not self.distributed:
            return ""
        return (
            f" x {self.world_size} processes ({self.backend}, global batch {batch_size}"
            f"{', SyncBatchNorm' if sync_batchnorm else ''})"
        )

    def describe(self, batch_size: int, lr: float, sync_batchnorm: bool) -> dict[str, Any]:
        """What config.json records of the processes: the global batch, each process's part of it, the
        learning rate (that of the global batch) and whether batch norm is synchronized."""
        parts = [Ranks(r, self.world_size).bounds(batch_size) for r in range(self.world_size)]
        return {
            "world_size": self.world_size,
            "backend": self.backend,
            "global_batch_size": batch_size,
            "batch_size_per_process": [stop - start for start, stop in parts],
            "lr": lr,
            "sync_batchnorm": sync_batchnorm,
        }


# what torchrun (and the launchers built on it) set for each process it starts; TORCHELASTIC_RUN_ID only it sets
RENDEZVOUS_VARS = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "GROUP_WORLD_SIZE",
    "ROLE_RANK",
    "ROLE_NAME",
    "ROLE_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
    "TORCHELASTIC_RESTART_COUNT",
    "TORCHELASTIC_MAX_RESTARTS",
    "TORCHELASTIC_USE_AGENT_STORE",
)
WAIT_NOTICE_S = 5.0  # a rendezvous that takes longer says what it waits for
RENDEZVOUS_TIMEOUT_S = 300.0  # and gives up after this (EDGECIFAR_RENDEZVOUS_TIMEOUT, seconds, overrides it)


def from_environment() -> Ranks:
    """The ranks torchrun (or any launcher built on it) gave this process; one process when WORLD_SIZE is
    unset or 1. UsageError, in one line that names what is set and how to clear it, for a distributed
    environment that no torchrun started (variables left in a shell, a notebook, a job script) or that
    contradicts itself: joining it would wait for processes that never come."""
    env = os.environ
    set_vars = [k for k in RENDEZVOUS_VARS if k in env]
    shown = ", ".join(f"{k}={env[k]}" for k in set_vars)
    fix = (
        f"`unset {' '.join(set_vars)}` to train on one process, or start the processes with torchrun "
        f"(or `edgecifar train --nproc N`)"
    )
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        if world <= 1:
            return Ranks()
        rank, local = int(env["RANK"]), int(env.get("LOCAL_RANK", "0"))
        local_world = int(env.get("LOCAL_WORLD_SIZE", str(world)))
    except (KeyError, ValueError) as e:
        raise UsageError(f"WORLD_SIZE is set but RANK/LOCAL_RANK are not whole numbers ({e}; {shown}): {fix}") from None
    if "TORCHELASTIC_RUN_ID" not in env:
        raise UsageError(
            f"the environment says this is process {rank} of {world} ({shown}), but no torchrun "
            f"started it (TORCHELASTIC_RUN_ID is not set): {fix}"
        )
    wrong = [
        text
        for bad, text in (
            (not 0 <= rank < world, f"RANK {rank} is not below WORLD_SIZE {world}"),
            (not 0 <= local < local_world, f"LOCAL_RANK {local} is not below LOCAL_WORLD_SIZE {local_world}"),
            ("MASTER_ADDR" not in env or "MASTER_PORT" not in env, "MASTER_ADDR and MASTER_PORT are needed"),
        )
        if bad
    ]
    if wrong:
        raise UsageError(f"the distributed environment contradicts itself ({'; '.join(wrong)}; {shown}): {fix}")
    if env.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and _refused(env["MASTER_ADDR"], env["MASTER_PORT"]):
        # the agent that started us hosts the group's store there: gone, it is a shell (or a notebook) that
        # inherited its variables
        raise UsageError(
            f"the torchrun that set this environment is gone (nothing listens at "
            f"{env['MASTER_ADDR']}:{env['MASTER_PORT']}; {shown}): {fix}"
        )
    return Ranks(rank, world, local)


def _refused(host: str, port: str) -> bool:
    """Whether a TCP connection to host:port is refused outright (nothing listens); False if it opens, or if
    no answer comes within a second (a firewall: not known to be gone)."""
    import socket

    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return False
    except ConnectionRefusedError:
        return True
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def process_group() -> Iterator[Ranks]:
    """Join the training processes' group for the block (nothing to join on one process). The rendezvous is
    bounded (`rendezvous`): it says what it waits for, gives up with a TrainingError, and Ctrl-C or SIGTERM
    stop it."""
    ranks = from_environment()
    if not ranks.distributed:
        yield ranks
        return
    import torch.distributed as dist

    # gloo carries CPU tensors, NCCL CUDA ones: the device can then be chosen (or changed by a resume) later
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    rendezvous(lambda: dist.init_process_group(backend), ranks)
    try:
        yield Ranks(ranks.rank, ranks.world_size, ranks.local_rank, backend)
    finally:
        dist.destroy_process_group()


def rendezvous(
    join: Callable[[], None], ranks: Ranks, timeout: float | None = None, notice: Callable[[str], None] | None = None
) -> None:
    """Run `join` (torch's rendezvous, which blocks in C++ where no signal handler runs and waits up to 30
    minutes) on a helper thread, so that this one keeps handling Ctrl-C and SIGTERM. After WAIT_NOTICE_S a line
    says what it waits for; after `timeout` seconds (default: EDGECIFAR_RENDEZVOUS_TIMEOUT, else
    RENDEZVOUS_TIMEOUT_S) it raises TrainingError. `join`'s own errors are raised here."""
    import threading
    import time

    limit = (
        timeout if timeout is not None else float(os.environ.get("EDGECIFAR_RENDEZVOUS_TIMEOUT", RENDEZVOUS_TIMEOUT_S))
    )
    notice = notice or (lambda line: print(line, file=sys.stderr, flush=True))
    failed: list[BaseException] = []

    def run() -> None:
        try:
            join()
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            failed.append(e)

    helper = threading.Thread(target=run, name="edgecifar-rendezvous", daemon=True)  # never keeps us alive
    started = time.monotonic()
    helper.start()
    where = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
    said = False
    while helper.is_alive():
        helper.join(0.2)  # short waits: signal handlers run between them
        waited = time.monotonic() - started
        if not said and waited > WAIT_NOTICE_S and helper.is_alive():
            said = True
            notice(
                f"process {ranks.rank} of {ranks.world_size} is waiting for the others at {where} (up to "
                f"{limit:.0f} s; EDGECIFAR_RENDEZVOUS_TIMEOUT sets it)"
            )
        if waited > limit and helper.is_alive():
            raise TrainingError(
                f"process {ranks.rank} of {ranks.world_size} waited {limit:.0f} s at {where} and "
                f"the other processes did not come: start all {ranks.world_size} (torchrun on "
                f"every machine), or `unset RANK WORLD_SIZE` to train on one process"
            )
    if failed:
        raise failed[0]


@contextlib.contextmanager
def lost_peers(ranks: Ranks) -> Iterator[None]:
    """A process that stops mid-collective (killed, or failed) makes the others' collectives fail: gloo raises
    a RuntimeError naming the closed connection, NCCL a DistBackendError. In the block, they become a
    TrainingError that says so."""
    try:
        yield
    except RuntimeError as e:
        import torch.distributed as dist

        if not ranks.distributed or not (isinstance(e, dist.DistError) or "gloo" in str(e) or "NCCL" in str(e)):
            raise
        raise TrainingError(
            f"process {ranks.rank} of {ranks.world_size} lost contact with the others "
            f"({_first_line(e)}): another process stopped"
        ) from e


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def local_device(device: torch.device, ranks: Ranks) -> torch.device:
    """The device of this process: on CUDA, the GPU of its local rank (one GPU per process)."""
    if device.type != "cuda" or not ranks.distributed:
        return device
    if ranks.local_rank >= torch.cuda.device_count():
        raise UsageError(
            f"process {ranks.local_rank} of this machine has no GPU: {torch.cuda.device_count()} "
            f"here; start at most that many processes per machine"
        )
    torch.cuda.set_device(ranks.local_rank)
    return torch.device("cuda", ranks.local_rank)


def broadcast(obj: Any, ranks: Ranks) -> Any:
    """Rank 0's `obj` on every process (what the others pass is ignored). `obj` holds tensors, numbers,
    strings, None and lists or dicts of them: it travels as torch.save's bytes and is read back with
    weights_only=True, so no code is ever unpickled."""
    if not ranks.distributed:
        return obj
    import torch.distributed as dist

    if ranks.main:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        payload = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)
        size = torch.tensor([payload.numel()])
    else:
        size = torch.zeros(1, dtype=torch.long)
    dist.broadcast(size, 0)
    if not ranks.main:
        payload = torch.empty(int(size), dtype=torch.uint8)
    dist.broadcast(payload, 0)
    return obj if ranks.main else torch.load(io.BytesIO(payload.numpy().tobytes()), weights_only=True)


def node_first(load: Callable[[], Any], ranks: Ranks) -> Any:
    """`load()` on every process, the first process of each machine before the others: it decodes and caches
    (or downloads) the data there, and the others then read its cache instead of doing the same at once."""
    if not ranks.distributed:
        return load()
    import torch.distributed as dist

    result = load() if ranks.local_rank == 0 else None
    dist.barrier()
    return load() if ranks.local_rank != 0 else result


def barrier(ranks: Ranks) -> None:
    """Wait until every process gets here (nothing on one process)."""
    if ranks.distributed:
        import torch.distributed as dist

        dist.barrier()


def all_sum(values: list[float], ranks: Ranks) -> list[float]:
    """The sums of `values` over the processes (`values` on one process)."""
    if not ranks.distributed:
        return values
    import torch.distributed as dist

    total = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(total)
    return total.tolist()


def wrap(model: torch.nn.Module, device: torch.device, ranks: Ranks) -> tuple[torch.nn.Module, bool]:
    """`model` as DDP trains it, and whether its batch norm is synchronized. On CUDA, batch norm becomes
    SyncBatchNorm (timm's conversion: it keeps timm's fused BatchNormAct layers); the model itself keeps its
    parameters, so optimizer, EMA and checkpoints use it unwrapped. `model` itself on one process."""
    if not ranks.distributed:
        return model, False
    from torch.nn.parallel import DistributedDataParallel

    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    sync = has_bn and device.type == "cuda"
    if sync:
        from timm.layers import convert_sync_batchnorm

        for name, child in model.named_children():  # in place: `model` stays the object the rest holds
            setattr(model, name, convert_sync_batchnorm(child))
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids), sync


def check_in_sync(model: torch.nn.Module, epoch: int, ranks: Ranks) -> None:
    """TrainingError unless every process holds the same weights (compared by one sum per tensor)."""
    if not ranks.distributed:
        return
    import torch.distributed as dist

    sums = torch.stack([p.detach().double().sum() for p in model.parameters()]).cpu()
    low, high = sums.clone(), sums.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if not torch.allclose(low, high, rtol=1e-5, atol=1e-6):
        raise TrainingError(
            f"the processes' weights differ after epoch {epoch + 1} (largest difference of a "
            f"tensor's sum: {float((high - low).abs().max()):.3g})"
        )


@contextlib.contextmanager
def follower_errors(ranks: Ranks) -> Iterator[None]:
    """Rank 0 speaks for the run. On the other processes, an interruption (torchrun stops them all when one
    fails) and a training error (divergence, a lost peer: rank 0 reports it too) end the process with its
    exit code and no message (SystemExit); their other errors are one line that names the process."""
    from .errors import EdgecifarError

    try:
        yield
    except KeyboardInterrupt as e:
        if ranks.main:
            raise
        raise SystemExit(128 + getattr(e, "signum", 2)) from None
    except TrainingError:
        if ranks.main:
            raise
        raise SystemExit(TrainingError.exit_code) from None
    except EdgecifarError as e:
        if ranks.main:
            raise
        raise type(e)(f"process {ranks.rank} of {ranks.world_size}: {e}") from e
    except Exception as e:  # noqa: BLE001 - rank 0, running the same code, shows the traceback of a bug
        if ranks.main:
            raise
        raise EdgecifarError(f"process {ranks.rank} of {ranks.world_size}: {type(e).__name__}: {_first_line(e)}") from e


def launch(nproc: int, argv: list[str]) -> None:
    """`torchrun --standalone --nproc_per_node nproc -m edgecifar train ARGV`, run here by torchrun's own code
    (torch.distributed.run): one machine, a free port, no restarts. OMP_NUM_THREADS defaults to the usable
    cores over `nproc`. A process that fails raises TrainingError naming it (its own error line is already
    printed); Ctrl-C or SIGTERM of the launcher stops them all and raises KeyboardInterrupt."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    from .utils import Terminated

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, available_cores() // nproc)))
    args = get_args_parser().parse_args(
        ["--standalone", f"--nproc_per_node={nproc}", "--max_restarts=0", "-m", "edgecifar", "train", *argv]
    )
    levels = {name: logging.getLogger(name).level for name in ELASTIC_LOGGERS}
    for name in ELASTIC_LOGGERS:  # its failure report is a page; the failure is said in one line instead
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        run(args)
    except ChildFailedError as e:
        raise _failure(e, nproc) from None
    except SignalException as e:
        raise Terminated(int(e.sigval)) from None
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _failure(error, nproc: int) -> TrainingError:
    """One line for the first process that failed; the exit code is its own (128 + the signal if killed)."""
    import signal

    rank, failure = error.get_first_failure()
    code = failure.exitcode
    if code < 0:
        how = f"was killed by {signal.Signals(-code).name}"
        code = 128 - code
    else:
        how = f"failed with exit code {code} (its error is above)"
    found = TrainingError(
        f"training process {rank} of {nproc} {how}; all stopped (a run whose first epoch "
        f"ended continues with `edgecifar train --resume --out RUN --nproc {nproc}`)"
    )
    found.exit_code = code or 1
    return found
