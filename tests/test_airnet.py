"""The airbench family (airnet_s/m/l), its whitening initialisation, Muon and the airbench schedule."""

import math

import pytest
import torch
from torch import nn

from edgecifar.models import count_macs, count_params, create_model, get_spec
from edgecifar.nets import ConvGroup
from edgecifar.optim import Muon, linear_decay, muon_param_groups, zeropower_via_newtonschulz5
from edgecifar.train import TrainConfig, init_from_data, train


# params and MACs of one 32x32 image, computed by hand from the layer shapes (whitening 2x2 conv 3->24 at 31x31,
# then per group: 3x3 conv at the group's input size, 3x3 conv at the pooled size, 2 BN biases; head w3 x 10)
def expected(w1: int, w2: int, w3: int) -> tuple[int, int]:
    params, macs, cin, size = 24 * 12 + 24, 24 * 12 * 31 * 31, 24, 31
    for w in (w1, w2, w3):
        params += 9 * cin * w + 9 * w * w + 4 * w  # two convs, two BNs (weight + bias)
        macs += 9 * cin * w * size * size + 9 * w * w * (size // 2) ** 2
        cin, size = w, size // 2
    return params + 10 * w3, macs + 10 * w3


@pytest.mark.parametrize(
    "name, widths",
    [
        ("airnet_t", (16, 40, 56)),
        ("airnet_s", (32, 128, 128)),
        ("airnet_m", (48, 192, 192)),
        ("airnet_l", (64, 256, 256)),
    ],
)
def test_airnet_shapes_params_and_macs(name, widths):
    model = create_model(name, num_classes=10).eval()
    params, macs = expected(*widths)
    assert count_params(model) == params
    assert count_macs(model) == macs
    out = model(torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8))
    assert out.shape == (3, 10)
    assert get_spec(name).recipe.optimizer == "muon"


def test_openvino_fp32_computes_the_conv_group_exactly():
    """OpenVINO 2026.4's CPU plugin fuses a GELU after Convolution -> MaxPool into the convolution in f32 (max
    |error| 0.07 on random data): the airnet keeps its BN between the pool and the GELU, which it computes
    exactly. Run pinned to f32, as verification and bench run FP32 IRs."""
    import numpy as np
    import openvino as ov

    torch.manual_seed(0)
    group = ConvGroup(8, 16, nn.GELU)
    x = torch.randn(8, 8, 16, 16)
    group.train()
    with torch.no_grad():
        group(x)  # running statistics away from their initial values
    group.eval()
    with torch.no_grad():
        expected = group(x).numpy()
    converted = ov.convert_model(group, example_input=x[:1])
    got = ov.Core().compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x.numpy())[0]
    assert np.abs(got - expected).max() < 1e-4


def test_whitening_is_computed_from_data_and_deterministic_under_a_seed():
    images = torch.randint(0, 256, (300, 32, 32, 3), dtype=torch.uint8)

    def whitened(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        model = create_model("airnet_s")
        init_from_data(model, images, seed=0, n=200)
        return model.backbone.whiten.weight.clone()

    first, again = whitened(1), whitened(2)  # different random inits, same data: same filters
    assert torch.equal(first, again)
    # the 12 filters whiten the 2x2 patches: on the images they were computed from, their responses have unit
    # covariance (up to eps), and the second 12 are the negatives of the first
    model = create_model("airnet_s")
    pick = torch.randperm(300, generator=torch.Generator().manual_seed(0))[:200]
    x = model.normalize(images[pick])
    init_from_data(model, images, seed=0, n=200)
    w = model.backbone.whiten.weight
    assert torch.equal(w[12:], -w[:12])
    responses = torch.nn.functional.conv2d(x, w[:12]).permute(0, 2, 3, 1).reshape(-1, 12)
    cov = responses.T @ responses / len(responses)
    assert torch.allclose(cov, torch.eye(12), atol=0.02)
    assert not model.backbone.whiten.weight.requires_grad


def test_newton_schulz_makes_the_singular_values_close_to_one():
    g = torch.randn(64, 200)
    s = torch.linalg.svdvals(zeropower_via_newtonschulz5(g, steps=5))
    assert s.min() > 0.5 and s.max() < 1.5  # Muon's quintic iteration: S' roughly in [0.5, 1.5], not exactly 1


def test_muon_trains_a_toy_problem_and_keeps_filter_norms():
    torch.manual_seed(0)
    x = torch.randn(256, 4, 6, 6)
    y = (x[:, 0].mean((1, 2)) > 0).long()
    net = nn.Sequential(nn.Conv2d(4, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    opt = Muon(muon_param_groups(net, lr=0.05, batch_size=1, weight_decay=0.0), lr=0.05)
    sched = linear_decay(opt, total_steps=100, steps_per_epoch=10)
    first = None
    for _ in range(100):
        loss = nn.functional.cross_entropy(net(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    assert loss.item() < 0.5 * first
    conv = net[0].weight  # Muon sets each filter bank to norm sqrt(out) before its (small, decayed) update
    assert math.isclose(conv.norm().item(), len(conv) ** 0.5, rel_tol=0.01)


def test_muon_groups_and_linear_decay_follow_airbench():
    model = create_model("airnet_s")
    groups = muon_param_groups(model, lr=0.24, batch_size=2000, weight_decay=2e-6)
    by_role = {("muon" if g.get("use_muon", True) else "sgd", g["lr"]): g for g in groups}
    assert ("muon", 0.24) in by_role
    assert any(math.isclose(lr, 0.67 * 2000) for _, lr in by_role)  # head: airbench's summed-loss rate x batch
    whiten = [g for g in groups if "decay_epochs" in g]
    assert len(whiten) == 1 and whiten[0]["params"][0] is model.backbone.whiten.bias
    frozen = {id(model.backbone.whiten.weight)} | {
        id(m.weight) for m in model.modules() if isinstance(m, nn.BatchNorm2d)
    }
    assert not frozen & {id(p) for g in groups for p in g["params"]}
    opt = Muon(groups, lr=0.24)
    sched = linear_decay(opt, total_steps=80, steps_per_epoch=10)
    for _ in range(40):
        opt.step()
        sched.step()
    lrs = [g["lr"] / g["initial_lr"] for g in opt.param_groups]
    assert [round(f, 6) for f, g in zip(lrs, groups) if "decay_epochs" not in g] == [0.5] * (len(groups) - 1)
    assert [f for f, g in zip(lrs, groups) if "decay_epochs" in g] == [0.0]  # past its 3 epochs


@pytest.mark.parametrize("name", ["airnet_s", "airnet_t"])
def test_airnet_recipe_trains_and_exports_through_verification(name, image_tree, tmp_path):
    from edgecifar.export import export_run

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
    entries = export_run(
        run, ["onnx", "openvino"], "all", out_dir=tmp_path / "exported", calib_size=32, verify_size=30
    )  # the edge formats' global max pool rewrite: tests/test_edge_backends.py
    fp32 = [e for e in entries if e.precision == "fp32"]
    assert len(entries) == 6 and all(e.verification["agreement"] >= 0.999 for e in fp32), fp32


def test_alternating_flips_show_every_image_both_ways_in_two_epochs():
    from edgecifar.augment import alternating_flips

    even, odd = alternating_flips(1000, 0, seed=3), alternating_flips(1000, 1, seed=3)
    assert torch.equal(even ^ odd, torch.ones(1000, dtype=torch.bool))
    assert torch.equal(alternating_flips(1000, 2, seed=3), even)  # the same split every even epoch
    assert 400 < int(even.sum()) < 600
    assert not torch.equal(alternating_flips(1000, 0, seed=4), even)
