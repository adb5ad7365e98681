"""Tiny model files made without torch, in a second: an ONNX graph under edgecifar's input contract (uint8
[N, H, W, 3] "image" -> float32 [N, C] "logits", class names in its metadata) whose logit k is the mean of the
image's colour channel k: a red image is class 0, a green one class 1, a blue one class 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CLASSES = ["red", "green", "blue"]


def tiny_onnx(path: Path, batch: int | str = "N", size: tuple[int, int] = (32, 32)) -> Path:
    """Write the model to `path`; `batch` an int fixes the batch axis (as make_dynamic_shape_fixed does)."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Cast", ["image"], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["pixels"], ["means"], axes=[1, 2], keepdims=0),
        helper.make_node("MatMul", ["means", "weights"], ["logits"]),
    ]
    weights = helper.make_tensor("weights", TensorProto.FLOAT, [3, 3], np.eye(3, dtype=np.float32).ravel() / 8)
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, [batch, *size, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, len(CLASSES)])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    contract = {"name": "image", "dtype": "uint8", "shape": ["N", *size, 3], "layout": "NHWC", "color": "RGB"}
    helper.set_model_props(model, {"classes": json.dumps(CLASSES), "input": json.dumps(contract)})
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def colour_images(folder: Path, n: int = 3, size: int = 40) -> list[Path]:
    """n PNGs, image i of colour i % 3 (its class), `size` px square."""
    folder.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    paths = []
    for i in range(n):
        pixels = np.full((size, size, 3), 30, np.uint8)
        pixels[..., i % 3] = 220
        paths.append(folder / f"img{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths
