"""Training: `train(TrainConfig(...))` reads top to bottom, data -> model -> loop -> run folder."""

from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from . import __version__, distributed
from .augment import alternating_flips, cutout, mirror, random_crop, random_flip
from .contract import DEFAULT_SIZE
from .data import Splits, load_data
from .distill import distillation_loss, teacher_logits
from .distributed import Ranks
from .errors import DiskFullError, EdgecifarError, TrainingError
from .isa import cpu_has_bf16
from .models import EdgeModel, count_params, create_model, freeze_stages, predict_logits
from .optim import EMA, make_optimizer, make_scheduler
from .resume import check_same_data, find_checkpoint, restore_state, resume_config, saved_config
from .runs import (
    choose_run_dir,
    claim_run_dir,
    is_run,
    kept_message,
    nonfinite_tensors,
    release_run_dir,
    save_checkpoint,
    save_weights,
    write_config,
    write_metrics,
)
from .records import RunConfig
from .train_config import TrainConfig
from .utils import library_versions, remove_tree, terminate_as_interrupt


# an --input-size with more than this many times the pixels of the images' own size is refused before anything is
# decoded, unless --allow-upsample: 224 px on CIFAR's 32 px is 49x the cache (8.8 GB) and the compute per step, where
# --backbone-size 224 resizes inside the model and keeps the cache at 32 px; 2x per side (64 px) passes
UPSAMPLE_LIMIT = 4.0


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise EdgecifarError("--device cuda: no CUDA device is available here")
    if name not in ("cpu", "cuda"):
        raise EdgecifarError(f"unknown device '{name}': use auto, cpu or cuda")
    return torch.device(name)


def autocast_choice(cfg: TrainConfig, device: torch.device) -> tuple[TrainConfig, dict[str, Any]]:
    """The resolved config, and the record of its autocast (config.json's "autocast"): {"bf16": used,
    "native_bf16": whether the device computes in bf16, "by": "option" | "recipe", "note": what the run's summary
    line says, or ""}.

    A recipe's bf16 autocast applies only where the hardware computes in bf16: emulated on a CPU without it (AVX2
    only), an edge_small epoch had not ended after 6 minutes, against 35 s in fp32. An explicit `--bf16` is obeyed
    (and said to be emulated where it is). Nothing is printed here: the note goes in the summary line, after the
    options and the data are known good, so that bad input stays one line on every CPU.
    """
    resolved = cfg.resolved()
    native = bool(torch.cuda.is_bf16_supported()) if device.type == "cuda" else device.type == "cpu" and cpu_has_bf16()
    record = {
        "bf16": bool(resolved.bf16),
        "native_bf16": native,
        "by": "recipe" if cfg.bf16 is None else "option",
        "note": "",
    }
    if resolved.bf16 and not native:
        if cfg.bf16 is None:
            resolved = replace(resolved, bf16=False)
            record.update(
                bf16=False,
                note=f"fp32: the recipe's bf16 autocast is off, this {device.type} has no native "
                f"bf16 (--bf16 forces it)",
            )
        else:
            record["note"] = f"bf16 autocast emulated: this {device.type} has no native bf16 (slow)"
    return resolved, record


def absolute_data(source: str) -> str:
    """A data path made absolute, so that the run can be exported and evaluated from any folder."""
    return source if source == "cifar10" else os.path.abspath(os.path.expanduser(source))


