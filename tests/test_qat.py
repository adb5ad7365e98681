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


def test_qat_exports_int8_with_its_own_quantizers(qat_run, tmp_path):
    from edgecifar.export import export_run
    from edgecifar.runtime import load_artifact

    logs: list[str] = []
    entries = export_run(qat_run, "all", "all", out_dir=tmp_path, calib_size=16, verify_size=60, log=logs.append)
    assert [(e["format"], e["precision"]) for e in entries] == [("openvino", "int8")]
    assert any("onnx left out" in line for line in logs)
    assert entries[0]["verification"]["agreement"] >= 0.98  # the IR computes what the fake-quantized model does
    artifact = load_artifact(tmp_path / entries[0]["path"])
    assert artifact.metadata["quantization"].startswith("QAT: 1 epoch(s) from ")
    assert artifact.metadata["int8_isa"] == "x86"


@pytest.mark.parametrize("formats, precisions, max_drop", [("onnx", "int8", None), ("openvino", "fp32", None),
                                                           ("openvino", "int8", 0.3)])
def test_qat_export_refuses_what_would_drop_its_quantizers(qat_run, tmp_path, formats, precisions, max_drop):
    from edgecifar.export import export_run

    with pytest.raises(UsageError, match="QAT run"):
        export_run(qat_run, formats, precisions, out_dir=tmp_path, max_drop=max_drop)
    assert not any(tmp_path.iterdir())


def test_float_finetune_control_is_a_plain_run(tiny_run, tmp_path):
    from edgecifar.qat import QatConfig, finetune
    from edgecifar.runs import load_run

    out = finetune(QatConfig(run=str(tiny_run), epochs=1, fake_quant=False, out=str(tmp_path / "ft")),
                   log=lambda _: None)
    config = json.loads((out / "config.json").read_text())
    assert "qat" not in config and config["finetune"]["fake_quant"] is False
    assert "qat" not in load_run(out).meta


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
        qat.finetune(qat.QatConfig(run=str(tiny_run), calib_size=16, out=str(tmp_path / "stopped")),
                     log=lambda _: None)
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
