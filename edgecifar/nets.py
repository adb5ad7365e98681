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
    """airbench-style block: conv, 2x2 max-pool, BN, ReLU, then a residual conv-BN-ReLU at the pooled size."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.MaxPool2d(2),
                                  nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
        self.body = nn.Sequential(conv_bn(cout, cout), nn.ReLU(inplace=True))

    def forward(self, x):
        x = self.down(x)
        return x + self.body(x)


class EdgePoolNet(nn.Module):
    """Stem conv, then pool blocks that halve the resolution early (cheap on CPUs), global max-pool, linear."""

    def __init__(self, stem: int, widths: tuple[int, ...], num_classes: int):
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, stem), nn.ReLU(inplace=True)]
        cin = stem
        for width in widths:
            layers.append(PoolBlock(cin, width))
            cin = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


EDGE_RECIPE = Recipe(epochs=40, batch_size=128, lr=0.1, optimizer="sgd", weight_decay=5e-4, label_smoothing=0.1,
                     img_size=32, cutout=8, ema=0.999)


# a 78 K-parameter net underfits under cutout (train accuracy stayed below test): crop/flip only
@register_model("edge_tiny", recipe=replace(EDGE_RECIPE, cutout=0))
def edge_tiny(num_classes: int = 10, pretrained: bool = False, weights: str | None = None) -> nn.Module:
    """ResNet-8 layout (MLPerf Tiny's CIFAR-10 model): widths 16-32-64, one block each; 78 K params."""
    return EdgeResNet((16, 32, 64), (1, 1, 1), num_classes)


@register_model("edge_small", recipe=replace(EDGE_RECIPE, epochs=30))
def edge_small(num_classes: int = 10, pretrained: bool = False, weights: str | None = None) -> nn.Module:
    """airbench-style pool blocks, widths 32-96-128 after a 24-channel stem; 0.39 M params."""
    return EdgePoolNet(24, (32, 96, 128), num_classes)
