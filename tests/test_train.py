import json
import os

import pytest
import torch
from safetensors.torch import load_file

import edgecifar.train as train_module
from edgecifar.errors import CheckpointError, EdgecifarError, ModelError
from edgecifar.runs import load_run
from edgecifar.models import create_model
from edgecifar.train import EMA, TrainConfig, distillation_loss, train


def tiny(data, out, **kw) -> TrainConfig:
    base = dict(model="scratch_cnn", data=str(data), epochs=2, batch_size=16, lr=0.01, out=str(out), seed=3)
    base.update(kw)
    return TrainConfig(**base)


def weights(run):
    return load_file(str(run / "model.safetensors"))


def test_run_folder_contents(image_tree, tmp_path):
    run = train(tiny(image_tree, tmp_path / "run", cache_dir=str(tmp_path / "c")), log=lambda *a: None)
    assert {p.name for p in run.iterdir()} >= {"model.safetensors", "config.json", "metrics.json", "checkpoint.pt"}
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["model"] == "scratch_cnn" and config["model"]["classes"] == ["cat", "dog", "ship"]
    assert config["model"]["mean"] and config["model"]["img_size"] is None  # scratch nets: no resize inside
    assert config["model"]["input"]["shape"] == ["N", 32, 32, 3] and config["train"]["input_size"] == [32, 32]
    assert config["train"]["epochs"] == 2 and config["train"]["seed"] == 3 and config["train"]["lr"] == 0.01
    assert config["data"]["fingerprint"] and config["versions"]["torch"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 2 and 0 <= metrics["test_acc"] <= 1
    assert metrics["train_seconds"] > 0 and metrics["images_per_s"] > 0
    model = load_run(run)  # rebuilt from config.json + safetensors alone
    assert model.meta.classes == ["cat", "dog", "ship"] and not model.training


def test_eval_every_chooses_the_evaluated_epochs_and_not_the_weights(image_tree, tmp_path):
    """Evaluation reads the model and nothing else: the epochs evaluated change, the weights do not."""
    cache = str(tmp_path / "c")
    runs = {
        n: train(tiny(image_tree, tmp_path / f"e{n}", cache_dir=cache, epochs=3, eval_every=n), log=lambda *a: None)
        for n in (0, 1, 2)
    }
    evaluated = {
        n: [e["epoch"] for e in json.loads((r / "metrics.json").read_text())["epochs"] if "test_acc" in e]
        for n, r in runs.items()
    }
    assert evaluated == {0: [3], 1: [1, 2, 3], 2: [2, 3]}
    finals = {json.loads((r / "metrics.json").read_text())["test_acc"] for r in runs.values()}
    assert len(finals) == 1
    assert all(torch.equal(weights(runs[0])[k], weights(runs[1])[k]) for k in weights(runs[0]))
    with pytest.raises(EdgecifarError, match="eval_every -1"):
        train(tiny(image_tree, tmp_path / "bad", cache_dir=cache, eval_every=-1), log=lambda *a: None)
    assert not (tmp_path / "bad").exists()


def test_seeded_runs_are_identical(image_tree, tmp_path):
    a = train(tiny(image_tree, tmp_path / "a", cache_dir=str(tmp_path / "c")), log=lambda *a: None)
    b = train(tiny(image_tree, tmp_path / "b", cache_dir=str(tmp_path / "c")), log=lambda *a: None)
    wa, wb = weights(a), weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_after_a_kill_matches_an_uninterrupted_run(image_tree, tmp_path, monkeypatch):
    cache = str(tmp_path / "c")
    whole = train(tiny(image_tree, tmp_path / "whole", cache_dir=cache, epochs=3, ema=0.9), log=lambda *a: None)

    real_epoch = train_module._train_epoch

    def killed_in_epoch_2(*args, **kwargs):
        if args[8] == 1:  # the epoch index
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train_module, "_train_epoch", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(image_tree, tmp_path / "killed", cache_dir=cache, epochs=3, ema=0.9), log=lambda *a: None)
    assert (tmp_path / "killed" / "checkpoint.pt").exists()
    assert not (tmp_path / "killed" / "model.safetensors").exists()
    monkeypatch.setattr(train_module, "_train_epoch", real_epoch)
    resumed = train(
        tiny(image_tree, tmp_path / "killed", cache_dir=cache, epochs=3, ema=0.9, resume=True), log=lambda *a: None
    )
    ww, wr = weights(whole), weights(resumed)
    assert all(torch.equal(ww[k], wr[k]) for k in ww)
    history = json.loads((resumed / "metrics.json").read_text())["epochs"]
    assert [h["epoch"] for h in history] == [1, 2, 3]


