"""Batch augmentation on the training device (airbench-style): one call per batch, no per-image loop.

Images stay uint8 NHWC, as in the input contract.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop_flip(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Random `pad`-pixel translation (reflect padding) and horizontal flip of a uint8 NHWC batch."""
    return random_flip(random_crop(images, pad, generator), generator)[0]


def random_crop(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Random `pad`-pixel translation of a uint8 NHWC batch (reflect padding, then a crop per image)."""
    if not pad:
        return images
    n, h, w, _ = images.shape
    dev = images.device
    padded = F.pad(images.permute(0, 3, 1, 2).float(), (pad,) * 4, mode="reflect").to(images.dtype)
    padded = padded.permute(0, 2, 3, 1)  # back to NHWC, [n, h+2p, w+2p, c]
    dy = torch.randint(0, 2 * pad + 1, (n, 1), device=dev, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), device=dev, generator=generator)
    rows = (torch.arange(h, device=dev) + dy)[:, :, None]  # [n, h, 1]
    cols = (torch.arange(w, device=dev) + dx)[:, None, :]  # [n, 1, w]
    return padded[torch.arange(n, device=dev)[:, None, None], rows, cols]


def random_flip(images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror a random half of a uint8 NHWC batch; returns the batch and which images were flipped."""
    flip = torch.rand(len(images), device=images.device, generator=generator) < 0.5
    return mirror(images, flip), flip


def cutout(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero (to mid-grey, 128) one random `size` x `size` square per image, clipped at the borders."""
    n, h, w, _ = images.shape
    dev = images.device
    cy = torch.randint(0, h, (n, 1, 1), device=dev, generator=generator)
    cx = torch.randint(0, w, (n, 1, 1), device=dev, generator=generator)
    ys = torch.arange(h, device=dev)[None, :, None]
    xs = torch.arange(w, device=dev)[None, None, :]
    mask = ((ys - cy).abs() <= size // 2) & ((xs - cx).abs() <= size // 2)
    return images.masked_fill(mask[..., None], 128)


def alternating_flips(n: int, epoch: int, seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """airbench's derandomized flips: which of `n` images to mirror in `epoch` [n] bool. A fixed seeded half
    on even epochs and the other half on odd ones, so each image is seen both ways in every two epochs (random
    flips leave about a quarter of the images unmirrored, or always mirrored, over two epochs)."""
    base = torch.rand(n, device=device, generator=torch.Generator(device=device).manual_seed(seed)) < 0.5
    return base ^ bool(epoch % 2)


def mirror(images: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """Mirror the uint8 NHWC images where `which` [N] is True."""
    return torch.where(which[:, None, None, None], images.flip(2), images)
