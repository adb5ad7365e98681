"""Own images at their own size: `train --input-size` (or the ImageFolder's default), the contract "uint8 NHWC at
the run's input size" recorded in the run, every exported file and the manifest, and read back from there by
export, predict, bench and the device side. Tiny synthetic trees at 64 and 96 px in temp folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgecifar import runtime
from edgecifar.backends import BACKENDS, in_all, unavailable
from edgecifar.cli import app
from edgecifar.contract import parse_size, size_of
from edgecifar.data import load_data
from edgecifar.errors import ModelError, UsageError
from edgecifar.models import create_model, list_models

from export_fixtures import CLASSES, make_image_tree, tinted_image


def photo_tree(root: Path, side: int, n_train: int = 12, n_test: int = 8, odd: tuple[int, int] | None = None) -> Path:
    """A tree of side x side PNGs tinted by class; every fourth training image `odd` (height, width) instead, when
    given (the median is still `side`)."""
    return make_image_tree(root, n_train, n_test, seed=side, size=(side, side), odd=odd)


# ---------------------------------------------------------------- the size: parsed, defaulted, cached


def test_parse_size():
    assert parse_size("96") == (96, 96) and parse_size("64x128") == (64, 128) and parse_size(" 28 X 28 ") == (28, 28)
    assert parse_size(64) == (64, 64) and parse_size([48, 80]) == (48, 80)
    for bad in ("", "0", "96x", "x96", "-5", "12.5", "99999", True, None):
        with pytest.raises(UsageError):
            parse_size(bad)
    assert size_of(None) == (32, 32) and size_of('{"shape": ["N", 96, 64, 3]}') == (96, 64)  # older files: 32


def test_imagefolder_default_is_the_median_size_capped_and_said(tmp_path):
    tree = photo_tree(tmp_path / "t96", 96, odd=(40, 200))
    splits = load_data(str(tree), tmp_path / "cache")
    assert splits.input_size == (96, 96) and splits.train_x.shape[1:] == (96, 96, 3)
    assert "input size: 96x96 (the median height and width of 36 training images" in "\n".join(splits.summary())
    assert splits.describe()["input_size"] == [96, 96]
    big = photo_tree(tmp_path / "big", 1, n_train=2, n_test=1)
    for f in (big / "train").rglob("*.png"):
        Image.fromarray(tinted_image(0, np.random.default_rng(0), (400, 600))).save(f)
    splits = load_data(str(big), tmp_path / "cache")
    assert splits.input_size == (85, 128) and "scaled down to at most 128 px" in splits.size_note


def test_cifar_batches_default_to_32_and_take_any_size(cifar_batches, tmp_path):
    assert load_data(str(cifar_batches), tmp_path / "c").input_size == (32, 32)
    assert load_data(str(cifar_batches), tmp_path / "c", input_size="48x40").train_x.shape[1:] == (48, 40, 3)


def test_the_cache_key_holds_the_size(tmp_path):
    tree = photo_tree(tmp_path / "t", 64)
    cache = tmp_path / "cache"
    a = load_data(str(tree), cache, input_size=64)
    b = load_data(str(tree), cache, input_size="32")
    again = load_data(str(tree), cache, input_size=64)
    assert a.train_x.shape[1:3] == (64, 64) and b.train_x.shape[1:3] == (32, 32)
    assert np.array_equal(a.train_x, again.train_x) and len(list((cache / "decoded").glob("*.npz"))) == 2


# ---------------------------------------------------------------- every model at any size its poolings allow


@pytest.mark.parametrize("size", [(96, 64)])  # 96 px, and not square
def test_every_registered_model_takes_the_input_size(size):
    images = np.random.default_rng(0).integers(0, 255, (2, *size, 3), dtype=np.uint8)
    import torch

    for name in list_models():
        model = create_model(name, 3, input_size=size).eval()
        assert model.meta.input["shape"] == ["N", *size, 3], name
        with torch.no_grad():
            assert tuple(model(torch.from_numpy(images)).shape) == (2, 3), name


def test_a_size_too_small_for_the_net_is_one_clear_error():
    with pytest.raises(ModelError, match="edge_small cannot take 8x8 inputs"):
        create_model("edge_small", 3, input_size=(8, 8))
    assert create_model("edge_tiny", 3, input_size=(8, 8)).meta.img_size is None  # global pool: any size


def test_transfer_models_resize_inside_never_below_the_input():
    assert create_model("efficientnet_lite0", 3).meta.img_size == 40  # its recipe, for 32 px images
    assert create_model("efficientnet_lite0", 3, input_size=(96, 96)).meta.img_size == 96
    assert create_model("efficientnet_lite0", 3, img_size=64, input_size=(96, 96)).meta.img_size == 64


# MACs of one 32x32 image with the backbone at 32, 64 and 96 px (edgecifar.models.count_macs): the cost side of
# input size as a recipe dimension. They grow with the square of the backbone size, the 10-class head aside.
TRANSFER_MACS = {
    "mobilenet_v2": {32: 22_003_712, 64: 87_976_448, 96: 197_931_008},
    "efficientnet_lite0": {32: 28_894_592, 64: 115_539_968, 96: 259_948_928},
    "efficientnet_lite1": {32: 38_468_480, 64: 153_835_520, 96: 346_113_920},
}


@pytest.mark.parametrize("name", list(TRANSFER_MACS))
def test_transfer_models_at_three_backbone_sizes(name):
    """--backbone-size 32, 64 and 96 on 32 px images: the backbone runs at that size (the stage-1 stride kept at
    1 leaves a 2x2 map even at 32 px), and the MACs are the registry's figures."""
    import torch

    from edgecifar.models import count_macs

    images = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8))
    for size, macs in TRANSFER_MACS[name].items():
        model = create_model(name, 10, img_size=size).eval()
        assert model.meta.img_size == size and model.meta.input["shape"] == ["N", 32, 32, 3]
        assert count_macs(model) == macs, (name, size)
        with torch.no_grad():
            assert tuple(model(images).shape) == (2, 10)
    # 96 px photos with no --backbone-size: the backbone takes them as they are, at the same cost
    photos = create_model(name, 10, input_size=(96, 96))
    assert photos.meta.img_size == 96 and count_macs(photos) == TRANSFER_MACS[name][96]


