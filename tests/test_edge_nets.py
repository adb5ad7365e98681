"""The issue-5 architectures train briefly and export to every format and precision, verification included."""

import pytest

from edgecifar.export import export_run
from edgecifar.train import TrainConfig, train


@pytest.mark.parametrize("name", ["edge_tiny", "edge_small"])
def test_edge_net_exports_pass_verification(name, image_tree, tmp_path):
    run = train(
        TrainConfig(
            model=name,
            data=str(image_tree),
            cache_dir=str(tmp_path / "cache"),
            epochs=2,
            batch_size=16,
            out=str(tmp_path / "run"),
        ),
        log=lambda *a: None,
    )
    # the architectures' ops in the x86 runtimes; LiteRT and ExecuTorch convert edge_tiny and airnet_m in the
    # reference exports (exported/), at a minute per file, too slow to repeat here for two nets
    entries = export_run(run, ["onnx", "openvino"], "all", out_dir=tmp_path / "exported", calib_size=32, verify_size=30)
    assert {(e.format, e.precision) for e in entries} == {
        (f, p) for f in ("onnx", "openvino") for p in ("fp32", "fp16", "int8")
    }
    for entry in entries:
        assert (tmp_path / "exported" / entry.path).is_file()
        assert entry.model == name
    fp32 = [e for e in entries if e.precision == "fp32"]
    assert all(e.verification["agreement"] >= 0.999 for e in fp32), fp32


@pytest.mark.parametrize("name", ["airnet_t_relu", "airnet_m_relu"])
def test_relu_airnets_are_their_originals_with_edge_ops(name):
    """Same parameters as the GELU original (its weights load), the global max-pool's values, and no layer that
    TFLite Micro lacks (the original is refused for its GELU)."""
    import torch
    from torch import nn

    from edgecifar.backends.tflm import check_modules
    from edgecifar.errors import UsageError
    from edgecifar.models import create_model
    from edgecifar.nets import GlobalMaxPool

    torch.manual_seed(0)
    original, variant = create_model(name.removesuffix("_relu")), create_model(name)
    variant.load_state_dict(original.state_dict(), strict=True)
    assert not any(isinstance(m, nn.GELU) for m in variant.modules())
    x = torch.randn(2, 8, 5, 7)
    assert torch.equal(GlobalMaxPool()(x), nn.AdaptiveMaxPool2d(1)(x))
    check_modules(variant)
    with pytest.raises(UsageError, match="GELU"):
        check_modules(original)


@pytest.mark.parametrize("act", ["GELU", "ReLU"])
def test_export_reports_which_accelerators_take_every_op(act, tmp_path):
    """ONNX Runtime's own checker on the ONNX file: NNAPI lacks the airnets' Gelu and their global pool's ReduceMax,
    and takes every op of the ReLU variant (ReLU, whole-map MaxPool)."""
    import json

    import torch
    from torch import nn

    from edgecifar.backends import BACKENDS
    from edgecifar.edge_targets import edge_targets
    from edgecifar.models import EdgeModel, create_model
    from edgecifar.nets import ActThenPoolGroup, AirbenchNet, GlobalMaxPool

    pytest.importorskip("onnxruntime.tools.mobile_helpers.usability_checker")
    torch.manual_seed(0)
    backbone = (
        AirbenchNet((8, 8, 8), 10)
        if act == "GELU"
        else AirbenchNet((8, 8, 8), 10, act=nn.ReLU, pool=GlobalMaxPool, group=ActThenPoolGroup)
    )
    model = EdgeModel(backbone, create_model("airnet_t").meta).eval()
    path = tmp_path / "net-fp32.onnx"
    BACKENDS["onnx"].export(model, path, "fp32", None, {"classes": json.dumps(list("abcdefghij"))})
    nnapi = edge_targets(path)["NNAPI"]
    if act == "GELU":
        assert not nnapi["all_ops"] and {"Gelu", "ReduceMax"} <= set(nnapi["lacking"]), nnapi
    else:
        assert nnapi["all_ops"] and nnapi["partitions"] == 1, nnapi


def test_act_then_pool_group_is_the_airbench_group_in_eval():
    """ReLU and eval-mode BN of frozen (positive) scale commute with max-pooling: the reordered group computes the
    same function as airbench's, with the same weights."""
    import torch
    from torch import nn

    from edgecifar.nets import ActThenPoolGroup, ConvGroup

    torch.manual_seed(0)
    original, reordered = ConvGroup(6, 8, nn.ReLU), ActThenPoolGroup(6, 8, nn.ReLU)
    for norm in (original.norm1, original.norm2):  # trained-looking statistics
        norm.running_mean.uniform_(-1, 1), norm.running_var.uniform_(0.5, 2), norm.bias.data.uniform_(-1, 1)
    reordered.load_state_dict(original.state_dict(), strict=True)
    x = torch.randn(2, 6, 8, 8)
    torch.testing.assert_close(reordered.eval()(x), original.eval()(x))
