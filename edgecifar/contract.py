"""The input contract: uint8 RGB NHWC images at the run's input size, [N, H, W, 3].

A run chooses its input size once (`train --input-size`, default 32x32 for CIFAR-10); the model's metadata
records it as `input.shape` = ["N", H, W, 3], and so do config.json, every exported file's metadata and the
manifest. Whatever reads a model (export, evaluate, bench, predict, the device side) takes the size from
there. Files and runs from before input sizes existed carry [N, 32, 32, 3] or nothing: both mean 32x32.
Imports nothing heavy (the device side uses it).
"""

from __future__ import annotations

import re
from typing import Any

from .errors import UsageError
from .records import ModelMeta

DEFAULT_SIZE = (32, 32)  # CIFAR-10's, and what a file that records no size takes
MAX_SIDE = 4096  # a sanity bound: a classifier's input, not a photo's full resolution
_SIZE = re.compile(r"^\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*$")

Size = tuple[int, int]  # (height, width) in pixels


def parse_size(value: Any) -> Size:
    """ "96" -> (96, 96); "64x128" -> (64, 128) (height x width); an int or an (H, W) pair as is.
    Raises UsageError for anything else, or a side outside 1..MAX_SIDE."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        hw = tuple(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        hw = (value, value)
    elif isinstance(value, str) and (found := _SIZE.match(value)):
        hw = (int(found[1]), int(found[2] or found[1]))
    else:
        raise UsageError(f"--input-size takes N (square) or HxW in pixels, e.g. 96 or 64x128; got {value!r}")
    if not all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= MAX_SIDE for s in hw):
        raise UsageError(f"--input-size sides must be whole numbers from 1 to {MAX_SIDE}, got {value!r}")
    return int(hw[0]), int(hw[1])


def input_spec(size: Size) -> dict[str, Any]:
    """The contract as recorded in metadata, config.json and the manifest."""
    return {"name": "image", "dtype": "uint8", "shape": ["N", size[0], size[1], 3], "layout": "NHWC", "color": "RGB"}


def size_of(spec: Any) -> Size:
    """The (H, W) an `input_spec` (or its JSON text) records; DEFAULT_SIZE when it records none (older files)."""
    return recorded_size(spec) or DEFAULT_SIZE


def recorded_size(spec: Any) -> Size | None:
    """The (H, W) an `input_spec` (or its JSON text) records, or None."""
    if isinstance(spec, str):
        import json

        try:
            spec = json.loads(spec)
        except ValueError:
            return None
    shape = spec.get("shape") if isinstance(spec, dict) else None
    if isinstance(shape, list) and len(shape) == 4 and all(isinstance(s, int) and s > 0 for s in shape[1:3]):
        return int(shape[1]), int(shape[2])
    return None


def model_size(meta: ModelMeta) -> Size:
    """The input size of a model, from its metadata."""
    return size_of(meta.input)


def shape_text(size: Size) -> str:
    return f"uint8 [N, {size[0]}, {size[1]}, 3]"


def size_text(size: Size) -> str:
    return f"{size[0]}x{size[1]}"


def contract_text(size: Size) -> str:
    """The contract in words, as every exported file carries it."""
    return (
        f"input 'image': {shape_text(size)}, RGB, NHWC, raw 0-255 pixels (normalization and resize are inside "
        f"the graph); output 'logits': float32 [N, C], softmax gives class probabilities"
    )