def train(cfg: TrainConfig, show_progress: bool = False, log=print) -> Path:
    """Train a model; returns its run folder.

    Whatever stops a run early (an error, Ctrl-C, SIGTERM or SIGHUP, a full disk, a diverged loss) leaves it
    resumable from its last finished epoch (`--resume`), or, before the first epoch ended, no run folder. A
    resume applies the options `edgecifar.resume` allows and refuses the others before anything changes.

    Started by torchrun on several processes (edgecifar.distributed), every process calls this: rank 0 decides
    the options, writes the run folder and logs; the others train alongside it silently.
    """
    log = _survives_closed_output(log)
    with terminate_as_interrupt(), distributed.process_group() as ranks:
        if not ranks.main:
            return _follow_rank0(ranks)
        cfg, checkpoint, changes = _options(cfg, log, ranks)
        device = distributed.local_device(pick_device(cfg.device), ranks)
        cfg, autocast = autocast_choice(cfg, device)
        if cfg.flip not in ("random", "alternating"):
            raise EdgecifarError(f"unknown flip '{cfg.flip}': use random or alternating")
        if cfg.eval_every < 0:
            raise EdgecifarError(f"eval_every {cfg.eval_every}: use 0 (after the last epoch only) or more")
        data = load_data(
            cfg.data,
            cfg.cache_dir,
            cfg.val_split,
            cfg.seed,
            cfg.input_size,
            max_upsample=None if cfg.allow_upsample else UPSAMPLE_LIMIT,
        )
        cfg = replace(cfg, input_size=list(data.input_size))  # recorded: the run's input contract
        if checkpoint is not None:
            check_same_data(saved_config(checkpoint, Path(cfg.out)), data, log)
        out = Path(cfg.out) if checkpoint is not None else choose_run_dir(cfg.out, cfg.model)
        created = claim_run_dir(out)
        try:
            with distributed.lost_peers(ranks):
                distributed.broadcast([asdict(cfg), checkpoint, changes, str(out)], ranks)
                distributed.node_first(lambda: data, ranks)
                return _train(cfg, data, device, out, checkpoint, changes, show_progress, log, ranks, autocast)
        except BaseException as e:
            if created and not is_run(out):
                remove_tree(out)  # nothing worth resuming: leave no half-written run folder
            if not isinstance(e, (KeyboardInterrupt, DiskFullError, TrainingError)):
                raise
            if isinstance(e, KeyboardInterrupt):
                log(f"interrupted: {kept_message(out)}")
                raise
            raise type(e)(f"{e}; {kept_message(out)}") from e
        finally:
            release_run_dir(out)  # taken by claim_run_dir: the next training or resume may write it


def _options(cfg: TrainConfig, log, ranks: Ranks) -> tuple[TrainConfig, dict[str, Any] | None, dict[str, list]]:
    """The options to train with, the checkpoint to resume and the options that resume changes: a resumed run
    keeps its own options but for the changes `edgecifar.resume` allows (and the number of processes, which
    leaves the training the same)."""
    cfg = replace(cfg, data=absolute_data(cfg.data))
    checkpoint = find_checkpoint(Path(cfg.out), log) if cfg.resume else None
    if checkpoint is None:
        return replace(cfg, resume=False), None, {}
    saved = saved_config(checkpoint, Path(cfg.out))
    cfg, changes = resume_config(cfg, saved, int(checkpoint.get("epoch", 0)))
    processes = (saved.distributed or {}).get("world_size", 1)
    if processes != ranks.world_size:
        changes["processes"] = [processes, ranks.world_size]
    if cfg.input_size is None:  # a run from before input sizes were recorded: it took 32x32
        cfg = replace(cfg, input_size=list(DEFAULT_SIZE))
    return cfg, checkpoint, changes


def _follow_rank0(ranks: Ranks) -> Path:
    """A process other than rank 0: rank 0's options and checkpoint, its own copy of the data, the same
    training, silently; returns the run folder rank 0 writes."""
    with distributed.lost_peers(ranks):
        options, checkpoint, changes, out = distributed.broadcast(None, ranks)
        cfg = TrainConfig(**options)
        data = distributed.node_first(
            lambda: load_data(cfg.data, cfg.cache_dir, cfg.val_split, cfg.seed, cfg.input_size), ranks
        )
        device = distributed.local_device(pick_device(cfg.device), ranks)
        return _train(cfg, data, device, Path(out), checkpoint, changes, False, lambda message: None, ranks)


def _survives_closed_output(log):
    """`log`, but a reader that went away (`train ... | head`) stops the printing, not the run."""

    def safe_log(message: str) -> None:
        try:
            log(message)
        except (BrokenPipeError, SystemExit):  # rich's console: SystemExit(1) once stdout is /dev/null instead
            pass

    return safe_log


def _subset(x, y, limit: int | None, seed: int):
    if not limit or limit >= len(y):
        return x, y
    keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:limit].numpy()
    return x[keep], y[keep]


