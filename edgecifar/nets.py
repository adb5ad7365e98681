"""From-scratch architectures, designed for 32x32 inputs; each adapts its pooling to the run's input size (a
global pool before the classifier, or scratch_cnn's pool to 4x4), so it takes any size its poolings allow."""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from .registry import Recipe, register_model


# bf16 autocast where the CPU has it (edgecifar.train): about twice fp32's throughput for these plain convolutions,
# while EfficientNet-Lite0's depthwise convs run slower in bf16, so TIMM_RECIPE stays fp32. 24 epochs instead of 40
# cost under a point and free the time the default pipeline needs for the distilled airnet_m (the reference run
# keeps its 40 fp32 epochs). Measurements: docs/design-notes.md
@register_model(
    "scratch_cnn",
    recipe=Recipe(
        epochs=24, batch_size=128, lr=0.04, optimizer="sgd", weight_decay=5e-4, label_smoothing=0.1, bf16=True
    ),
)
def scratch_cnn(num_classes: int = 10, pretrained: bool = False, weights: str | None = None) -> nn.Module:
    """The report's CustomCNN: 3 conv (32-64-128) + 2 fc (2048-512-C), no batch norm; 1.15 M params. Inputs
    other than 32x32 are average-pooled to its 4x4 grid before the classifier."""

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]

    return nn.Sequential(
        *block(3, 32),
        *block(32, 64),
        *block(64, 128),
        PoolFlatten(4),
        nn.Linear(128 * 4 * 4, 512),
        nn.ReLU(inplace=True),
        nn.Linear(512, num_classes),
    )


class PoolFlatten(nn.Module):
    """Average-pool a feature map to `grid` x `grid` (when it is another size), then flatten. No parameters, so
    it stands where scratch_cnn had nn.Flatten and older weights load unchanged; at 32x32 inputs the map is
    already 4x4 and the exported graph is the one it always was."""

    def __init__(self, grid: int):
        super().__init__()
        self.grid = grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (self.grid, self.grid):  # static at export: resolved while tracing
            x = F.adaptive_avg_pool2d(x, self.grid)
        return x.flatten(1)


# ---------------------------------------------------------------- edge nets (batch norm, residuals)
# Plain 3x3 convs + BN + ReLU only: every op has a fused INT8 kernel in ONNX Runtime and OpenVINO, BN folds
# into the convs at export, and ReLU keeps activations one-sided (cheap to quantize).


