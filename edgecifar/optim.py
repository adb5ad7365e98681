"""Muon and the airbench learning-rate schedule.

Muon (Jordan et al. 2024, "Muon: an optimizer for hidden layers"; the optimizer of airbench94_muon.py in
KellerJordan/cifar10-airbench) replaces each conv filter bank's momentum update by its nearest
semi-orthogonal matrix, computed with a few Newton-Schulz iterations, and keeps the filters at a fixed norm.
Parameters that are not filter banks (biases, BN, the linear head) take Nesterov SGD in the same optimizer,
so the training loop drives one optimizer and one scheduler whatever the recipe.
"""

from __future__ import annotations

import math

import torch
from torch import nn

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
    groups = [dict(params=filters, lr=lr),
              dict(params=biases, lr=bias_lr, weight_decay=decay / bias_lr, **sgd),
              dict(params=heads, lr=head_lr, weight_decay=decay / head_lr, **sgd),
              dict(params=whiten_bias, lr=bias_lr, weight_decay=decay / bias_lr, decay_epochs=WHITEN_BIAS_EPOCHS,
                   **sgd)]
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
