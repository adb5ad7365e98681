"""Optimizers, schedules and weight averaging: what `train` builds from a recipe. Muon and the airbench
learning-rate schedule; SGD, AdamW and OneCycle; an EMA of the weights.

Muon (Jordan et al. 2024, "Muon: an optimizer for hidden layers"; the optimizer of airbench94_muon.py in
KellerJordan/cifar10-airbench) replaces each conv filter bank's momentum update by its nearest
semi-orthogonal matrix, computed with a few Newton-Schulz iterations, and keeps the filters at a fixed norm.
Parameters that are not filter banks (biases, BN, the linear head) take Nesterov SGD in the same optimizer,
so the training loop drives one optimizer and one scheduler whatever the recipe.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import TYPE_CHECKING

import torch
from torch import nn

from .errors import EdgecifarError

if TYPE_CHECKING:
    from .models import EdgeModel
    from .train_config import TrainConfig

# airbench94_muon.py's rates are for a loss summed over the batch; edgecifar's loss is the batch mean, so
# the SGD rates below are per example and get multiplied by the batch size (Muon's update is normalized,
# so its rate needs no such change).
BIAS_LR_PER_EXAMPLE = 0.053
HEAD_LR_PER_EXAMPLE = 0.67
AIRBENCH_MUON_LR = 0.24  # the recipe's --lr; the SGD groups scale with lr / this
SGD_MOMENTUM = 0.85
MUON_MOMENTUM = 0.6
WHITEN_BIAS_EPOCHS = 3  # the whitening bias trains for the first 3 epochs only, its rate decaying to 0


def zeropower_via_newtonschulz5(g: torch.Tensor, steps: int = 3, eps: float = 1e-7) -> torch.Tensor:
    """Approximately orthogonalize a matrix [rows, cols]: U S' V^T with S' in about [0.5, 1.5] where
    U S V^T = g, by a quintic Newton-Schulz iteration (coefficients 3.4445, -4.7750, 2.0315, from Muon).
    Runs in bf16 on CUDA (as Muon does) and in float32 on CPUs, where these matrices are small."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.bfloat16() if g.is_cuda else g.float()
    x = x / (x.norm() + eps)  # top singular value <= 1
    tall = g.size(0) > g.size(1)
    if tall:
        x = x.T
    for _ in range(steps):
        s = x @ x.T
        x = a * x + (b * s + c * s @ s) @ x
    return (x.T if tall else x).to(g.dtype)


class Muon(torch.optim.Optimizer):
    """Muon for groups with `use_muon=True` (conv filters: [out, in, k, k]), Nesterov SGD (torch.optim.SGD's
    update, coupled weight decay) for the others. Muon groups keep each filter bank at norm sqrt(out)."""

    def __init__(self, param_groups: list[dict], lr: float, momentum: float = MUON_MOMENTUM):
        super().__init__(param_groups, dict(lr=lr, momentum=momentum, use_muon=True, weight_decay=0.0))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad if group["use_muon"] else p.grad.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(grad)
                buf = state["momentum_buffer"].mul_(momentum).add_(grad)
                update = grad.add(buf, alpha=momentum)  # Nesterov
                if group["use_muon"]:
                    p.mul_(len(p) ** 0.5 / p.norm())
                    update = zeropower_via_newtonschulz5(update.reshape(len(update), -1)).view(update.shape)
                p.add_(update, alpha=-lr)


