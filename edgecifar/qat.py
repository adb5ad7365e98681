"""Quantization-aware training (QAT): fine-tune a trained run with NNCF's fake quantization in the forward
pass, so that its weights and the quantizers' ranges learn to live with INT8 rounding, and save the result as a
run that carries its quantizers.

The flow is NNCF's for PyTorch (docs: "Use NNCF for Quantization Aware Training"): `nncf.quantize` inserts
quantizers initialised by post-training calibration, and the model is trained as it is. The quantizers follow
the OpenVINO exporter's rule (`openvino_ptq_parameters`): per-channel symmetric weights with 7 bits
(`--int8-isa x86`, exact on every x86 CPU: edgecifar.isa) or 8 (`vnni`), per-tensor 8-bit activations (nncf's
PERFORMANCE preset). The student also learns the float model's own logits (distillation from the model before
quantization, as in Hinton et al. 2015 and most QAT recipes), so that fine-tuning recovers the float model's
function rather than drifting from it.

The run holds the weights with the quantizers' tensors, and config.json's "qat" section NNCF's JSON of where
they sit (`quantized_model` rebuilds it). `export` writes INT8 files only: OpenVINO converts the quantizers as
they are; ONNX Runtime's, LiteRT's and ExecuTorch's quantizers take the float twin of `requantizable` (weights
snapped to their learned grids, so re-quantizing them is exact) and the learned activation ranges in place of
calibration where their tensors match. `fake_quant=False` runs the same fine-tuning in float, the control that
tells what the quantizers themselves buy (benchmarks/qat.py).
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from .contract import model_size
from .errors import EdgecifarError, UsageError
from .isa import INT8_ISAS
from .qat_model import (  # noqa: F401 - the QAT model format, re-exported for the command's users
    NNCF_PREFIX,
    X86_WEIGHT_STEPS,
    ActivationRange,
    _within_x86_steps,
    nncf_config,
    qat_section,
    quantize_with_torch_ops,
    quantized_model,
    requantizable,
    weight_quantizers,
)
from .quiet import quiet_libraries
from .records import ModelMeta, RunConfig

quiet_libraries()  # before nncf loads (edgecifar.quiet)


@dataclass
class QatConfig:
    """What `edgecifar qat` takes. Units: `lr` is AdamW's peak learning rate, decayed to 0 by a cosine over all
    steps; `calib_size` counts training images."""

    run: str
    data: str | None = None  # default: the data the run was trained on
    cache_dir: str | None = None
    # 1 epoch at 3e-5: the most accuracy of the settings tried, longer and faster ones included (docs/design-notes.md)
    epochs: int = 1
    lr: float = 3e-5
    batch_size: int | None = None  # default: the run's recipe
    distill: bool = True  # learn the float model's logits (alpha, T from the run's recipe)
    int8_isa: str = "x86"
    calib_size: int = 512
    fake_quant: bool = True  # False: the same fine-tuning in float (the control)
    max_train: int | None = None
    max_test: int | None = None
    seed: int = 0
    device: str = "auto"
    out: str | None = None


def finetune(cfg: QatConfig, show_progress: bool = False, log=print) -> Path:
    """Quantization-aware fine-tuning of the run `cfg.run`; returns the new run folder (weights, config.json
    with a "qat" section naming the source run, metrics.json with the fake-quantized model's test accuracy too).

    Raises UsageError for options out of range, CheckpointError for an unreadable run, DataError for data the
    run cannot take, and ExportError when NNCF cannot quantize the model. Stopped early (an error, Ctrl-C), it
    leaves no run folder.
    """
    from .runs import choose_run_dir, claim_run_dir, is_run, load_run, read_config, release_run_dir
    from .train import evaluate, teacher_logits
    from .utils import remove_tree

    if cfg.epochs < 1 or cfg.lr <= 0 or cfg.calib_size < 1:
        raise UsageError("qat needs --epochs >= 1, --lr > 0 and --calib-size >= 1")
    if cfg.int8_isa not in INT8_ISAS:
        raise UsageError(f"unknown --int8-isa '{cfg.int8_isa}': use one of {', '.join(INT8_ISAS)}")
    config = read_config(cfg.run)
    tcfg, device, autocast_note = _recipe(cfg, config)
    source = load_run(cfg.run).to(device)
    (train_x, train_y), test = _tensors(cfg, config, source.meta, device)
    out = choose_run_dir(cfg.out, f"{Path(cfg.run).name}-{'qat' if cfg.fake_quant else 'ft'}")
    created = claim_run_dir(out)
    try:
        before = evaluate(source, *test)
        taught = teacher_logits(cfg.run, train_x, source.meta.classes) if cfg.distill else None
        student = _fake_quantized(source, train_x, cfg) if cfg.fake_quant else source
        ptq = evaluate(student, *test) if cfg.fake_quant else None  # nncf's PTQ: where QAT starts
        log(
            f"{'quantization-aware' if cfg.fake_quant else 'float'} fine-tuning of {cfg.run} ({before:.2%} test "
            f"top-1) for {cfg.epochs} epoch(s) on {len(train_y):,} images, {device}"
            f"{', ' + autocast_note if autocast_note else ''} -> {out}"
        )
        history = _fit(student, taught, tcfg, train_x, train_y, show_progress, log)
        if cfg.fake_quant and cfg.int8_isa == "x86":  # after the last step too
            for quantizer, weight in weight_quantizers(student):
                _within_x86_steps(quantizer, weight)
        simulated = evaluate(student, *test) if cfg.fake_quant else None
        latent = _save(
            out,
            cfg,
            config,
            student,
            test,
            {"source_test_acc": before, "test_acc_ptq": ptq, "test_acc_fake_quant": simulated},
            history,
            device,
        )
    except BaseException:
        if created and not is_run(out):
            remove_tree(out)
        raise
    finally:
        release_run_dir(out)  # taken by claim_run_dir
    log(
        f"test top-1: {before:.2%} before, {latent:.2%} after in float"
        + (f"; fake-quantized {ptq:.2%} before (PTQ), {simulated:.2%} after" if cfg.fake_quant else "")
        + f"; run saved in {out}"
    )
    return out


def _recipe(cfg: QatConfig, config: RunConfig) -> tuple[Any, Any, str]:
    """The run's own training recipe (augmentation, batch size, label smoothing, distillation weights, bf16
    where the run had it and this machine computes in it) with this fine-tuning's epochs, learning rate and
    seed; the device; and what the summary line says about the autocast ("" when nothing)."""
    from .train import autocast_choice, pick_device
    from .train_config import TrainConfig

    known = {f.name for f in fields(TrainConfig)}
    recorded = TrainConfig(**{k: v for k, v in (config.train or {}).items() if k in known}).resolved()
    # a bf16 run decides again here, as its resume would: never emulated on a CPU without bf16
    tcfg = replace(
        recorded,
        epochs=cfg.epochs,
        lr=cfg.lr,
        seed=cfg.seed,
        teacher=None,
        resume=False,
        batch_size=cfg.batch_size or recorded.batch_size,
        bf16=None if recorded.bf16 else False,
    )
    device = pick_device(cfg.device)
    tcfg, autocast = autocast_choice(tcfg, device)
    return tcfg, device, autocast["note"]


def _tensors(cfg: QatConfig, config: RunConfig, meta: ModelMeta, device: Any) -> tuple[tuple, tuple]:
    """(train images, labels) and (test images, labels) of the run's data at its input size, on `device`."""
    import torch

    from .data import load_data
    from .train import _subset
    from .utils import data_source

    source = data_source(config, cfg.data)
    data = load_data(
        source, cfg.cache_dir or (config.train or {}).get("cache_dir"), 0.0, cfg.seed, list(model_size(meta))
    )
    if list(data.classes) != list(meta.classes):
        raise EdgecifarError(f"{cfg.run} was trained on other classes than {source} holds: pass its --data")
    return tuple(
        tuple(torch.from_numpy(a).to(device) for a in _subset(x, y, limit, cfg.seed))
        for x, y, limit in ((data.train_x, data.train_y, cfg.max_train), (data.test_x, data.test_y, cfg.max_test))
    )