def test_cli_input_size_is_checked_and_img_size_still_works(tmp_path):
    result = CliRunner().invoke(app, ["train", "--data", str(tmp_path), "--input-size", "big"])
    assert result.exit_code == UsageError.exit_code and "--input-size takes N" in result.output
    assert "Traceback" not in result.output
    help_text = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    assert "--backbone-size" in help_text and "--img-size" in help_text and "--input-size" in help_text


# ---------------------------------------------------------------- end to end at 64 and 96 px


@pytest.fixture(scope="module", params=[64, 96])
def sized_export(request, tmp_path_factory):
    """A scratch_cnn trained one epoch on a tree of side x side photos at the tree's default size, exported to
    every format installed here (INT8 at 64 px, which calibrates at that size; FP32 at 96 px), and the lines train printed."""
    from edgecifar.export import export_run
    from edgecifar.train import TrainConfig, train

    side = request.param
    root = tmp_path_factory.mktemp(f"px{side}")
    tree = photo_tree(root / "data", side)
    said: list[str] = []
    run = train(
        TrainConfig(
            model="scratch_cnn",
            data=str(tree),
            cache_dir=str(root / "cache"),
            epochs=3,
            batch_size=12,
            lr=0.02,
            out=str(root / "runs" / f"px{side}"),
        ),
        log=said.append,
    )
    precisions = ["int8"] if side == 64 else ["fp32"]
    entries = export_run(run, "all", precisions, out_dir=root / "exported", calib_size=16, verify_size=24)
    return side, run, root / "exported", entries, said


def test_the_run_records_its_input_size(sized_export):
    side, run, _, _, said = sized_export
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["input"]["shape"] == ["N", side, side, 3] and config["train"]["input_size"] == [side, side]
    assert config["data"]["input_size"] == [side, side]
    assert any(line.startswith(f"input size: {side}x{side} (the median") for line in said)
    from edgecifar.evaluate import evaluate_run

    report = evaluate_run(run)  # decodes the test split at the run's size, read from config.json
    trained = json.loads((run / "metrics.json").read_text())["test_acc"]
    assert report["images"] == 3 * 8 and report["test_acc"] == pytest.approx(trained, abs=1e-6)


def test_every_file_and_the_manifest_carry_the_contract(sized_export):
    side, _, out, entries, _ = sized_export
    precision = "int8" if side == 64 else "fp32"
    manifest = json.loads((out / "manifest.json").read_text())["artifacts"]
    assert {e.format for e in entries} == {
        name
        for name, b in BACKENDS.items()  # every one installed here
        if in_all(b) and unavailable(b, export=True) is None and precision in b.precisions
    }
    for entry in manifest:
        assert entry["input"]["shape"] == ["N", side, side, 3]
        artifact = runtime.load_artifact(out / entry["path"])
        assert artifact.input_size == (side, side) and artifact.metadata["input"]["shape"] == ["N", side, side, 3]
        assert f"uint8 [N, {side}, {side}, 3]" in artifact.metadata["contract"]
        assert entry["verification"]["agreement"] >= 0.9
        with pytest.raises(Exception, match=f"takes uint8 \\[N, {side}, {side}, 3\\]"):
            artifact.run(np.zeros((1, 32, 32, 3), np.uint8))


def test_predict_full_size_photos_at_the_files_size(sized_export, tmp_path):
    side, _, out, entries, _ = sized_export
    rng = np.random.default_rng(7)
    photos = []
    for c, (h, w) in enumerate([(480, 640), (300, 200), (1000, 750)]):
        photos.append(tmp_path / f"photo{c}.jpg")
        Image.fromarray(tinted_image(c, rng, (h, w))).save(photos[-1], quality=92)
    for entry in entries:
        results = runtime.predict(photos, out / entry.path, topk=1)
        assert [r["predictions"][0]["class"] for r in results] == CLASSES, entry.path
    code = runtime.main([*map(str, photos), "--model", str(out / entries[0].path), "--json"])
    assert code == 0


def test_bench_reads_the_size_from_the_manifest(sized_export, tmp_path):
    from edgecifar.bench import bench

    side, run, out, _, _ = sized_export
    rows = bench(
        [out],
        threads=(1,),
        batch_size=8,
        out_dir=tmp_path / "res",
        runs_dir=run.parent,
        latency_seconds=0.05,
        throughput_seconds=0.05,
        latency_trials=1,
    )
    assert rows and all(r.status == "ok" for r in rows), [r.reason for r in rows]
    assert {r.input_size for r in rows} == {f"{side}x{side}"} and {r.format for r in rows} >= {"pytorch", "onnx"}
    assert all(r.images == 3 * 8 and r.macs for r in rows)
