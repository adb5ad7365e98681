"""Run folders: `model.safetensors` + `config.json` (enough to rebuild the model), `metrics.json`, and a
resumable `checkpoint.pt` (tensors and plain containers only: loaded with weights_only=True).

A folder is a run once it holds a checkpoint or weights; until then it is not (a run stopped before its first
epoch ended leaves nothing worth keeping).

One process at a time writes a run folder: `claim_run_dir` makes it and takes it (an flock on LOCK inside it,
which says who holds it) before anything in it changes, and `release_run_dir` lets it go; the system releases it
too when the process ends in any way (a crash, SIGKILL). A second training, resume or fine-tuning into a folder
that is taken stops at once with one line naming the folder and the process that holds it."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .contract import model_size
from .errors import CheckpointError, EdgecifarError
from .records import RunConfig
from .utils import atomic_path, folder_holder, read_json, release_folder, sha256_file, take_folder, write_json

if TYPE_CHECKING:  # torch and the models load with the functions that need them: the names below need neither
    import torch

    from .models import EdgeModel

# a run folder's files: every module names them from here
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
METRICS = "metrics.json"
CHECKPOINT = "checkpoint.pt"
CONFUSION_JSON, CONFUSION_PNG = "confusion.json", "confusion.png"  # edgecifar evaluate's report
LOCK = ".edgecifar-lock"  # held (flock) by the process writing the run; says which one it is
_OURS = (WEIGHTS, CONFIG, METRICS, CHECKPOINT)


def save_weights(model: EdgeModel, run_dir: Path, state: dict[str, torch.Tensor] | None = None) -> str:
    """Write the weights atomically; returns their sha256."""
    from safetensors.torch import save

    state = state if state is not None else model.state_dict()
    # serialized in memory, written by Python: a full disk is then an OSError with its errno (atomic_path
    # reports it), not a serializer's message without one
    data = save({k: v.detach().contiguous().cpu() for k, v in state.items()})
    with atomic_path(run_dir / WEIGHTS) as tmp:
        tmp.write_bytes(data)
    return sha256_file(run_dir / WEIGHTS)


def nonfinite_tensors(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding NaN or infinity (what a diverged training leaves)."""
    import torch

    return [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def is_run(folder: Path) -> bool:
    """Whether `folder` holds a run: a checkpoint to resume or trained weights."""
    return (folder / CHECKPOINT).is_file() or (folder / WEIGHTS).is_file()


def leftovers(folder: Path) -> list[Path] | None:
    """What a run stopped before its first checkpoint left in `folder` (its config, temporary files), or None
    if the folder holds anything else: a run, or files that are not ours."""
    if not folder.is_dir():
        return []
    if is_run(folder):
        return None
    found = list(folder.iterdir())
    ours = [
        f
        for f in found
        if f.is_file()
        and (f.name in _OURS or f.name in (".write-test", LOCK) or any(f.name.startswith(f".{n}.") for n in _OURS))
    ]
    return ours if len(ours) == len(found) else None


def choose_run_dir(out: str | None, model: str) -> Path:
    """`out`, or runs/<model>, runs/<model>-2, ... (the first that holds no run and nothing else, and that no
    other process holds). EdgecifarError when `out` is held by another process, holds a run or other files."""
    if out:
        if (holder := held_by_another(Path(out))) is not None:
            raise EdgecifarError(_in_use(Path(out), holder))
        if is_run(Path(out)):
            raise EdgecifarError(f"{out} already holds a run: pass --resume to continue it, or another --out")
        if leftovers(Path(out)) is None:
            raise EdgecifarError(f"{out} holds files that are not a run of edgecifar: choose another --out")
        return Path(out)
    base = Path("runs") / model
    found, n = base, 1
    while leftovers(found) is None or held_by_another(found) is not None:
        n += 1
        found = base.with_name(f"{model}-{n}")
    return found


def claim_run_dir(out: Path) -> bool:
    """Make `out` ready to train in and take it for this process (until release_run_dir or the process ends),
    then remove what a run stopped before its first epoch left there; returns whether the folder is this run's
    to remove again should it stop before its first epoch ends too. EdgecifarError, naming the other process,
    when another one holds it; one that cannot be written."""
    existed, crashed = out.exists(), (out / LOCK).exists()  # a lock file nobody holds: a crashed run's
    try:
        out.mkdir(parents=True, exist_ok=True)
        if (holder := take_folder(out, LOCK)) is not None:
            raise EdgecifarError(_in_use(out, holder))
        stale = [f for f in leftovers(out) or [] if f.name != LOCK]  # read once taken: nobody writes them now
        created = not existed or crashed or bool(stale)
        for f in stale:
            f.unlink()
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
        return created
    except OSError as e:
        raise EdgecifarError(f"cannot write to {out}: {e.strerror or e}; pass --out with a folder you can write") from e


def release_run_dir(out: Path) -> None:
    """Let go of a run folder this process holds (its lock file is removed); nothing if it holds none."""
    release_folder(out, LOCK)


def held_by_another(out: Path) -> str | None:
    """Who holds run folder `out` ("pid 1234 on host, `edgecifar train ...`, since ..."), when a process other
    than this one does; else None."""
    return folder_holder(out, LOCK)


def _in_use(out: Path, holder: str) -> str:
    return f"{out} is in use by another process ({holder}): wait for it to end, or choose another --out"


def kept_message(out: Path) -> str:
    """What a run stopped early kept, and how to continue it."""
    if not is_run(out):
        return "nothing was kept (no epoch was saved)"
    import torch

    try:  # mmap: the epoch number without reading the tensors
        epoch = f" of epoch {torch.load(out / CHECKPOINT, mmap=True, weights_only=True)['epoch']}"
    except Exception:  # the message is still right without the number
        epoch = ""
    return f"the run in {out} keeps its checkpoint{epoch}: continue it with `edgecifar train --resume --out {out}`"


def read_config(run_dir: Path | str) -> RunConfig:
    """A run folder's config.json. CheckpointError (one line) when there is no run folder or config.json, when
    it is another tool's config.json, or is corrupt (not JSON, no model name, a section of the wrong type)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder not found: {run_dir}")
    if not (run_dir / CONFIG).is_file():
        raise CheckpointError(f"{run_dir} has no {CONFIG}: not a run folder made by `edgecifar train`")
    try:
        config = read_json(run_dir / CONFIG)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"corrupt {run_dir / CONFIG}: {e}") from e
    # config.json is a common name (a Hugging Face model folder has one): without our sections it is another
    # tool's, not a corrupt run
    if not isinstance(config, dict) or not {"model", "train"} & config.keys():
        raise CheckpointError(
            f"{run_dir} is not a run folder made by `edgecifar train`: its {CONFIG} is another "
            f'tool\'s (no "model" or "train" section)'
        )
    try:
        config["model"]["model"]
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"corrupt {run_dir / CONFIG}: no model name ({type(e).__name__}: {e})") from e
    return RunConfig.from_json(config, f"corrupt {run_dir / CONFIG}")


def load_run(run_dir: Path | str) -> EdgeModel:
    """Rebuild a trained model from its run folder (config.json + model.safetensors), in eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    weights = run_dir / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{run_dir} has no {WEIGHTS} (training did not finish?)")
    model = model_from_config(config)
    if config.qat is not None:  # a QAT run (edgecifar.qat): its quantizers, then all weights
        from .qat_model import qat_section, quantized_model

        qat = qat_section(config)
        model = quantized_model(model, qat["nncf"])
        model.meta.qat = {k: qat[k] for k in ("int8_isa", "source_run", "epochs")}
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"corrupt weights file {weights}: {e}") from e
    bad = nonfinite_tensors(state)
    if bad:
        raise CheckpointError(
            f"{weights} holds NaN or infinite values in {len(bad)} of {len(state)} tensors "
            f"({', '.join(bad[:3])}): its training diverged; train it again with a lower --lr"
        )
    load_state(model, state, str(weights))
    model.meta.source_run = run_dir.name
    model.meta.source_sha256 = sha256_file(weights)
    return model.eval()