def _save(
    out: Path,
    cfg: QatConfig,
    config: dict[str, Any],
    student: Any,
    test: tuple,
    accuracies: dict,
    history: list[dict[str, Any]],
    device: Any,
) -> float:
    """config.json first (a folder without weights is not a run yet), then the weights with the quantizers'
    learned tensors (NNCF_PREFIX keys), then metrics.json; returns the latent float weights' own accuracy."""
    from .runs import load_run, save_weights, write_config
    from .train import evaluate

    plain = load_run(cfg.run).to(device)
    plain.load_state_dict({k: v for k, v in student.state_dict().items() if not k.startswith(NNCF_PREFIX)})
    section = {
        "source_run": str(cfg.run),
        "source_sha256": plain.meta.source_sha256,
        **{k: v for k, v in asdict(cfg).items() if k not in ("run", "out", "cache_dir", "device")},
    }
    if cfg.fake_quant:
        section["nncf"] = nncf_config(student)
    meta = replace(plain.meta, source_run=None, source_sha256=None)
    if cfg.fake_quant:
        written = replace(config, model=meta, qat=section)
    else:  # a float fine-tune: a section a QAT run's readers do not take for theirs
        written = replace(config, model=meta, extra={**config.extra, "finetune": section})
    write_config(out, written)
    sha = save_weights(student, out)
    latent = evaluate(plain, *test)
    _write_metrics(out, {"test_acc": latent, **accuracies}, history, sha, device)
    return latent