def _train(
    cfg: TrainConfig,
    data: Splits,
    device: torch.device,
    out: Path,
    checkpoint: dict[str, Any] | None,
    changes: dict[str, list],
    show_progress: bool,
    log,
    ranks: Ranks,
    autocast: dict[str, Any] | None = None,
) -> Path:
    torch.manual_seed(cfg.seed)
    train_x, train_y = (
        torch.from_numpy(a).to(device) for a in _subset(data.train_x, data.train_y, cfg.max_train, cfg.seed)
    )
    eval_x, eval_y = (data.val_x, data.val_y) if data.val_y is not None else (data.test_x, data.test_y)
    eval_x, eval_y = (torch.from_numpy(a).to(device) for a in _subset(eval_x, eval_y, cfg.max_test, cfg.seed))
    model = create_model(
        cfg.model,
        len(data.classes),
        pretrained=cfg.pretrained,
        weights=cfg.weights,
        img_size=cfg.img_size,
        classes=data.classes,
        input_size=data.input_size,
    )
    trainable = freeze_stages(model, cfg.freeze) if cfg.pretrained or cfg.weights else count_params(model)
    model = model.to(device, memory_format=torch.channels_last)
    init_from_data(model, train_x, cfg.seed)
    teacher_started = time.perf_counter()
    taught = teacher_logits(cfg.teacher, train_x, model.meta.classes, cfg.teacher_tta) if cfg.teacher else None
    teacher_seconds = time.perf_counter() - teacher_started

    steps_per_epoch = len(batch_bounds(len(train_y), cfg.batch_size))
    optimizer = make_optimizer(model, cfg)
    peaks = [g["lr"] for g in optimizer.param_groups]  # each group's peak, before a resume restores its state
    ema = EMA(model, cfg.ema) if cfg.ema else None
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if checkpoint is not None:
        start_epoch, history = restore_state(checkpoint, out, model, optimizer, ema)
    scheduler = make_scheduler(optimizer, cfg, cfg.epochs * steps_per_epoch, start_epoch * steps_per_epoch, peaks)
    net, synced_bn = distributed.wrap(model, device, ranks)  # what the steps run: DDP on several processes
    config = RunConfig(
        model=model.meta,
        train=asdict(cfg),
        data=data.describe(),
        device=str(device),
        distributed=ranks.describe(cfg.batch_size, cfg.lr, synced_bn),
        params=count_params(model),
        trainable_params=trainable,
        autocast=autocast or {"bf16": bool(cfg.bf16)},
        versions={
            "edgecifar": __version__,
            "python": platform.python_version(),
            **library_versions("torch", "torchvision", "timm"),
        },
        resumed=_resumes(checkpoint, start_epoch, changes),
    )
    for line in data.summary():  # classes, images per split and class, skipped files, warnings
        log(line)
    if len(train_y) % cfg.batch_size == 1 and len(train_y) > cfg.batch_size:
        log(
            f"note: {len(train_y):,} training images leave 1 in the last batch of {cfg.batch_size}: it joins the "
            f"batch before it each epoch (batch norm cannot train on one image)"
        )
    log(
        f"training {cfg.model} ({config.params:,} params, {trainable:,} trainable) on {len(train_y):,} images, "
        f"{device}{ranks.summary(cfg.batch_size, synced_bn)}, {(autocast or {}).get('note') or _precision(cfg)}, -> {out}"
        + (f", from epoch {start_epoch + 1}" if start_epoch else "")
        + "".join(f", {k} {was} -> {now}" for k, (was, now) in changes.items())
    )

    acc_key = "test_acc" if data.val_y is None else "val_acc"
    final = ema.model if ema else model  # what is evaluated each epoch and saved at the end
    started = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        stats = _train_epoch(net, taught, ema, optimizer, scheduler, train_x, train_y, cfg, epoch, show_progress, ranks)
        distributed.check_in_sync(model, epoch, ranks)
        if ranks.main:  # rank 0 alone evaluates and writes the run
            if _evaluates_after(epoch, cfg):
                stats[acc_key] = evaluate(final, eval_x, eval_y)
            history.append(stats)
            _save_epoch(out, epoch, model, optimizer, scheduler, ema, history, config, first=epoch == start_epoch)
            shown = f"{acc_key.replace('_acc', '')} {stats[acc_key]:.2%}  " if acc_key in stats else ""
            log(
                f"epoch {epoch + 1}/{cfg.epochs}  loss {stats['loss']:.4f}  train {stats['train_acc']:.2%}  "
                f"{shown}{stats['images_per_s']:.0f} img/s  {stats['seconds']:.0f}s  eta {_eta(history, cfg.epochs)}"
            )
        # no process starts the next epoch before this one is checkpointed: one killed in it (torchrun then stops
        # rank 0 too) would otherwise lose the epoch whenever rank 0's evaluation is slower than the kill (CI did)
        distributed.barrier(ranks)

    if not ranks.main:
        return out
    sha = save_weights(final, out)
    if data.val_y is None:  # the last epoch already evaluated these weights on the test images
        test_acc = history[-1]["test_acc"]
    else:
        test_x, test_y = (
            torch.from_numpy(a).to(device) for a in _subset(data.test_x, data.test_y, cfg.max_test, cfg.seed)
        )
        test_acc = evaluate(final, test_x, test_y)
    train_seconds = sum(h["seconds"] for h in history)
    write_metrics(
        out,
        {
            "test_acc": test_acc,
            "epochs": history,
            "train_seconds": train_seconds,
            "teacher_seconds": teacher_seconds,
            "wall_seconds_this_session": time.perf_counter() - started,
            "images_per_s": sum(h["images_per_s"] for h in history) / max(len(history), 1),
            "weights_sha256": sha,
            "device": str(device),
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "processes": ranks.world_size,
        },
    )
    log(f"test accuracy {test_acc:.2%} after {train_seconds / 60:.1f} min of training; run saved in {out}")
    return out


