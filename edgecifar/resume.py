"""`train --resume --out RUN`: what a resumed run may change, and the checks made before any of it is applied.

Options left out keep the run's values (its checkpoint records them). Of the options given, these may differ
from the run's and are applied for real:

- `epochs`: at least the epochs already trained. The OneCycle schedule is rebuilt over the new total and goes on
  from the step reached (so the learning rate rises again when a finished run is extended);
- `lr`: the peak learning rate of that rebuilt schedule (e.g. a lower one after a diverged epoch);
- `data`: the same data at another path (its classes and image counts must be the run's);
- `device`, `bf16`, `cache_dir`: where and how the remaining epochs compute. `bf16` left out is decided again
  by the recipe and this machine, so a run started where bf16 is native continues in fp32 elsewhere.

Any other change (model, optimizer, batch size, seed, augmentation, ...) would make the checkpoint the state of
another training: it is refused with one line, before anything in the run folder changes. A resume that
changes nothing ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .errors import CheckpointError
from .records import RunConfig
from .runs import CHECKPOINT, leftovers, load_checkpoint, load_state, read_config

if TYPE_CHECKING:
    from .data import Splits
    from .train_config import TrainConfig

RESUMABLE = ("epochs", "lr", "data", "device", "bf16", "cache_dir", "eval_every")
_NOT_COMPARED = ("out", "resume")


def find_checkpoint(out: Path, log: Callable[[str], None]) -> dict[str, Any] | None:
    """The checkpoint of the run in `out`, or None when that folder holds no epoch yet (a run stopped before its
    first epoch ended): it is then trained from the start. CheckpointError if there is no such folder."""
    if (out / CHECKPOINT).is_file():
        return load_checkpoint(out)
    if not out.is_dir():
        raise CheckpointError(f"nothing to resume: {out} not found")
    if leftovers(out) is None:
        raise CheckpointError(f"nothing to resume: {out} has no {CHECKPOINT}")
    log(f"nothing to resume in {out} (stopped before its first epoch ended): training from the start")
    return None


def saved_config(checkpoint: dict[str, Any], out: Path) -> RunConfig:
    """The run's config as its checkpoint records it (config.json for checkpoints older than that)."""
    saved = checkpoint.get("config")
    return RunConfig.from_json(saved, f"{out / CHECKPOINT}'s config") if saved else read_config(out)


def resume_config(cfg: TrainConfig, saved: RunConfig, epochs_done: int) -> tuple[TrainConfig, dict[str, list]]:
    """The run's training options with those given in `cfg` applied; returns it and the changes
    ({option: [run's value, new value]}). CheckpointError for an option that may not change."""
    from .train_config import TrainConfig

    run, defaults = saved.train or {}, TrainConfig()
    values, changes, refused = {}, {}, []
    for name in (f.name for f in fields(TrainConfig)):
        given, default = getattr(cfg, name), getattr(defaults, name)
        was = run.get(name, default)
        if name in _NOT_COMPARED:
            values[name] = given
        elif given is None or given == default or given == was:  # left out (or the same): the run's value
            # a bf16 run resolves again (a machine without bf16 turns the recipe's autocast off); an fp32 run,
            # asked for or fallen back to, stays fp32 (a `--no-bf16` run resumed on a bf16 CPU did not)
            values[name] = None if name == "bf16" and given is None and was else was
        elif name in RESUMABLE:
            values[name], changes[name] = given, [was, given]
        else:
            refused.append(f"--{name.replace('_', '-')} {given} (the run has {was})")
    if refused:
        raise CheckpointError(
            f"--resume cannot change {'; '.join(refused)}: only "
            f"{', '.join('--' + n.replace('_', '-') for n in RESUMABLE)} may change; "
            f"train a new run (another --out) for the rest"
        )
    if values["epochs"] < epochs_done:
        raise CheckpointError(
            f"--epochs {values['epochs']}: the run in {cfg.out} has already trained {epochs_done} epochs"
        )
    return replace(cfg, **values), changes


def check_same_data(saved: RunConfig, data: Splits, log: Callable[[str], None]) -> None:
    """A resumed run must see the images it was started on: the same classes and image counts."""
    was, now = saved.data or {}, data.describe()
    differ = [
        f"{k} {was.get(k)!r} now {now[k]!r}"
        for k in ("classes", "train", "val", "test")
        if k in was and was[k] != now[k]
    ]
    if differ:
        raise CheckpointError(
            f"the data is not the run's any more ({'; '.join(differ)}): a resumed run must see "
            f"the same images; train a new run (another --out) on the new data"
        )
    if was.get("fingerprint") not in (None, now["fingerprint"]):
        log(
            f"note: {now['source']} is not byte for byte where the run found it (moved, or files touched), "
            f"but has its classes and image counts: resuming"
        )


def restore_state(checkpoint: dict[str, Any], out: Path, model, optimizer, ema) -> tuple[int, list]:
    """Load the checkpoint's model, optimizer and EMA state; returns (epochs done, per-epoch history)."""
    try:
        load_state(model, checkpoint["model"], str(out / CHECKPOINT))
        optimizer.load_state_dict(checkpoint["optimizer"])
        if ema:
            ema.load_state_dict(checkpoint["ema"])
        return int(checkpoint["epoch"]), list(checkpoint["history"])
    except (KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint in {out} does not match this run's settings: {e}") from e