def test_unknown_model_leaves_nothing(image_tree, tmp_path):
    with pytest.raises(ModelError):
        train(tiny(image_tree, tmp_path / "run", model="nonsense_net"), log=lambda *a: None)
    assert not (tmp_path / "run").exists()


def test_failure_before_first_epoch_removes_the_run_folder(image_tree, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise EdgecifarError("boom")

    monkeypatch.setattr(train_module, "_train_epoch", boom)
    with pytest.raises(EdgecifarError):
        train(tiny(image_tree, tmp_path / "run", cache_dir=str(tmp_path / "c")), log=lambda *a: None)
    assert not (tmp_path / "run").exists()


def test_existing_run_needs_resume(image_tree, tmp_path):
    run = train(tiny(image_tree, tmp_path / "run", cache_dir=str(tmp_path / "c"), epochs=1), log=lambda *a: None)
    with pytest.raises(EdgecifarError, match="--resume"):
        train(tiny(image_tree, run, cache_dir=str(tmp_path / "c")), log=lambda *a: None)


def test_corrupt_and_mismatched_checkpoints(image_tree, tmp_path):
    cache = str(tmp_path / "c")
    run = train(tiny(image_tree, tmp_path / "run", cache_dir=cache, epochs=1), log=lambda *a: None)
    (run / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        train(tiny(image_tree, run, cache_dir=cache, resume=True), log=lambda *a: None)
    other = train(
        tiny(image_tree, tmp_path / "other", cache_dir=cache, epochs=1, model="resnet18", img_size=32),
        log=lambda *a: None,
    )
    with pytest.raises(CheckpointError, match="cannot change --model edge_tiny"):
        train(tiny(image_tree, other, cache_dir=cache, model="edge_tiny", resume=True), log=lambda *a: None)
    # a checkpoint of an older edgecifar (no config inside) beside another model's config.json
    foreign = torch.load(other / "checkpoint.pt", weights_only=True)
    del foreign["config"]
    torch.save(foreign, run / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="does not match"):
        train(tiny(image_tree, run, cache_dir=cache, resume=True), log=lambda *a: None)
    (run / "model.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(CheckpointError, match="corrupt weights"):
        load_run(run)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_out(image_tree, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(EdgecifarError, match="cannot write"):
        train(tiny(image_tree, locked / "run", cache_dir=str(tmp_path / "c")), log=lambda *a: None)


def test_out_under_a_file_is_unwritable(image_tree, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(EdgecifarError, match="cannot write"):
        train(tiny(image_tree, tmp_path / "file" / "run", cache_dir=str(tmp_path / "c")), log=lambda *a: None)


def test_ema_decay_warms_up():
    model = create_model("edge_tiny", num_classes=3)
    ema = EMA(model, 0.999)
    start = ema.model.backbone.head[2].weight.clone()
    with torch.no_grad():
        model.backbone.head[2].weight.add_(1.0)
    ema.update(model, step=0)  # decay 0.1: the average moves 90 % of the way to the live weights
    torch.testing.assert_close(ema.model.backbone.head[2].weight, start + 0.9)
    ema.update(model, step=100_000)  # the configured 0.999 from then on
    torch.testing.assert_close(ema.model.backbone.head[2].weight, start + 0.9 + 0.1 * 0.001)


def test_distillation_gradient_reaches_the_student_only():
    student = torch.randn(4, 3, requires_grad=True)
    teacher = torch.randn(4, 3, requires_grad=True)
    hard = torch.nn.functional.cross_entropy(student, torch.tensor([0, 1, 2, 0]))
    loss = distillation_loss(student, teacher, hard, alpha=0.5, temperature=4.0)
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None
    same = distillation_loss(teacher.detach(), teacher.detach(), torch.tensor(0.0), 1.0, 4.0)
    assert abs(same.item()) < 1e-6  # no soft loss when the student already matches its teacher


@pytest.mark.slow
def test_distillation_from_a_teacher_run(image_tree, tmp_path):
    """The teacher's logits (as is and mirrored) are computed once and steer the student."""
    from edgecifar.train import teacher_logits

    cache = str(tmp_path / "c")
    teacher = train(tiny(image_tree, tmp_path / "teacher", cache_dir=cache), log=lambda *a: None)
    images = torch.randint(0, 255, (6, 32, 32, 3), dtype=torch.uint8)
    logits = teacher_logits(str(teacher), images, ["cat", "dog", "ship"])
    model = load_run(teacher)
    with torch.no_grad():
        assert torch.allclose(logits[:, 0], model(images), atol=1e-5)
        assert torch.allclose(logits[:, 1], model(images.flip(2)), atol=1e-5)
    averaged = teacher_logits(str(teacher), images, ["cat", "dog", "ship"], tta=True)
    assert torch.allclose(averaged[:, 0], logits.mean(1)) and torch.equal(averaged[:, 0], averaged[:, 1])
    with pytest.raises(EdgecifarError, match="other classes"):
        teacher_logits(str(teacher), images, ["a", "b", "c"])

    plain = train(tiny(image_tree, tmp_path / "plain", cache_dir=cache), log=lambda *a: None)
    taught = train(
        tiny(image_tree, tmp_path / "taught", cache_dir=cache, teacher=str(teacher), distill_alpha=0.9),
        log=lambda *a: None,
    )
    assert json.loads((taught / "config.json").read_text())["train"]["teacher"] == str(teacher)
    assert json.loads((taught / "metrics.json").read_text())["teacher_seconds"] > 0
    assert not torch.equal(weights(plain)["backbone.0.weight"], weights(taught)["backbone.0.weight"])

    # several teachers: an ensemble, its members' logits averaged; the run config keeps the list
    pair = teacher_logits([str(teacher), str(plain)], images, ["cat", "dog", "ship"])
    alone = teacher_logits(str(plain), images, ["cat", "dog", "ship"])
    assert torch.allclose(pair, (logits + alone) / 2, atol=1e-6)
    ensemble = [str(teacher), str(plain)]
    by_two = train(tiny(image_tree, tmp_path / "by-two", cache_dir=cache, teacher=ensemble), log=lambda *a: None)
    assert json.loads((by_two / "config.json").read_text())["train"]["teacher"] == ensemble


def test_real_data_smoke(real_data, tmp_path):
    """scratch_cnn, briefly, on a subset of the real CIFAR-10 JPEG copy must beat 35 %."""
    run = train(
        TrainConfig(
            model="scratch_cnn",
            data=str(real_data),
            epochs=3,
            max_train=8000,
            max_test=2000,
            out=str(tmp_path / "run"),
            seed=0,
        ),
        log=lambda *a: None,
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_acc"] > 0.35


def test_frozen_stages_keep_their_pretrained_weights(image_tree, tmp_path):
    from edgecifar.models import create_model

    run = train(
        tiny(
            image_tree,
            tmp_path / "run",
            cache_dir=str(tmp_path / "c"),
            model="efficientnet_lite0",
            pretrained=True,
            freeze=2,
            epochs=1,
            img_size=32,
        ),
        log=lambda *a: None,
    )
    start = create_model("efficientnet_lite0", 3, pretrained=True).backbone.state_dict()
    trained = weights(run)
    assert torch.equal(trained["backbone.conv_stem.weight"], start["conv_stem.weight"])
    assert torch.equal(trained["backbone.blocks.0.0.conv_dw.weight"], start["blocks.0.0.conv_dw.weight"])
    assert not torch.equal(trained["backbone.blocks.1.0.conv_pw.weight"], start["blocks.1.0.conv_pw.weight"])
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["freeze"] == 2 and config["trainable_params"] < config["params"]


@pytest.mark.parametrize("native", [True, False])
def test_recipe_bf16_only_where_the_cpu_has_it(native, monkeypatch):
    """About the CPU's bf16, both sides on any machine: EDGECIFAR_CPU_FLAGS makes the code believe it has it or not."""
    monkeypatch.setenv("EDGECIFAR_CPU_FLAGS", "avx2 avx512f avx512_bf16" if native else "avx2 fma")
    cpu = torch.device("cpu")
    recipe, record = train_module.autocast_choice(TrainConfig(model="edge_tiny"), cpu)
    assert recipe.bf16 is native and recipe.epochs == 60  # the rest of the recipe is resolved either way
    assert record == {"bf16": native, "native_bf16": native, "by": "recipe", "note": record["note"]}
    assert bool(record["note"]) is not native and (native or "--bf16" in record["note"])
    forced, record = train_module.autocast_choice(TrainConfig(model="edge_tiny", bf16=True), cpu)
    assert forced.bf16 is True and record["by"] == "option"  # an explicit --bf16 is obeyed
    assert ("emulated" in record["note"]) is not native
    fp32, record = train_module.autocast_choice(TrainConfig(model="efficientnet_lite0"), cpu)
    assert fp32.bf16 is False and not record["note"]  # a recipe without bf16 stays fp32 on any CPU


@pytest.mark.parametrize(
    "n, batch, expected",
    [
        (17, 8, [(0, 8), (8, 17)]),  # a last batch of one joins the one before
        (18, 8, [(0, 8), (8, 16), (16, 18)]),
        (16, 8, [(0, 8), (8, 16)]),
        (1, 8, [(0, 1)]),  # a single batch stays what it is
    ],
)
def test_a_last_batch_of_one_image_is_folded(n, batch, expected):
    assert train_module.batch_bounds(n, batch) == expected


def test_batch_norm_trains_when_the_last_batch_would_hold_one_image(tmp_path):
    """17 images in batches of 8 through ResNet18 at 32 px, whose last stage runs at 1x1: batch norm cannot train on
    one image (a ValueError at the end of epoch 1); the last image joins the batch before, and the log says so."""
    from conftest import small_tree

    data = small_tree(tmp_path / "data", {"cat": (9, 2), "dog": (8, 2)})
    said = []
    run = train(
        TrainConfig(
            model="resnet18",
            img_size=32,
            data=str(data),
            cache_dir=str(tmp_path / "c"),
            epochs=1,
            batch_size=8,
            out=str(tmp_path / "run"),
        ),
        log=said.append,
    )
    assert (run / "model.safetensors").is_file()
    assert [line for line in said if "leave 1 in the last batch of 8" in line and "joins the batch before" in line]
    epochs = json.loads((run / "metrics.json").read_text())["epochs"]
    assert epochs[0]["images_per_s"] > 0


def test_an_input_size_far_above_the_images_is_refused_before_decoding(image_tree, tmp_path):
    """--input-size 224 on 32 px images would decode a 49x cache and train 49x slower: refused with the figures and
    --backbone-size, before anything is decoded or a run folder made; --allow-upsample insists."""
    from edgecifar.data import load_data
    from edgecifar.errors import DataError

    cache = tmp_path / "cache"
    with pytest.raises(
        DataError,
        match=r"upsamples these 32x32 images 7\.0x per side.*--backbone-size 224.*"
        r"--allow-upsample",
    ):
        train(
            TrainConfig(
                data=str(image_tree), cache_dir=str(cache), input_size=[224, 224], epochs=1, out=str(tmp_path / "run")
            ),
            log=lambda *a: None,
        )
    assert not (tmp_path / "run").exists() and not list(cache.rglob("*.npz"))
    assert load_data(str(image_tree), cache, input_size=64, max_upsample=train_module.UPSAMPLE_LIMIT).input_size == (
        64,
        64,
    )
    assert load_data(str(image_tree), cache, input_size=96, max_upsample=None).input_size == (96, 96)  # insisted
