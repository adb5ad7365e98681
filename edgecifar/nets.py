"""From-scratch architectures for 32x32 inputs."""

from __future__ import annotations

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
