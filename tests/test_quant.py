"""The per-layer quantization report against an independent numpy computation on a toy graph, and accuracy-
controlled INT8 on a tiny model whose one layer is made hard to quantize."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.register_assert_rewrite("export_fixtures")
from export_fixtures import CLASSES, tinted_image  # noqa: E402

from edgecifar.quant_report import layer_errors  # noqa: E402


def _sqnr(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x.astype(np.float64).ravel(), y.astype(np.float64).ravel()
    return 20 * np.log10(np.linalg.norm(x) / np.linalg.norm(x - y))


def toy_graph(path) -> dict[str, np.ndarray]:
    """x [N, 4] -> MatMul W1 -> Relu -> MatMul W2 -> y [N, 3], float32."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = {"W1": rng.normal(0, 1, (4, 6)).astype(np.float32), "W2": rng.normal(0, 1, (6, 3)).astype(np.float32)}
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h"], name="mm1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "W2"], ["y"], name="mm2"),
    ]
    graph = helper.make_graph(
        nodes,
        "toy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(v, k) for k, v in w.items()],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return w


def test_report_matches_an_independent_computation_on_a_toy_graph(tmp_path):
    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    float_path, qdq_path = tmp_path / "toy.onnx", tmp_path / "toy-qdq.onnx"
    w = toy_graph(float_path)
    rng = np.random.default_rng(1)
    calib, x = rng.normal(0, 1, (64, 4)).astype(np.float32), rng.normal(0, 1.3, (50, 4)).astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"x": calib}])

        def get_next(self):
            return next(self.items, None)

    quantize_static(
        str(float_path),
        str(qdq_path),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    layers = {layer.node: layer for layer in layer_errors(float_path, qdq_path, [x], input_name="x")}

    # independently: read each QDQ pair's scale and zero point and redo the INT8 graph's arithmetic in numpy
    qdq = onnx.load(str(qdq_path)).graph
    init = {t.name: numpy_helper.to_array(t) for t in qdq.initializer}
    pair = {n.input[0]: (init[n.input[1]], init[n.input[2]]) for n in qdq.node if n.op_type == "QuantizeLinear"}
    weight = {
        n.output[0]: (init[n.input[0]].astype(np.float32) - init[n.input[2]]) * init[n.input[1]]
        for n in qdq.node
        if n.op_type == "DequantizeLinear" and n.input[0] in init
    }

    def qdq_of(name: str, v: np.ndarray) -> np.ndarray:
        scale, zero = pair[name]
        info = np.iinfo(zero.dtype)
        return (np.clip(np.rint(v / scale) + zero.astype(np.int32), info.min, info.max) - zero.astype(np.int32)) * scale

    w1q, w2q = (next(v for k, v in weight.items() if k.startswith(name)) for name in ("W1", "W2"))
    h_float = np.maximum(x @ w["W1"], 0)
    h_pre = qdq_of("x", x) @ w1q  # the Relu is folded into the pair after the MatMul (zero point 0)
    h_name = next(k for k in pair if k in ("h", "r"))
    h_post = qdq_of(h_name, h_pre)
    y_float = h_float @ w["W2"]
    y_pre = h_post @ w2q
    # a graph output keeps its name after the pair; the tensor before it is renamed
    y_post = qdq_of("y_QuantizeLinear_Input", y_pre)

    first, second = layers["mm1"], layers["mm2"]
    assert first.op_type == "MatMul+Relu" and second.op_type == "MatMul"
    assert first.weight_sqnr_db == pytest.approx(_sqnr(w["W1"], w1q), abs=1e-3)
    assert second.weight_sqnr_db == pytest.approx(_sqnr(w["W2"], w2q), abs=1e-3)
    assert first.activation_sqnr_db == pytest.approx(_sqnr(np.maximum(h_pre, 0), h_post), abs=1e-3)
    assert first.mse == pytest.approx(np.mean((np.maximum(h_pre, 0) - h_post) ** 2), rel=1e-4)
    assert first.float_sqnr_db == pytest.approx(_sqnr(h_float, h_post), abs=1e-3)
    assert second.float_sqnr_db == pytest.approx(_sqnr(y_float, y_post), abs=1e-3)
    assert second.added_db == pytest.approx(_sqnr(h_float, h_post) - _sqnr(y_float, y_post), abs=1e-3)
    assert 0 < second.float_sqnr_db < first.float_sqnr_db < 60  # error accumulates along the graph


OUTLIER = 1000.0


def hard_model():
    """A tiny CNN trained in a second on tinted images, then its second conv made hard to quantize: input
    channel 0 of that conv is always zero (the first conv's channel 0 is switched off), and each of its output
    channels gets a weight of 1000 there. The float model is unchanged; per-channel INT8 scales stretch to
    1000 / 64 and round every other weight of that conv to zero."""
    from dataclasses import replace

    import torch

    from edgecifar.models import EdgeModel, create_model

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(CLASSES)), 100)
    images = np.stack([tinted_image(c, rng) for c in labels])
    backbone = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 3),
    )
    meta = replace(create_model("scratch_cnn", 3, classes=CLASSES).meta, source_sha256="hard-layer")
    model = EdgeModel(backbone, meta)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model.train()(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        backbone[0].weight[0] = 0
        backbone[0].bias[0] = -1.0  # ReLU: channel 0 is always 0
        backbone[2].weight[:, 0, 1, 1] = OUTLIER
    return model.eval(), images, labels


def _float_convs(path) -> list:
    """The Conv nodes of an INT8 ONNX file whose weights are float initializers (not dequantized INT8)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    return [init[n.input[1]] for n in graph.node if n.op_type == "Conv" and n.input[1] in init]


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_accuracy_control_leaves_exactly_the_hard_layer_in_float(tmp_path, fmt):
    import torch

    from edgecifar.accuracy_control import Control, accuracy, export_controlled
    from edgecifar.backends import BACKENDS, Calibration
    from edgecifar.runtime import load_artifact

    model, images, labels = hard_model()
    with torch.no_grad():
        float_acc = accuracy(lambda b: model(torch.from_numpy(b)).numpy(), images, labels)
    assert float_acc > 0.9
    backend = BACKENDS[fmt]
    plain = tmp_path / f"plain{backend.suffixes[0]}"
    backend.export(model, plain, "int8", Calibration(images[::5]), {"classes": json.dumps(CLASSES)})
    assert accuracy(load_artifact(plain).run, images, labels) < float_acc - 0.2  # the hard layer breaks INT8

    path, logs = tmp_path / f"controlled{backend.suffixes[0]}", []
    control = Control(0.3 * 100 / 100, images, labels, float_acc)
    metadata = {"classes": json.dumps(CLASSES), "precision": "int8"}
    files, outcome = export_controlled(
        backend, model, path, Calibration(images[::5], control=control), metadata, logs.append
    )
    assert len(outcome["float_nodes"]) == 1 and outcome["accuracy_drop"] <= 0.3
    artifact = load_artifact(path)
    assert json.loads(artifact.metadata["float_nodes"]) == outcome["float_nodes"]
    assert float(artifact.metadata["accuracy_drop"]) == pytest.approx(outcome["accuracy_drop"])
    assert accuracy(artifact.run, images, labels) >= float_acc - 0.003
    if fmt == "onnx":  # the one Conv left in float is the hard one (its weights hold the outlier)
        (kept,) = _float_convs(path)
        assert kept.max() == OUTLIER
    else:
        from edgecifar.backends.openvino import float_layers

        import openvino as ov

        assert float_layers(ov.Core().read_model(str(path))) == outcome["float_nodes"]