def _precision(cfg: TrainConfig) -> str:
    return "bf16 autocast" if cfg.bf16 else "fp32"


def _evaluates_after(epoch: int, cfg: TrainConfig) -> bool:
    """Whether the (0-based) epoch ends with an evaluation: every `eval_every`-th and always the last. A pass
    over the test images costs seconds per epoch, minutes over the default pipeline (docs/design-notes.md), so
    the pipeline evaluates once."""
    return epoch + 1 == cfg.epochs or (cfg.eval_every > 0 and (epoch + 1) % cfg.eval_every == 0)


def _eta(history: list[dict[str, Any]], epochs: int) -> str:
    """Time left for the remaining epochs, at the mean epoch time so far."""
    seconds = (epochs - len(history)) * sum(h["seconds"] for h in history) / len(history)
    return f"{seconds / 60:.1f} min"


def init_from_data(model: EdgeModel, images: torch.Tensor, seed: int, n: int = 5000) -> None:
    """Let a backbone that computes its initialisation from data (airbench's patch whitening) see `n`
    seeded training images, normalized as the model's input. A resumed run then restores its weights."""
    init = getattr(model.backbone, "init_from_data", None)
    if init is None:
        return
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n].to(images.device)
    init(model.normalize(images[pick]))


def _resumes(checkpoint: dict[str, Any] | None, epoch: int, changes: dict[str, list]) -> list[dict[str, Any]]:
    """The run's resumes so far (from its checkpoint), this one added: the epoch and the options changed."""
    if checkpoint is None:
        return []
    earlier = (checkpoint.get("config") or {}).get("resumed") or []
    return [*earlier, {"at_epoch": epoch, "changed": changes}]


def _save_epoch(
    out: Path,
    epoch: int,
    model,
    optimizer,
    scheduler,
    ema,
    history: list[dict[str, Any]],
    config: RunConfig,
    first: bool,
) -> None:
    """Checkpoint a finished epoch. Weights that hold NaN or infinity (the epoch's last step diverged) are never
    saved; the run's config.json changes only once a checkpoint made with it is safe (the first of a session)."""
    bad = nonfinite_tensors(model.state_dict())
    if bad:
        raise TrainingError(
            f"training diverged: after epoch {epoch + 1} the weights hold NaN or infinite values "
            f"({', '.join(bad[:3])}); train with a lower --lr"
        )
    save_checkpoint(
        out,
        {
            "epoch": epoch + 1,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "ema": ema.state_dict() if ema else {},
            "history": history,
            "config": config.to_json(),  # plain JSON types: checkpoints load with weights_only
        },
    )
    if first:
        write_config(out, config)


