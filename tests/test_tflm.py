"""The TensorFlow Lite Micro target (edgecifar.backends.tflm): a full-integer .micro.tflite whose int8 input is the
uint8 pixels minus 128, run by the tflite-micro interpreter itself; its exact arena; GELU refused before anything
is written. Tiny models made here (a conversion takes seconds); skipped where tflite-micro or litert-torch is not
installed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgecifar.backends import BACKENDS, Calibration, backend_for, unavailable

pytest.register_assert_rewrite("export_fixtures")
from export_fixtures import make_image_tree  # noqa: E402 (after register_assert_rewrite, which must come first)

pytestmark = pytest.mark.skipif(
    bool(unavailable(BACKENDS["tflm"], export=True)), reason=f"tflm: {unavailable(BACKENDS['tflm'], export=True)}"
)


def tiny_model(act: str = "ReLU"):
    """An EdgeModel (the contract's normalization inside) around a 2-conv net with `act` activations."""
    import torch
    from torch import nn

    from edgecifar.models import EdgeModel, create_model

    torch.manual_seed(0)
    backbone = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        getattr(nn, act)(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        getattr(nn, act)(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )
    return EdgeModel(backbone, create_model("edge_tiny").meta).eval()


def pixels(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def micro(tmp_path_factory) -> tuple[object, Path]:
    """(the float model, its .micro.tflite)."""
    model = tiny_model()
    path = tmp_path_factory.mktemp("tflm") / "tiny-int8.micro.tflite"
    backend = BACKENDS["tflm"]
    backend.export(
        model,
        path,
        "int8",
        Calibration(pixels(64, 0)),
        {"classes": json.dumps(list("abcdefghij")), **backend.metadata()},
    )
    return model, path


def test_the_file_is_full_integer_with_the_documented_input_rule(micro):
    from ai_edge_litert import schema_py_generated as schema

    from edgecifar.backends.tflm import TFLM_OPS, op_names, to_int8

    _, path = micro
    data = path.read_bytes()
    graph = schema.ModelT.InitFromPackedBuf(bytearray(data), 0).subgraphs[0]
    first, last = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]
    assert first.type == last.type == schema.TensorType.INT8
    assert (first.quantization.scale[0], first.quantization.zeroPoint[0]) == (1.0, -128)
    assert {op for op, _ in op_names(data)} <= TFLM_OPS and "CAST" not in {op for op, _ in op_names(data)}
    # the rule: int8 = uint8 - 128, which the input's quantization reads back as the pixel itself
    every = np.arange(256, dtype=np.uint8)
    assert np.array_equal(to_int8(every).astype(int), every.astype(int) - 128)
    assert np.array_equal(1.0 * (to_int8(every).astype(int) + 128), every)
    meta = BACKENDS["tflm"].load(path).metadata  # the output's scale and zero point travel in the metadata
    output = json.loads(meta["tflm_output"])
    assert output == {
        "dtype": "int8",
        "scale": pytest.approx(float(last.quantization.scale[0])),
        "zero_point": int(last.quantization.zeroPoint[0]),
    }


def test_uint8_pixels_through_the_int8_input_match_the_float_model(micro):
    import torch

    from edgecifar.runtime import load_artifact

    model, path = micro
    images = pixels(16, 1)
    artifact = load_artifact(path)  # the device path: backend chosen by the suffix, uint8 in, float logits out
    assert artifact.format == "tflm" and artifact.session.input_type == "uint8"
    logits = artifact.run(images)
    with torch.no_grad():
        reference = model(torch.from_numpy(images)).numpy()
    scale = artifact.session.extra["output_quantization"][0]
    assert np.abs(logits - reference).max() < 0.1 * np.abs(reference).max() + 4 * scale
    assert (logits.argmax(1) == reference.argmax(1)).mean() >= 0.8


def test_tflite_micro_agrees_with_litert_reference_kernels(micro):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edgecifar.backends.tflm import to_int8

    _, path = micro
    backend = BACKENDS["tflm"]
    session = backend.load(path)
    litert = Interpreter(model_content=path.read_bytes(), experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    litert.allocate_tensors()
    (inp,), (out,) = litert.get_input_details(), litert.get_output_details()
    images = pixels(20, 2)
    for image in images:
        litert.set_tensor(inp["index"], to_int8(image[None]))
        litert.invoke()
        reference = litert.get_tensor(out["index"]).astype(int)
        session.handle.set_input(to_int8(image[None]), 0)
        session.handle.invoke()
        assert np.abs(session.handle.get_output(0).astype(int) - reference).max() <= 1  # one quantization step


def test_the_arena_is_the_smallest_that_allocates(micro):
    from edgecifar.backends.tflm import _try, allocations, arena_size

    _, path = micro
    data = path.read_bytes()
    arena = arena_size(data)
    assert _try(data, arena)[0] is not None and _try(data, arena - 1)[0] is None
    assert allocations(data, arena)["total"] == arena
    figures = BACKENDS["tflm"].device_figures(BACKENDS["tflm"].load(path))
    assert figures["arena_bytes"] == arena and figures["flash_bytes"] == len(data)
    assert json.loads(BACKENDS["tflm"].load(path).metadata["tflm_arena_bytes"]) == arena


def test_the_suffix_picks_the_backend():
    assert backend_for("m-int8.micro.tflite").name == "tflm" and backend_for("m-int8.tflite").name == "litert"


def test_gelu_is_refused_with_one_line_and_nothing_written(tmp_path):
    """The airnets' GELU: exit 2, one line naming the op and the layer, no file, no manifest."""
    import torch

    from edgecifar.cli import app
    from edgecifar.models import create_model
    from edgecifar.records import RunConfig
    from edgecifar.runs import save_weights, write_config

    data = make_image_tree(tmp_path / "data", n_train=4, n_test=4)
    classes = sorted(p.name for p in (data / "train").iterdir())
    torch.manual_seed(0)
    model = create_model("airnet_t", len(classes), classes=classes).eval()
    run = tmp_path / "runs" / "gelu"
    run.mkdir(parents=True)
    save_weights(model, run)
    write_config(
        run,
        RunConfig(
            model=model.meta,
            train={"model": "airnet_t", "cache_dir": str(tmp_path / "cache")},
            data={"source": str(data), "classes": classes},
        ),
    )
    out = tmp_path / "exported"
    result = CliRunner().invoke(
        app,
        [
            "export",
            str(run),
            "--format",
            "tflm",
            "--out",
            str(out),
            "--data",
            str(data),
            "--calib-size",
            "4",
            "--verify-size",
            "4",
        ],
    )
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "GELU" in lines[0] and "layer backbone.layers.0" in lines[0], result.output
    assert not out.exists() or not any(out.rglob("*.tflite")) and not (out / "manifest.json").exists()
    # before any data is read: a data path that does not exist is never reached
    again = CliRunner().invoke(
        app, ["export", str(run), "--format", "tflm", "--out", str(out), "--data", str(tmp_path / "nowhere")]
    )
    assert again.exit_code == 2 and "GELU" in again.output and "nowhere" not in again.output, again.output


def test_export_and_bench_report_the_microcontroller_figures(tmp_path):
    """`export --format tflm` lists the file in the manifest; bench's row carries flash, the exact arena (the
    interpreter's search) and says that its latency comes from reference kernels."""
    from export_fixtures import make_run

    from edgecifar.backends.tflm import LATENCY_NOTE, arena_size
    from edgecifar.bench import bench
    from edgecifar.export import export_run

    data = make_image_tree(tmp_path / "data", n_train=8, n_test=6)
    run = make_run(tmp_path / "runs" / "tiny", data, tmp_path / "cache", steps=3)
    entries = export_run(run, "tflm", "all", out_dir=tmp_path / "exported", calib_size=8, verify_size=12)
    assert [(e.format, e.precision, e.path) for e in entries] == [("tflm", "int8", "tiny/tiny-int8.micro.tflite")]
    assert entries[0].edge_targets == {"TFLite Micro": {"all_ops": True, "lacking": []}}
    rows = bench(
        [tmp_path / "exported"],
        threads=(1,),
        batch_size=4,
        out_dir=tmp_path / "results",
        runs_dir=tmp_path / "runs",
        baseline=False,
        latency_seconds=0.05,
        throughput_seconds=0.05,
    )
    (row,) = rows
    file = tmp_path / "exported" / entries[0].path
    assert row.status == "ok" and row.images == 18 and row.flash_bytes == file.stat().st_size
    assert row.arena_bytes == arena_size(file.read_bytes()) and row.latency_note == LATENCY_NOTE
    md = (tmp_path / "results" / "bench.md").read_text()  # the report's memory table: flash and arena, in bytes
    assert "## Microcontroller memory" in md
    assert f"| {row.flash_bytes:,} | {row.arena_bytes:,} |" in md
