"""From-scratch architectures for 32x32 inputs."""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from .models import Recipe, register_model


@register_model("scratch_cnn", recipe=Recipe(epochs=40, batch_size=128, lr=0.04, optimizer="sgd",
                                             weight_decay=5e-4, label_smoothing=0.1, img_size=32))
def scratch_cnn(num_classes: int = 10, pretrained: bool = False, weights: str | None = None) -> nn.Module:
    """The report's CustomCNN: 3 conv (32-64-128) + 2 fc (2048-512-C), no batch norm; 1.15 M params."""
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]

    return nn.Sequential(*block(3, 32), *block(32, 64), *block(64, 128), nn.Flatten(),
                         nn.Linear(128 * 4 * 4, 512), nn.ReLU(inplace=True), nn.Linear(512, num_classes))


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
    """Stem conv and 2x2 max-pool, then pool blocks: every conv after the stem runs at 16x16 or less (cheap on
    CPUs at batch 1), global max-pool, linear."""

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


# bf16 autocast: 2x the training throughput of fp32 for these nets on a Zen 4 CPU (AVX-512 bf16); train
# turns it off where bf16 is only emulated (AVX2 CPUs), which would be many times slower than fp32
EDGE_RECIPE = Recipe(epochs=40, batch_size=256, lr=0.2, optimizer="sgd", weight_decay=5e-4, label_smoothing=0.1,
                     img_size=32, cutout=8, ema=0.999, bf16=True)


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