def _train_epoch(
    model,
    taught: torch.Tensor | None,
    ema,
    optimizer,
    scheduler,
    x,
    y,
    cfg: TrainConfig,
    epoch: int,
    show_progress: bool,
    ranks: Ranks = Ranks(),
) -> dict[str, Any]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    model.train()
    # one generator per epoch: a resumed run replays exactly the batches an uninterrupted one would see
    gen = torch.Generator(device=x.device).manual_seed(cfg.seed * 100_003 + epoch)
    torch.manual_seed(cfg.seed * 100_003 + epoch)
    order = torch.randperm(len(y), device=x.device, generator=gen)
    mirrored = alternating_flips(len(y), epoch, cfg.seed, x.device) if cfg.flip == "alternating" else None
    total_loss, correct, seen = 0.0, 0, 0
    started = time.perf_counter()
    columns = [
        TextColumn(f"epoch {epoch + 1}/{cfg.epochs}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.3f}  {task.fields[ips]:.0f} img/s"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, disable=not show_progress, transient=True) as progress:
        bounds = batch_bounds(len(order), cfg.batch_size)
        steps = len(bounds)
        task = progress.add_task("train", total=steps, loss=0.0, ips=0.0)
        for step, idx in enumerate((order[start:stop] for start, stop in bounds), 1):
            # every process augments the whole global batch as one process would, then trains on its part
            images = random_crop(x[idx], cfg.translate, gen)
            if mirrored is not None:
                flipped = mirrored[idx]
                images = mirror(images, flipped)
            else:
                images, flipped = random_flip(images, gen)
            if cfg.cutout:
                images = cutout(images, cfg.cutout, gen)
            soft_targets = taught[idx, flipped.long()] if taught is not None else None
            start, stop = ranks.bounds(len(idx))
            loss, hits = train_step(
                model,
                ema,
                optimizer,
                scheduler,
                images[start:stop],
                y[idx[start:stop]],
                cfg,
                None if soft_targets is None else soft_targets[start:stop],
                ranks.share(len(idx)),
            )
            loss_sum, hits, n = distributed.all_sum([loss * (stop - start), hits, stop - start], ranks)
            loss = loss_sum / n  # the global batch's: every process stops at the same step
            if not math.isfinite(loss):  # stop at once: every later step would only spread the NaN
                raise TrainingError(
                    f"training diverged: the loss became {loss} in epoch {epoch + 1}, step {step} "
                    f"of {steps} (peak learning rate {cfg.lr:g}); train with a lower --lr"
                )
            total_loss += loss_sum
            correct += hits
            seen += int(n)
            progress.update(task, advance=1, loss=total_loss / seen, ips=seen / (time.perf_counter() - started))
    seconds = time.perf_counter() - started
    return {
        "epoch": epoch + 1,
        "loss": total_loss / seen,
        "train_acc": correct / seen,
        "seconds": seconds,
        "images_per_s": seen / seconds,
        "lr": scheduler.get_last_lr()[0],
    }


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, stop) of each batch of an epoch of `n` images. A last batch of one image is folded into the batch
    before it (one batch is larger, no image dropped): batch norm in training cannot normalize a single value per
    channel (ResNet18 at 32 px reaches 1x1 maps: 17 images in batches of 8 ended epoch 1 in a ValueError). The
    same for any number of processes, so that a run trains the same on each (on several CPU processes, each
    normalizing its own part of the global batch, a part of one image can remain: edgecifar.distributed)."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return list(zip(starts, [*starts[1:], n]))


def train_step(
    model,
    ema,
    optimizer,
    scheduler,
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: TrainConfig,
    soft_targets: torch.Tensor | None = None,
    share: float = 1.0,
) -> tuple[float, int]:
    """One optimizer step on an augmented batch, distilled towards `soft_targets` (teacher logits) when
    given; returns (loss, correct predictions). On several processes `model` is DDP's wrapper, the batch this
    process's part of the global one and `share` the weight of its loss (distributed.Ranks.share)."""
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bool(cfg.bf16)):
        logits = model(images).float()
        loss = F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing)
        if soft_targets is not None:
            loss = distillation_loss(logits, soft_targets, loss, cfg.distill_alpha, cfg.distill_temperature)
    # an empty part (a last global batch smaller than the number of processes) still joins DDP's all-reduce
    objective = loss * share if len(labels) else logits.sum() * 0.0
    optimizer.zero_grad(set_to_none=True)
    objective.backward()
    optimizer.step()
    scheduler.step()
    if ema:
        ema.update(model, step=scheduler.last_epoch)  # the scheduler counts steps, and resumes with the run
    return loss.item() if len(labels) else 0.0, (logits.argmax(1) == labels).sum().item()


def evaluate(model: EdgeModel, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy (restores train mode afterwards if the model was training)."""
    was_training = model.training
    acc = (predict_logits(model, images).argmax(1) == labels).float().mean().item()
    model.train(was_training)
    return acc
