"""What `edgecifar train` takes (`TrainConfig`), apart from the training code that reads it, so that the
modules around training (resume, optim, qat, pipeline) share the record without importing the loop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .models import get_spec


@dataclass
class TrainConfig:
    """What `edgecifar train` takes. None means "the model's own recipe"."""

    model: str = "scratch_cnn"
    data: str = "cifar10"
    cache_dir: str | None = None
    pretrained: bool = False
    weights: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str | None = None  # sgd | adamw
    weight_decay: float | None = None
    label_smoothing: float | None = None
    img_size: int | None = None  # the backbone's resolution, resized to inside the model (`--backbone-size`)
    input_size: list[int] | None = None  # [H, W] of the images the model takes; None: the data's default
    cutout: int | None = None
    ema: float | None = None
    bf16: bool | None = None
    freeze: int | None = None  # applies to pretrained starts only
    schedule: str | None = None  # onecycle | linear
    translate: int | None = None  # random translation, pixels
    flip: str | None = None  # random | alternating
    teacher: str | list[str] | None = None  # run folder(s) to distill from; several: their averaged logits
    teacher_tta: bool = False  # soft targets: the teacher's logits averaged over both flips, not the student's view
    distill_alpha: float = 0.5
    distill_temperature: float = 4.0
    val_split: float = 0.0
    max_train: int | None = None  # cap the training images (quick runs, tests)
    max_test: int | None = None
    allow_upsample: bool = False  # decode at an --input-size far above the images' own size (UPSAMPLE_LIMIT)
    eval_every: int = 1  # evaluate after every N-th epoch and the last; 0: after the last only (no learning curve)
    seed: int = 0
    device: str = "auto"
    out: str | None = None
    resume: bool = False

    def resolved(self) -> "TrainConfig":
        """A copy with every None filled from the model's registered recipe."""
        recipe = asdict(get_spec(self.model).recipe)
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for key, default in recipe.items():
            if values.get(key) is None:
                values[key] = default
        return TrainConfig(**values)