def _fake_quantized(model: Any, train_x: Any, cfg: QatConfig) -> Any:
    """The model with NNCF's quantizers, initialised from a seeded draw of `calib_size` training images by the
    same post-training quantization the OpenVINO exporter runs (7-bit weights under --int8-isa x86)."""
    import torch

    # importing nncf loads torch.utils.cpp_extension, which logs a CUDA warning that is noise on a CPU host
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    import nncf

    from .backends import error_text
    from .backends.openvino import openvino_ptq_parameters
    from .errors import ExportError

    nncf.set_log_level(logging.ERROR)
    quantize_with_torch_ops()
    pick = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(cfg.seed))[: cfg.calib_size]
    batches = list(train_x[pick.to(train_x.device)].split(16))
    settings, advanced = openvino_ptq_parameters(cfg.int8_isa, len(batches))
    settings["fast_bias_correction"] = True  # nncf's torch backend has no other (training corrects biases anyway)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # nncf's progress bars
            quantized = nncf.quantize(model.eval(), nncf.Dataset(batches), advanced_parameters=advanced, **settings)
    except Exception as e:
        raise ExportError(f"nncf.quantize failed: {error_text(e)}") from e
    if cfg.int8_isa == "x86":
        for quantizer, _ in weight_quantizers(quantized):
            quantizer.register_forward_pre_hook(lambda q, args: _within_x86_steps(q, args[0]))
    return quantized


def _fit(
    model: Any, taught: Any, tcfg: Any, train_x: Any, train_y: Any, show_progress: bool, log
) -> list[dict[str, Any]]:
    """AdamW (no weight decay: a few epochs from a converged model) with a cosine decay to 0, over the run's
    own augmentation and batch size; every parameter trains, the quantizers' scales too."""
    import torch

    from .train import _train_epoch, batch_bounds

    steps = tcfg.epochs * len(batch_bounds(len(train_y), tcfg.batch_size))
    optimizer = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    history = []
    for epoch in range(tcfg.epochs):
        history.append(
            _train_epoch(model, taught, None, optimizer, scheduler, train_x, train_y, tcfg, epoch, show_progress)
        )
        h = history[-1]
        log(
            f"epoch {epoch + 1}/{tcfg.epochs}  loss {h['loss']:.4f}  train {h['train_acc']:.2%}  "
            f"{h['images_per_s']:.0f} img/s  {h['seconds']:.0f}s"
        )
    model.eval()
    return history


def _write_metrics(
    out: Path, accuracies: dict[str, float | None], history: list[dict[str, Any]], sha: str, device: Any
) -> None:
    import platform

    import torch

    from .runs import write_metrics

    write_metrics(
        out,
        {
            **accuracies,
            "epochs": history,
            "train_seconds": sum(h["seconds"] for h in history),
            "weights_sha256": sha,
            "device": str(device),
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
    )