def muon_param_groups(model: nn.Module, lr: float, batch_size: int, weight_decay: float) -> list[dict]:
    """airbench94_muon's groups: conv filters -> Muon at `lr`; the whitening bias and other 1-D parameters ->
    SGD at BIAS_LR_PER_EXAMPLE x batch; linear weights -> SGD at HEAD_LR_PER_EXAMPLE x batch; both scaled
    by lr / 0.24. `weight_decay` is per example and step (airbench: 2e-6 x batch of decay per step, applied
    as torch SGD's coupled decay of wd / lr). Frozen parameters are left out."""
    scale = lr / AIRBENCH_MUON_LR
    filters, biases, heads, whiten_bias = [], [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.endswith("whiten.bias"):
            whiten_bias.append(p)
        elif p.ndim == 4:
            filters.append(p)
        elif p.ndim == 2:
            heads.append(p)
        else:
            biases.append(p)
    decay = weight_decay * batch_size
    bias_lr, head_lr = BIAS_LR_PER_EXAMPLE * batch_size * scale, HEAD_LR_PER_EXAMPLE * batch_size * scale
    sgd = dict(use_muon=False, momentum=SGD_MOMENTUM)
    groups = [
        dict(params=filters, lr=lr),
        dict(params=biases, lr=bias_lr, weight_decay=decay / bias_lr, **sgd),
        dict(params=heads, lr=head_lr, weight_decay=decay / head_lr, **sgd),
        dict(params=whiten_bias, lr=bias_lr, weight_decay=decay / bias_lr, decay_epochs=WHITEN_BIAS_EPOCHS, **sgd),
    ]
    return [g for g in groups if g["params"]]


def linear_decay(optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int):
    """airbench's schedule: every rate decays linearly from its initial value to zero over the run; a group
    with `decay_epochs` reaches zero after that many epochs instead (and stays there)."""

    def factor(group: dict):
        steps = total_steps
        if "decay_epochs" in group:
            steps = max(1, min(total_steps, math.ceil(group["decay_epochs"] * steps_per_epoch)))
        return lambda step: max(0.0, 1.0 - step / steps)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor(g) for g in optimizer.param_groups])


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: "TrainConfig",
    total_steps: int,
    done_steps: int = 0,
    peaks: list[float] | None = None,
) -> torch.optim.lr_scheduler.LRScheduler:
    """The recipe's schedule over `total_steps`, at step `done_steps`: OneCycle (peak: each group's `peaks`
    entry, default `cfg.lr`) or airbench's linear decay. A resumed run rebuilds it from the options (a new
    --epochs or --lr applies) and continues where it stopped."""
    for group, peak in zip(optimizer.param_groups, peaks or [cfg.lr] * len(optimizer.param_groups)):
        group["lr"] = peak  # a restored optimizer holds the rates of the step it stopped at
        group.pop("initial_lr", None)
    if cfg.schedule == "linear":
        scheduler = linear_decay(optimizer, total_steps, max(1, total_steps // max(cfg.epochs or 1, 1)))
    elif cfg.schedule in (None, "onecycle"):
        # torch divides by the warm-up length, pct_start * total - 1 steps: zero at exactly 5 steps with 0.2
        # (a 5-step run ended in ZeroDivisionError); a quarter of them warms up there instead
        pct_start = 0.2 if abs(0.2 * total_steps - 1) > 1e-9 else 0.25
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[g["lr"] for g in optimizer.param_groups],
            total_steps=total_steps,
            pct_start=pct_start,
            div_factor=20,
            final_div_factor=200,
        )
    else:
        raise EdgecifarError(f"unknown schedule '{cfg.schedule}': use onecycle or linear")
    if done_steps:
        # both schedules are closed-form in the step count: the learning rate and momentum of step `done_steps`
        scheduler.last_epoch = done_steps - 1
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected call of")
            scheduler.step()
    return scheduler


def make_optimizer(model: torch.nn.Module, cfg: "TrainConfig") -> torch.optim.Optimizer:
    if cfg.optimizer == "muon":
        return Muon(muon_param_groups(model, cfg.lr, cfg.batch_size, cfg.weight_decay), lr=cfg.lr)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]  # no weight decay on biases and norms
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    raise EdgecifarError(f"unknown optimizer '{cfg.optimizer}': use sgd, adamw or muon")


class EMA:
    """Exponential moving average of the weights (and a copy of the buffers), evaluated and saved instead.
    Its decay warms up as min(decay, (1 + step) / (10 + step)), so the average tracks the first epochs
    instead of holding on to the random initial weights (whose test accuracy would be ~10 %)."""

    def __init__(self, model: "EdgeModel", decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: "EdgeModel", step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        # average BN running statistics too (as timm's ModelEmaV2 does): copying the live ones onto
        # averaged weights mismatches them while the learning rate is high
        pairs = list(zip(self.model.state_dict().values(), model.state_dict().values()))
        floats = [(e, m) for e, m in pairs if e.is_floating_point()]
        torch._foreach_lerp_([e for e, _ in floats], [m.detach() for _, m in floats], 1 - decay)
        for e, m in pairs:
            if not e.is_floating_point():
                e.copy_(m)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
