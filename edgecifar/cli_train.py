"""The training side of the `edgecifar` command: train, evaluate, models."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from .cli_common import CacheOpt, DataOpt, Device, Flip, Optimizer, RunDir, Schedule, app, console, handle_errors, say
from .errors import UsageError

EVALUATE_ROWS = 30  # per-class rows `evaluate` prints; with more classes, the least accurate ones


@app.command()
@handle_errors
def train(
    ctx: typer.Context,
    model: Annotated[
        str, typer.Option(help="registry name (see `edgecifar models`) or any timm model")
    ] = "scratch_cnn",
    data: DataOpt = "cifar10",
    cache_dir: CacheOpt = None,
    pretrained: Annotated[bool, typer.Option(help="start from ImageNet weights")] = False,
    weights: Annotated[Optional[Path], typer.Option(help="pretrained weights file (.pth/.safetensors)")] = None,
    epochs: Annotated[Optional[int], typer.Option(min=1)] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1)] = None,
    lr: Annotated[
        Optional[float], typer.Option(help="peak learning rate (Muon: the filters' rate; the SGD groups scale with it)")
    ] = None,
    optimizer: Annotated[Optional[Optimizer], typer.Option()] = None,
    weight_decay: Annotated[Optional[float], typer.Option()] = None,
    label_smoothing: Annotated[Optional[float], typer.Option(min=0.0, max=1.0)] = None,
    input_size: Annotated[
        Optional[str],
        typer.Option(
            help="size of the images the model takes, N or HxW pixels: the data is decoded to it, and every exported "
            "file takes uint8 [N, H, W, 3] at it [default: 32 for CIFAR-10; for an ImageFolder tree, the median "
            "size of its training images, at most 128 px on the longer side; always printed]"
        ),
    ] = None,
    img_size: Annotated[
        Optional[int],
        typer.Option(
            "--backbone-size",
            "--img-size",
            help="resolution a transfer model's backbone runs at, resized to inside the model (e.g. 64 to upsample "
            "32 px images); not the input size. --img-size is its old name",
        ),
    ] = None,
    allow_upsample: Annotated[
        bool,
        typer.Option(
            help="decode at an --input-size with more than 4x the pixels of "
            "the images' own size (refused otherwise: see "
            "--backbone-size)"
        ),
    ] = False,
    cutout: Annotated[Optional[int], typer.Option(help="cutout square size in pixels (0: off)")] = None,
    ema: Annotated[Optional[float], typer.Option(help="EMA decay of the weights (0: off)")] = None,
    bf16: Annotated[Optional[bool], typer.Option(help="bfloat16 autocast")] = None,
    freeze: Annotated[
        Optional[int],
        typer.Option(
            min=0, help="leading layer groups of a pretrained timm backbone kept frozen (stem, then each stage)"
        ),
    ] = None,
    schedule: Annotated[Optional[Schedule], typer.Option(help="learning-rate schedule")] = None,
    translate: Annotated[Optional[int], typer.Option(min=0, help="random translation in pixels")] = None,
    flip: Annotated[Optional[Flip], typer.Option(help="random flips, or airbench's alternating flips")] = None,
    teacher: Annotated[
        Optional[list[Path]],
        typer.Option(help="run folder of a model to distill from; repeated: an ensemble, its logits averaged"),
    ] = None,
    teacher_tta: Annotated[bool, typer.Option(help="distill the teacher's logits averaged over both flips")] = False,
    val_split: Annotated[float, typer.Option(min=0.0, max=0.9, help="fraction of train held out")] = 0.0,
    max_train: Annotated[Optional[int], typer.Option(help="use at most N training images")] = None,
    max_test: Annotated[Optional[int], typer.Option(help="evaluate on at most N test images")] = None,
    eval_every: Annotated[
        int, typer.Option(min=0, help="evaluate after every N-th epoch and the last (0: the last only)")
    ] = 1,
    seed: int = 0,
    seeds: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            help="train N seeds of this recipe (--seed, --seed + 1, ...) "
            "into <out>-s<seed>, summarized in <out>-seeds.json",
        ),
    ] = None,
    device: Annotated[Device, typer.Option()] = Device.auto,
    out: Annotated[Optional[Path], typer.Option(help="run folder [default: runs/<model>]")] = None,
    resume: Annotated[bool, typer.Option(help="continue the run in --out from its last finished epoch")] = False,
    nproc: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            help="train on N processes of this machine (torchrun + "
            "DDP; one per GPU); --batch-size stays the global "
            "batch",
        ),
    ] = None,
) -> None:
    """Train a model on CIFAR-10 (or any ImageFolder data) into a run folder.

    Under torchrun (`torchrun --nproc_per_node N -m edgecifar train ...`) each process runs this command."""
    from .contract import parse_size
    from .distributed import follower_errors, from_environment, launch
    from .train import TrainConfig, train as train_model

    if resume and out is None:
        raise UsageError("--resume needs --out RUN_DIR (the run to continue)")
    ranks = from_environment()
    if nproc and nproc > 1:
        if ranks.distributed or seeds is not None:
            raise UsageError("--nproc starts torchrun itself: under torchrun (or with --seeds), leave it out")
        launch(nproc, given_options(ctx, leave_out={"nproc"}))
        return
    cfg = TrainConfig(
        model=model,
        data=data,
        cache_dir=str(cache_dir) if cache_dir else None,
        pretrained=pretrained,
        weights=str(weights) if weights else None,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer.value if optimizer else None,
        weight_decay=weight_decay,
        label_smoothing=label_smoothing,
        img_size=img_size,
        input_size=list(parse_size(input_size)) if input_size is not None else None,
        allow_upsample=allow_upsample,
        cutout=cutout,
        ema=ema,
        bf16=bf16,
        freeze=freeze,
        schedule=schedule.value if schedule else None,
        translate=translate,
        flip=flip.value if flip else None,
        teacher=teacher_option(teacher),
        teacher_tta=teacher_tta,
        val_split=val_split,
        max_train=max_train,
        max_test=max_test,
        eval_every=eval_every,
        seed=seed,
        device=device.value,
        out=str(out) if out else None,
        resume=resume,
    )
    if seeds is not None:  # several runs of one recipe, each an ordinary training (edgecifar.seeds)
        from .seeds import train_seeds

        if ranks.distributed:
            raise UsageError("--seeds runs its trainings one after another: leave out torchrun and --nproc")
        train_seeds(cfg, seeds, show_progress=sys.stderr.isatty(), log=say)
        return
    with follower_errors(ranks):  # rank 0 speaks for the run
        train_model(cfg, show_progress=sys.stderr.isatty() and ranks.main, log=say)


def teacher_option(teachers: list[Path] | None) -> str | list[str] | None:
    """One teacher as its path (as run configs have always held it), several as a list."""
    if not teachers:
        return None
    return str(teachers[0]) if len(teachers) == 1 else [str(t) for t in teachers]


def given_options(ctx: typer.Context, leave_out: set[str]) -> list[str]:
    """The options given to this command on its command line (not those left at their defaults), as a
    command line again: what `train --nproc` passes on to each process."""
    argv: list[str] = []
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name)  # by name: Typer carries its own copy of click
        if param.name in leave_out or getattr(source, "name", None) != "COMMANDLINE":
            continue
        value = ctx.params[param.name]
        if getattr(param, "is_flag", False):  # --pretrained/--no-pretrained, --bf16/--no-bf16, ...
            argv += [param.opts[0]] if value else param.secondary_opts[:1]
        elif isinstance(value, (list, tuple)) and getattr(param, "multiple", False):  # a repeated option
            argv += [part for item in value for part in (param.opts[0], str(item))]
        else:
            argv += [param.opts[0], str(getattr(value, "value", value))]  # an Enum by its value
    return argv


@app.command()
@handle_errors
def evaluate(run_dir: RunDir, data: DataOpt = "", cache_dir: CacheOpt = None) -> None:
    """Test accuracy, per-class accuracy and confusion matrix of a trained run (saved in the run folder)."""
    from .evaluate import evaluate_run

    report = evaluate_run(run_dir, data or None, cache_dir)
    from rich.table import Table

    per_class = report["per_class"]
    shown = list(per_class)
    if len(shown) > EVALUATE_ROWS:  # many classes: the least accurate ones, the rest in confusion.json
        shown = sorted(shown, key=lambda c: (per_class[c] is not None, per_class[c] or 0))[:EVALUATE_ROWS]
    table = Table(
        title=escape(f"{report['model']} on {report['data']}: {report['test_acc']:.2%} top-1"),
        caption=None
        if len(shown) == len(per_class)
        else f"the {len(shown)} least accurate of {len(per_class)} classes; all of them in confusion.json",
    )
    table.add_column("class")
    table.add_column("accuracy", justify="right")
    table.add_column("test images", justify="right")
    for name in shown:
        acc = per_class[name]
        table.add_row(
            escape(name),
            "n/a (no test images)" if acc is None else f"{acc:.2%}",
            str(report["per_class_images"][name]),
            style="yellow" if acc is None else None,
        )
    console.print(table)
    say(f"confusion matrix: {report['files']['png']} and {report['files']['json']}")


@app.command()
@handle_errors
def models() -> None:
    """List the registered models: family, parameters, MACs and default recipe (instant: read from the committed
    listing, edgecifar/model_catalog.json, not by building each model)."""
    from rich.table import Table

    from .catalog import read_catalog

    infos = list(read_catalog().values())
    wide = console.width >= 120  # room for the descriptions beside the figures; else they get their own table
    table = Table(
        title="edgecifar models (any timm name works too)",
        caption="MMACs: one 32x32 image at the "
        "backbone size; backbone: the transfer models' default resolution (--backbone-size)",
    )
    for col in ("model", "family", "params", "MMACs", "backbone", "epochs"):  # short values: never wrapped
        table.add_column(col, no_wrap=True, justify="left" if col in ("model", "family") else "right")
    if wide:
        table.add_column("description", ratio=1)
    for info in infos:
        table.add_row(
            escape(info.name),
            info.family,
            f"{info.params:,}",
            f"{info.macs / 1e6:.1f}",
            f"{info.backbone_size} px" if info.backbone_size else "input",
            str(info.epochs),
            *([escape(info.description)] if wide else []),
        )
    console.print(table)
    if not wide:
        about = Table("model", "description")
        about.columns[0].no_wrap = True
        for info in infos:
            about.add_row(escape(info.name), escape(info.description))
        console.print(about)
