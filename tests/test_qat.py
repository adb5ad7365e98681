"""Quantization-aware training (edgecifar.qat): a QAT run rebuilds its quantizers from weights + JSON, trains
them, exports INT8 with them (OpenVINO) and is refused where a format cannot keep them; the float control is a
plain run; a config.json cannot make the loader build anything but NNCF's quantizers."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest_plugins = ["export_fixtures"]  # tiny_run: a briefly trained scratch_cnn on a tinted ImageFolder

from edgecifar.errors import CheckpointError, UsageError  # noqa: E402


@pytest.fixture(scope="module")
def qat_run(tiny_run, tmp_path_factory):
    from edgecifar.qat import QatConfig, finetune

    out = tmp_path_factory.mktemp("qat") / "tiny-qat"
    # a learning rate far above the default, so that a few steps visibly move the quantizers' ranges
    return finetune(QatConfig(run=str(tiny_run), epochs=1, lr=1e-3, calib_size=16, out=str(out)), log=lambda _: None)


def _logits(model, images):
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(images)).numpy()


def _images(n: int = 24) -> np.ndarray:
    from export_fixtures import tinted_image

    rng = np.random.default_rng(3)
    return np.stack([tinted_image(i % 3, rng) for i in range(n)])


def test_qat_run_rebuilds_its_quantizers_from_weights_and_json(qat_run, tiny_run):
    from safetensors.torch import load_file

    from edgecifar.qat import NNCF_PREFIX
    from edgecifar.runs import load_run

    config = json.loads((qat_run / "config.json").read_text())
    assert config["qat"]["source_run"] == str(tiny_run) and config["qat"]["int8_isa"] == "x86"
    assert any(k.startswith(NNCF_PREFIX) for k in load_file(str(qat_run / "model.safetensors")))
    images = _images()
    first, again, source = (_logits(load_run(r), images) for r in (qat_run, qat_run, tiny_run))
    np.testing.assert_array_equal(first, again)  # deterministic rebuild
    assert np.abs(first - source).max() > 1e-4  # the quantizers act
    metrics = json.loads((qat_run / "metrics.json").read_text())
    assert {"test_acc", "test_acc_fake_quant", "test_acc_ptq", "source_test_acc"} <= set(metrics)


def test_qat_trains_the_quantizers_ranges(qat_run, tiny_run):
    """The ranges the quantizers start from (NNCF's post-training calibration) move during training."""
    import torch

    from edgecifar.qat import NNCF_PREFIX, QatConfig, _fake_quantized
    from edgecifar.runs import load_run

    trained = {k: v for k, v in load_run(qat_run).state_dict().items() if k.startswith(NNCF_PREFIX)}
    from edgecifar.data import load_data

    config = json.loads((tiny_run / "config.json").read_text())
    train_x = torch.from_numpy(load_data(config["data"]["source"], config["train"]["cache_dir"]).train_x)
    start = _fake_quantized(load_run(tiny_run), train_x, QatConfig(run=str(tiny_run), calib_size=16)).state_dict()
    ranges = [k for k in trained if k.endswith(("scale", "input_low", "input_range"))]
    assert ranges and any(not torch.equal(trained[k], start[k]) for k in ranges)


def test_qat_keeps_x86_weights_within_64_steps(qat_run):
    """Under --int8-isa x86 the fake-quantized weights stay 7-bit (+-64 steps) however far the fixture's high
    learning rate moves them: 8-bit weights would overflow on AVX2 CPUs (edgecifar.isa)."""
    import torch

    from edgecifar.qat import weight_quantizers
    from edgecifar.runs import load_run

    found = weight_quantizers(load_run(qat_run))
    assert found
    for quantizer, weight in found:
        with torch.no_grad():
            steps = quantizer.quantize(weight) / (
                quantizer.scale.abs().reshape(-1, *[1] * (weight.dim() - 1)) / quantizer.level_high
            )
        assert steps.abs().max().item() <= 64 + 1e-3


def test_qat_exports_int8_in_every_format_with_its_learned_quantizers(qat_run, tmp_path):
    from export_fixtures import EXPORTABLE

    from edgecifar.export import export_run
    from edgecifar.runtime import load_artifact

    said: list[str] = []
    entries = export_run(qat_run, "all", "all", out_dir=tmp_path, calib_size=16, verify_size=60, log=said.append)
    assert sorted((e.format, e.precision) for e in entries) == sorted((b.name, "int8") for b in EXPORTABLE)
    # the formats that re-quantize its float twin say that QAT trained for another quantizer layout
    assert any(line.startswith("note: onnx quantizes more tensors") for line in said), said
    assert not any(line.startswith("note: openvino quantizes") for line in said)
    for entry in entries:
        assert entry.verification["agreement"] >= 0.95, entry  # each file computes the fake-quantized model
        artifact = load_artifact(tmp_path / entry.path)
        assert artifact.metadata["quantization"].startswith("QAT: 1 epoch(s) from ")


def test_qat_onnx_file_quantizes_with_the_learned_scales(qat_run, tmp_path):
    """In the INT8 ONNX file, each tensor a learned activation quantizer covers has that quantizer's scale
    (zero point shifted to uint8), and each Conv/Gemm weight is quantized on the grid QAT snapped it to."""
    import onnx
    from onnx import numpy_helper

    from edgecifar.export import export_run
    from edgecifar.qat import requantizable
    from edgecifar.runs import load_run

    twin, learned = requantizable(load_run(qat_run))
    (entry,) = export_run(qat_run, "onnx", "int8", out_dir=tmp_path, calib_size=16, verify_size=60, log=lambda _: None)
    graph = onnx.load(str(tmp_path / entry.path)).graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    scales = sorted(
        float(consts[n.input[1]]) for n in graph.node if n.op_type == "QuantizeLinear" and consts[n.input[1]].ndim == 0
    )
    for r in learned:  # per tensor, activations: every learned scale is one of the file's
        assert min(abs(s - r.scale) for s in scales) <= 1e-6 * r.scale, r
    dequantized = {}
    for n in graph.node:  # the weights: int8 initializers with one scale per output channel
        if n.op_type == "DequantizeLinear" and n.input[0] in consts and consts[n.input[0]].dtype == np.int8:
            q, scale = consts[n.input[0]].astype(np.float32), consts[n.input[1]]
            dequantized[q.shape] = q * scale.reshape(-1, *[1] * (q.ndim - 1))
    snapped = [m.weight.detach().numpy() for m in twin.modules() if m.__class__.__name__ in ("Conv2d", "Linear")]
    assert snapped and all(w.shape in dequantized for w in snapped)
    for w in snapped:  # quantized on QAT's own grid: dequantizing gives back the snapped weights
        np.testing.assert_allclose(dequantized[w.shape], w, rtol=1e-5, atol=1e-7)


def test_weight_grid_is_found_exactly_and_only_when_there():
    from edgecifar.backends.onnx import _grid

    rng = np.random.default_rng(0)
    step = rng.uniform(0.001, 0.1, size=(6, 1, 1, 1)).astype(np.float32)
    integers = rng.integers(-64, 65, size=(6, 4, 3, 3))
    integers[:, 0, 0, 0] = 64  # each channel reaches the top of the 7-bit grid
    weight = (integers * step * rng.choice([-1.0, 1.0], size=(6, 1, 1, 1))).astype(np.float32)  # BN's sign
    found = np.array(_grid(weight, 64)).reshape(-1, 1, 1, 1)
    np.testing.assert_allclose(found, step, rtol=1e-6)
    np.testing.assert_allclose(np.round(weight / found) * found, weight, rtol=1e-6)
    assert _grid(rng.normal(size=(6, 4, 3, 3)).astype(np.float32), 64) is None  # float weights: no grid


def test_pt2e_observers_keep_learned_ranges():
    """keep_learned_ranges, on a toy graph: the quantize node after the learned op gets exactly the learned
    scale and zero point, where calibration alone would have chosen others; a narrower range learned for the
    average pool after it (an observer XNNPACK may share with the ReLU's) does not clip the ReLU's."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("executorch")
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from edgecifar.backends.pt2e import keep_learned_ranges
    from edgecifar.qat import ActivationRange

    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return torch.nn.functional.adaptive_avg_pool2d(torch.nn.functional.relu(self.conv(x)), 1).flatten(1)

    example = (torch.randn(2, 3, 8, 8),)
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(Toy().eval(), example).module(), quantizer)
    prepared(*example)
    # XNNPACK fuses conv + relu: the relu's output (the top module's op) is the tensor that gets quantized
    relu = ActivationRange(module="", op="relu", index=0, scale=0.037, zero_point=-5, qmin=-128, qmax=127)
    pool = ActivationRange(
        module="", op="adaptive_avg_pool2d", index=0, scale=0.01, zero_point=-128, qmin=-128, qmax=127
    )
    assert keep_learned_ranges(prepared, [relu, pool]) >= 1
    converted = convert_pt2e(prepared)
    quantize = [
        n for n in converted.graph.nodes if "quantize_per_tensor" in str(n.target) and "dequantize" not in str(n.target)
    ]
    params = [(float(n.args[1]), int(n.args[2])) for n in quantize]
    assert any(abs(s - 0.037) < 1e-6 and z == -5 for s, z in params), params


@pytest.mark.parametrize(
    "formats, precisions, max_drop", [("onnx", "fp16", None), ("openvino", "fp32", None), ("openvino", "int8", 0.3)]
)
def test_qat_export_refuses_what_would_drop_its_quantizers(qat_run, tmp_path, formats, precisions, max_drop):
    from edgecifar.export import export_run

    with pytest.raises(UsageError, match="QAT run"):
        export_run(qat_run, formats, precisions, out_dir=tmp_path, max_drop=max_drop)
    assert not any(tmp_path.iterdir())


def test_float_finetune_control_is_a_plain_run(tiny_run, tmp_path):
    from edgecifar.qat import QatConfig, finetune
    from edgecifar.runs import load_run

    out = finetune(
        QatConfig(run=str(tiny_run), epochs=1, fake_quant=False, out=str(tmp_path / "ft")), log=lambda _: None
    )
    config = json.loads((out / "config.json").read_text())
    assert "qat" not in config and config["finetune"]["fake_quant"] is False
    assert load_run(out).meta.qat is None


def test_a_config_naming_other_modules_is_refused(qat_run, tmp_path):
    import shutil

    from edgecifar.runs import load_run

    bad = tmp_path / "bad"
    shutil.copytree(qat_run, bad)
    config = json.loads((bad / "config.json").read_text())
    config["qat"]["nncf"]["compression_state"][0].update(module_path="os", module_cls_name="system")
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="other than NNCF's quantizers"):
        load_run(bad)


def test_qat_cli_says_one_line_for_a_missing_run(tmp_path):
    from typer.testing import CliRunner

    from edgecifar.cli import app

    result = CliRunner().invoke(app, ["qat", str(tmp_path / "nope")])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "run folder not found" in result.output


def test_an_interrupted_qat_leaves_no_run_folder(tiny_run, tmp_path, monkeypatch):
    import edgecifar.qat as qat

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(qat, "_fit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        qat.finetune(qat.QatConfig(run=str(tiny_run), calib_size=16, out=str(tmp_path / "stopped")), log=lambda _: None)
    assert not (tmp_path / "stopped").exists()


def test_a_qat_section_missing_its_keys_is_one_clear_error(qat_run, tmp_path):
    import shutil

    from edgecifar.export import export_run
    from edgecifar.runs import load_run

    bad = tmp_path / "bad"
    shutil.copytree(qat_run, bad)
    config = json.loads((bad / "config.json").read_text())
    del config["qat"]["int8_isa"]
    (bad / "config.json").write_text(json.dumps(config))
    for call in (lambda: load_run(bad), lambda: export_run(bad, out_dir=tmp_path / "out")):
        with pytest.raises(CheckpointError, match="QAT section must hold"):
            call()


def test_qat_needs_no_compiled_extension(tiny_run, tmp_path, monkeypatch):
    """NNCF's quantizers compute with torch's own ops, so a fresh machine compiles nothing: NNCF's C++ extension
    took 227 s to build on 2 busy cores, past NNCF's 60 s limit, and every first `qat` failed."""
    import torch
    from nncf.torch.quantization.extensions import QuantizedFunctionsCPU
    from nncf.torch.quantization.reference import ReferenceQuantize

    from edgecifar.qat import QatConfig, _fake_quantized
    from edgecifar.runs import load_run

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))
    images = torch.from_numpy(_images(16))
    model = _fake_quantized(load_run(tiny_run), images, QatConfig(run=str(tiny_run), calib_size=16)).train()
    model(images).float().sum().backward()  # the quantizers' forward and backward
    assert QuantizedFunctionsCPU.get("Quantize_forward").__func__ is ReferenceQuantize.forward
    assert not (tmp_path / "extensions").exists()
