"""The model registry: the recipes and specs of the registered models, and the decorator that registers one.

It imports only the standard library: the architectures (edgecifar.nets, the transfer models in
edgecifar.models) import it to register themselves, and edgecifar.models, which imports them, reads it
(`get_spec`, `list_models`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
Family = Literal["scratch", "transfer"]  # trained from random weights, or fine-tuned from ImageNet weights


@dataclass(frozen=True)
class Recipe:
    """A model's default training recipe: `edgecifar train --model NAME` with no flags uses it."""

    epochs: int = 30
    batch_size: int = 256
    lr: float = 0.05
    optimizer: str = "sgd"
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    img_size: int | None = None  # the backbone's resolution, resized to inside the model; None: the input size
    cutout: int = 0
    ema: float = 0.0  # EMA decay per step; 0 disables
    bf16: bool = False  # autocast matmuls/convs to bfloat16 (CPUs with bf16, and GPUs)
    freeze: int = 0  # leading layer groups of a pretrained backbone left frozen (stem, then each stage)
    schedule: str = "onecycle"  # onecycle (warm-up then anneal) | linear (decay to zero from the start: airbench)
    translate: int = 4  # random translation in pixels (reflect-padded crop)
    flip: str = "random"  # random (each image, each epoch) | alternating (airbench: a fixed random half, then
    #                       every image mirrored on odd epochs, so each image is seen both ways in two epochs)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[..., Any]  # build(num_classes, pretrained, weights) -> backbone on NCHW float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    recipe: Recipe
    description: str
    pretrained_source: str = ""  # where --pretrained weights come from
    family: Family = "scratch"  # what its recipe is for: "transfer" models start from ImageNet weights


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    *,
    mean=CIFAR_MEAN,
    std=CIFAR_STD,
    recipe: Recipe = Recipe(),
    description: str = "",
    pretrained_source: str = "",
    family: Family | None = None,
):
    """Decorator: register `build(num_classes, pretrained, weights)` under `name`. family: "transfer" where
    the model has pretrained weights to start from (the default when `pretrained_source` is given), else
    "scratch". A registration changes the committed listing: regenerate it (edgecifar.catalog)."""

    def wrap(build: Callable[..., Any]) -> Callable[..., Any]:
        _REGISTRY[name] = ModelSpec(
            name,
            build,
            tuple(mean),
            tuple(std),
            recipe,
            " ".join((description or build.__doc__ or "").split()),
            pretrained_source,
            family or ("transfer" if pretrained_source else "scratch"),
        )
        return build

    return wrap