def model_from_config(config: RunConfig) -> EdgeModel:
    from .models import create_model

    meta = config.model
    try:
        return create_model(
            meta.model,
            meta.num_classes,
            img_size=meta.img_size,
            classes=meta.classes,
            input_size=model_size(meta),
        )
    except EdgecifarError as e:
        raise CheckpointError(f"config.json does not describe a buildable model: {e}") from e


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        detail = str(e).splitlines()[0] if "\n" in str(e) else str(e)
        raise CheckpointError(f"{where} does not match the model: {detail[:300]}") from e


def save_checkpoint(run_dir: Path, payload: dict[str, Any]) -> None:
    import torch

    buffer = io.BytesIO()  # in memory first, as in save_weights: a full disk is then reported as one
    torch.save(payload, buffer)
    with atomic_path(run_dir / CHECKPOINT) as tmp:
        tmp.write_bytes(buffer.getbuffer())


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    import torch

    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"nothing to resume: {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)  # never unpickles code
    except Exception as e:
        raise CheckpointError(f"corrupt checkpoint {path}: {str(e).splitlines()[0][:200]}") from e


def write_config(run_dir: Path, config: RunConfig) -> None:
    write_json(run_dir / CONFIG, config.to_json())


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    write_json(run_dir / METRICS, metrics)