def conv_bn(cin: int, cout: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """ResNet basic block: conv-BN-ReLU-conv-BN plus shortcut (1x1 conv when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, cout, stride), nn.ReLU(inplace=True), conv_bn(cout, cout))
        self.shortcut = conv_bn(cin, cout, stride, kernel=1) if stride != 1 or cin != cout else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.body(x) + self.shortcut(x))


class EdgeResNet(nn.Module):
    """A CIFAR ResNet: 3x3 stem, one stage per width (stride 2 from the second), global pool, linear."""

    def __init__(self, widths: tuple[int, ...], blocks: tuple[int, ...], num_classes: int):
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, widths[0]), nn.ReLU(inplace=True)]
        cin = widths[0]
        for i, (width, n) in enumerate(zip(widths, blocks)):
            for j in range(n):
                layers.append(BasicBlock(cin, width, stride=2 if i > 0 and j == 0 else 1))
                cin = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


class PoolBlock(nn.Module):
    """airbench-style block: conv-BN-ReLU, 2x2 max-pool, then a residual conv-BN-ReLU at the pooled size.

    BN before the pool (airbench pools first): there it folds into the conv at export; after the pool it
    stayed a float BatchNormalization node between quantized ops (about 15 us per image in onnxruntime).
    """

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.down = nn.Sequential(conv_bn(cin, cout), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.body = nn.Sequential(conv_bn(cout, cout), nn.ReLU(inplace=True))

    def forward(self, x):
        x = self.down(x)
        return x + self.body(x)


class EdgePoolNet(nn.Module):
    """Stem conv and 2x2 max-pool, then pool blocks: every conv after the stem runs at 16x16 or less at 32x32
    inputs (cheap on CPUs at batch 1), global max-pool, linear."""

    def __init__(self, stem: int, widths: tuple[int, ...], num_classes: int):
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, stem), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        cin = stem
        for width in widths:
            layers.append(PoolBlock(cin, width))
            cin = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


# bf16 autocast: about twice fp32's training throughput for these nets where the CPU has bf16 (docs/design-notes.md);
# train turns it off where bf16 is only emulated (AVX2 CPUs), which would be many times slower than fp32
EDGE_RECIPE = Recipe(
    epochs=40,
    batch_size=256,
    lr=0.2,
    optimizer="sgd",
    weight_decay=5e-4,
    label_smoothing=0.1,
    cutout=8,
    ema=0.999,
    bf16=True,
)


# a 78 K-parameter net underfits under cutout (train accuracy stayed below test): crop/flip only
@register_model("edge_tiny", recipe=replace(EDGE_RECIPE, cutout=0, epochs=60))
def edge_tiny(num_classes: int = 10, pretrained: bool = False, weights: str | None = None) -> nn.Module:
    """ResNet-8 layout (MLPerf Tiny's CIFAR-10 model): widths 16-32-64, one block each; 78 K params."""
    return EdgeResNet((16, 32, 64), (1, 1, 1), num_classes)


@register_model("edge_small", recipe=replace(EDGE_RECIPE, epochs=80))
def edge_small(num_classes: int = 10, pretrained: bool = False, weights: str | None = None) -> nn.Module:
    """Pooled 16-channel stem, pool blocks of widths 40-80-160; 0.46 M params, 8.4 M MACs (fewer than
    scratch_cnn's 11.4 M, so it can beat that net's INT8 latency)."""
    return EdgePoolNet(16, (40, 80, 160), num_classes)


# ---------------------------------------------------------------- airbench family (Jordan, arXiv 2404.00498)
# A port of KellerJordan/cifar10-airbench's CifarNet (airbench94_muon.py): a frozen 2x2 patch-whitening
# conv initialised from the training data, three conv groups (conv, 2x2 max-pool, BN, GELU, conv, BN, GELU)
# with identity-initialised convs, BN with low statistics momentum and frozen scale, a global max-pool and
# a bias-free linear head scaled by 1/width. Trained with Muon (edgecifar.optim).


class FrozenScaleBN(nn.BatchNorm2d):
    """airbench's BatchNorm: running statistics with momentum 0.4 (PyTorch's convention; airbench writes
    0.6), eps 1e-12, and a scale frozen at 1 so only the bias trains."""

    def __init__(self, channels: int):
        super().__init__(channels, eps=1e-12, momentum=0.4)
        self.weight.requires_grad_(False)


class IdentityConv(nn.Conv2d):
    """3x3 'same' conv without bias whose first in_channels filters start as the identity (dirac)."""

    def __init__(self, cin: int, cout: int):
        super().__init__(cin, cout, 3, padding=1, bias=False)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        nn.init.dirac_(self.weight.data[: self.in_channels])


class ConvGroup(nn.Module):
    """conv, 2x2 max-pool, BN, act, conv, BN, act (airbench's order, in training and in the exported graph).

    In eval mode BN is a fixed increasing per-channel map, so applying it before the pool would give the same
    outputs and let it fold into the conv. But OpenVINO 2026.4's CPU plugin computes Convolution -> MaxPool ->
    Gelu wrongly in f32 (it fuses the GELU into the convolution, before the pool: max |error| 0.07 on random
    data, 93.4 % top-1 agreement for a trained airnet_m), so the BN stays between the pool and the GELU, where
    the result is exact (tests/test_airnet.py checks it).
    """

    def __init__(self, cin: int, cout: int, act: type[nn.Module]):
        super().__init__()
        self.conv1, self.norm1 = IdentityConv(cin, cout), FrozenScaleBN(cout)
        self.conv2, self.norm2 = IdentityConv(cout, cout), FrozenScaleBN(cout)
        self.pool = nn.MaxPool2d(2)
        self.act = act()

    def forward(self, x):
        x = self.conv1(x)
        x = self.norm1(self.pool(x))
        return self.act(self.norm2(self.conv2(self.act(x))))


class ActThenPoolGroup(ConvGroup):
    """ConvGroup in the order conv, BN, act, 2x2 max-pool, conv, BN, act: in eval mode the same function as
    ConvGroup's for an increasing activation (ReLU) and BN of positive scale (frozen at 1), since a per-channel
    increasing map commutes with max-pooling. Quantized, it is what TFLite's MAX_POOL_2D needs: the same scale on its
    input and output, which PT2E gives only when the pool sits between a fused conv-BN-ReLU and the next conv
    (pool before BN, litert-torch stopped: "'tfl.max_pool_2d' op quantization parameters violate the same scale
    constraint"). Same modules, so weights load either way."""

    def forward(self, x):
        x = self.pool(self.act(self.norm1(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


class GlobalMaxPool(nn.Module):
    """Global max-pool as a max-pool whose window is the whole feature map (fixed when exported): the values of
    nn.AdaptiveMaxPool2d(1), exported as ONNX MaxPool and TFLite MAX_POOL_2D, which NNAPI, CoreML and TFLite Micro
    all take; the adaptive pool becomes ReduceMax in ONNX, which ONNX Runtime's NNAPI provider does not take."""

    def forward(self, x):
        return F.max_pool2d(x, tuple(x.shape[-2:]))


class AirbenchNet(nn.Module):
    """Patch-whitening stem (2x2, 24 channels, frozen; `init_from_data`), three ConvGroups of `widths`,
    global max-pool, bias-free linear head scaled by 1/width. Input: normalized NCHW float, any size >= 16.
    act: the activation (airbench's GELU; ReLU for targets without a GELU kernel); pool: the global max-pool
    module (GlobalMaxPool for accelerators without ReduceMax); group: ConvGroup or ActThenPoolGroup. None of them
    has parameters of its own: weights load either way."""

    def __init__(
        self,
        widths: tuple[int, int, int],
        num_classes: int,
        act: type[nn.Module] = nn.GELU,
        pool: type[nn.Module] = lambda: nn.AdaptiveMaxPool2d(1),
        group: type[ConvGroup] = ConvGroup,
    ):
        super().__init__()
        whiten_width = 2 * 3 * 2 * 2  # each eigenvector of the 12-dim 2x2x3 patch space, with both signs
        self.whiten = nn.Conv2d(3, whiten_width, 2, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)
        groups, cin = [], whiten_width
        for width in widths:
            groups.append(group(cin, width, act))
            cin = width
        self.layers = nn.Sequential(act(), *groups, pool(), nn.Flatten())
        self.head = nn.Linear(cin, num_classes, bias=False)
        self.head_scale = 1.0 / cin
        with torch.no_grad():
            self.head.weight /= self.head.weight.std()  # unit-variance head, then the 1/width output scale

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the whitening filters from normalized training images [N, 3, H, W] (airbench uses 5,000): the
        eigenvectors of the 2x2 patches' covariance, scaled by 1/sqrt(eigenvalue + eps), with both signs."""
        c, (h, w) = images.shape[1], self.whiten.weight.shape[2:]
        patches = images.float().unfold(2, h, 1).unfold(3, w, 1).transpose(1, 3).reshape(-1, c * h * w)
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance.double())
        scaled = (eigenvectors.T / torch.sqrt(eigenvalues.clamp_min(0) + eps)[:, None]).float().reshape(-1, c, h, w)
        self.whiten.weight.copy_(torch.cat((scaled, -scaled)))

    def forward(self, x):
        return self.head(self.layers(self.whiten(x))) * self.head_scale


# airbench94_muon's recipe, translated to edgecifar's units (edgecifar.optim.muon_param_groups): Muon at
# lr 0.24 for conv filters, Nesterov SGD for biases and the head, linear decay to zero, batch 2000,
# label smoothing 0.2, 2-px translation, alternating flips. No weight EMA (the Muon record has none).
AIRBENCH_RECIPE = Recipe(
    epochs=8,
    batch_size=2000,
    lr=0.24,
    optimizer="muon",
    weight_decay=2e-6,
    label_smoothing=0.2,
    bf16=True,
    schedule="linear",
    translate=2,
    flip="alternating",
)


@register_model("airnet_l", recipe=AIRBENCH_RECIPE)
def airnet_l(num_classes: int = 10, pretrained: bool = False, weights: str | None = None) -> nn.Module:
    """airbench94's CifarNet as published, widths 64-256-256: 1.97 M params, 118 M MACs (the accuracy ceiling of
    the scratch family)."""
    return AirbenchNet((64, 256, 256), num_classes)


# 18 epochs: about half a point more than 10, for a third more training time (docs/design-notes.md)
@register_model("airnet_m", recipe=replace(AIRBENCH_RECIPE, epochs=18))
def airnet_m(num_classes: int = 10, pretrained: bool = False, weights: str | None = None) -> nn.Module:
    """airbench's CifarNet at widths 48-192-192: 1.11 M params, 69 M MACs. Its INT8 files run faster at batch 1
    than EfficientNet-Lite0's (benchmarks/results/edge_designs.md)."""
    return AirbenchNet((48, 192, 192), num_classes)


@register_model("airnet_s", recipe=replace(AIRBENCH_RECIPE, epochs=16))
def airnet_s(num_classes: int = 10, pretrained: bool = False, weights: str | None = None) -> nn.Module:
    """airbench's CifarNet at widths 32-128-128: 0.50 M params, 33 M MACs."""
    return AirbenchNet((32, 128, 128), num_classes)


# the tiny tier (INT8 ONNX <= 120 KB): as many parameters as edge_tiny (76 K against 78 K), in airbench's layout,
# so it can be distilled from airnet_l and trained by the same recipe; small enough for 40 epochs on a 2-core CPU.
# lr 0.08, a third of airbench's: at 0.24 the net stayed at chance for its first epochs and ended lower
# (docs/design-notes.md)
@register_model("airnet_t", recipe=replace(AIRBENCH_RECIPE, epochs=40, lr=0.08))
def airnet_t(num_classes: int = 10, pretrained: bool = False, weights: str | None = None) -> nn.Module:
    """airbench's CifarNet at widths 16-40-56: 76 K params, 7.4 M MACs."""
    return AirbenchNet((16, 40, 56), num_classes)


# ---------------------------------------------------------------- accelerator-friendly airnets (issue 28)
# The airnets' GELU has no kernel in TFLite Micro, NNAPI or CoreML (ONNX Runtime's usability checker: NNAPI takes
# 19 of airnet_m-kd's 95 nodes), and its global max-pool becomes ReduceMax, which NNAPI lacks. These variants are
# the same nets with ReLU, each group's max-pool after its first conv-BN-ReLU (ActThenPoolGroup) and a whole-map MaxPool
# head: every op they use is a TFLite Micro builtin, an NNAPI and a CoreML op. Same recipes as their GELU originals (not yet trained here: see docs/microcontrollers.md).


@register_model("airnet_t_relu", recipe=replace(AIRBENCH_RECIPE, epochs=40, lr=0.08))
def airnet_t_relu(num_classes: int = 10, pretrained: bool = False, weights: str | None = None) -> nn.Module:
    """airnet_t (widths 16-40-56, 76 K params) with ReLU and a MaxPool head: runs in TFLite Micro, NNAPI, CoreML."""
    return AirbenchNet((16, 40, 56), num_classes, act=nn.ReLU, pool=GlobalMaxPool, group=ActThenPoolGroup)


@register_model("airnet_m_relu", recipe=replace(AIRBENCH_RECIPE, epochs=18))
def airnet_m_relu(num_classes: int = 10, pretrained: bool = False, weights: str | None = None) -> nn.Module:
    """airnet_m (widths 48-192-192, 1.11 M params) with ReLU and a MaxPool head: every op on every edge target."""
    return AirbenchNet((48, 192, 192), num_classes, act=nn.ReLU, pool=GlobalMaxPool, group=ActThenPoolGroup)
