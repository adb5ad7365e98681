"""Run folders: `model.safetensors` + `config.json` (enough to rebuild the model), `metrics.json`, and a
resumable `checkpoint.pt` (tensors and plain containers only: loaded with weights_only=True)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError, EdgecifarError
from .models import EdgeModel, create_model
from .utils import atomic_path, read_json, sha256_file, write_json

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
METRICS = "metrics.json"
CHECKPOINT = "checkpoint.pt"


def save_weights(model: EdgeModel, run_dir: Path, state: dict[str, torch.Tensor] | None = None) -> str:
    """Write the weights atomically; returns their sha256."""
    from safetensors.torch import save_file

    state = state if state is not None else model.state_dict()
    with atomic_path(run_dir / WEIGHTS) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp))
    return sha256_file(run_dir / WEIGHTS)


def read_config(run_dir: Path | str) -> dict[str, Any]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder not found: {run_dir}")
    if not (run_dir / CONFIG).is_file():
        raise CheckpointError(f"{run_dir} has no {CONFIG}: not a run folder made by `edgecifar train`")
    try:
        config = read_json(run_dir / CONFIG)
        config["model"]["model"]
        return config
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"corrupt {run_dir / CONFIG}: {e}") from e


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
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"corrupt weights file {weights}: {e}") from e
    load_state(model, state, str(weights))
    model.meta["source_run"] = run_dir.name
    model.meta["source_sha256"] = sha256_file(weights)
    return model.eval()


def model_from_config(config: dict[str, Any]) -> EdgeModel:
    meta = config["model"]
    try:
        return create_model(meta["model"], meta["num_classes"], img_size=meta["img_size"], classes=meta["classes"])
    except EdgecifarError as e:
        raise CheckpointError(f"config.json does not describe a buildable model: {e}") from e


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        detail = str(e).splitlines()[0] if "\n" in str(e) else str(e)
        raise CheckpointError(f"{where} does not match the model: {detail[:300]}") from e


def save_checkpoint(run_dir: Path, payload: dict[str, Any]) -> None:
    with atomic_path(run_dir / CHECKPOINT) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"nothing to resume: {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)  # never unpickles code
    except Exception as e:
        raise CheckpointError(f"corrupt checkpoint {path}: {str(e).splitlines()[0][:200]}") from e


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    write_json(run_dir / CONFIG, config)


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    write_json(run_dir / METRICS, metrics)
