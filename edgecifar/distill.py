"""Knowledge distillation from a trained run (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network"):
the teacher's logits for every training image, computed once, and the loss that mixes them with the labels."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .contract import model_size, size_text
from .errors import EdgecifarError
from .models import predict_logits
from .runs import load_run


def teacher_logits(
    run_dirs: str | Sequence[str], images: torch.Tensor, classes: list[str], tta: bool = False
) -> torch.Tensor:
    """The teachers' logits for every training image as is and mirrored: [N, 2, classes].

    Computed once, so distilling from a large teacher costs one pass over the data instead of a
    teacher forward per step (several times the student's step for a large teacher). The student's
    crop is up to 4 px off the view the teacher saw; its flip is matched exactly. With `tta` both views
    hold the mean of the two: the teacher distils its flip test-time augmentation (+1.08 points for
    `airnet_m-10ep`, benchmarks/results/tta_gap.md) into a student that is still run on one view.

    Several run folders form an ensemble whose logits are averaged: one student distilled from an
    ensemble, the use Hinton et al. (2015, section 1) give distillation. Raises EdgecifarError for a
    teacher trained on other classes or taking another image size.
    """
    runs = [run_dirs] if isinstance(run_dirs, str) else list(run_dirs)
    logits = torch.stack([one_teacher(run, images, classes) for run in runs]).mean(0)
    return logits.mean(1, keepdim=True).expand_as(logits) if tta else logits


def one_teacher(run_dir: str, images: torch.Tensor, classes: list[str]) -> torch.Tensor:
    """One trained run's logits for `images` as is and mirrored: [N, 2, classes]."""
    # channels_last: the NHWC input is channels_last already, and contiguous weights would be reordered on every
    # call (a third less time for airnet_m: docs/design-notes.md)
    teacher = load_run(run_dir).to(images.device, memory_format=torch.channels_last)
    if teacher.meta.classes != classes:
        raise EdgecifarError(f"teacher {run_dir} was trained on other classes")
    if model_size(teacher.meta) != tuple(images.shape[1:3]):
        raise EdgecifarError(
            f"teacher {run_dir} takes {size_text(model_size(teacher.meta))} images, this run "
            f"{size_text(tuple(images.shape[1:3]))}: train with its --input-size"
        )
    return torch.stack([predict_logits(teacher, images), predict_logits(teacher, images.flip(2))], dim=1)


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, hard_loss: torch.Tensor, alpha: float, temperature: float
) -> torch.Tensor:
    """(1 - alpha) * label loss + alpha * T^2 * KL(teacher || student) on temperature-softened logits."""
    soft = F.kl_div(
        F.log_softmax(student / temperature, dim=1),
        F.log_softmax(teacher.detach() / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return (1 - alpha) * hard_loss + alpha * temperature**2 * soft
