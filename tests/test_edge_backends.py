"""The registry's backends as one interface (`edgecifar doctor`, derived CLI choices), and what only the edge
formats (LiteRT .tflite, ExecuTorch .pte) need: the runtime each needs on a device, batches past the file's own,
the metadata inside the file, and damaged files or a missing runtime as one line, never a crash. Each backend's
tests skip, with the reason, where its extra is not installed (`uv sync --extra edge` installs both)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgecifar.backends import BACKENDS, unavailable
from edgecifar.cli import app
from edgecifar.runtime import load_artifact

pytest.register_assert_rewrite("export_fixtures")
from export_fixtures import CLASSES, backend_params, tinted_image  # noqa: E402

pytest_plugins = ["export_fixtures"]

ROOT = Path(__file__).resolve().parents[1]
EDGE = [name for name in BACKENDS if name not in ("onnx", "openvino")]


def artifact(exported, fmt: str, precision: str) -> Path:
    out, entries = exported
    return out / next(e.path for e in entries if e.format == fmt and e.precision == precision)


def run_python(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("img") / "cat.png"
    Image.fromarray(tinted_image(1, np.random.default_rng(3))).save(path)
    return path


def test_doctor_lists_every_backend_and_why_not():
    result = CliRunner().invoke(app, ["doctor"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for name, backend in BACKENDS.items():
        line = next(ln for ln in result.output.splitlines() if f" {name} " in ln)
        assert backend.suffixes[0] in line
        assert ("not installed" in line) == bool(unavailable(backend, export=True)), line


def test_cli_choices_come_from_the_registry():
    from edgecifar.cli import ExportFormat

    assert [f.value for f in ExportFormat] == [*BACKENDS, "all"]


def test_every_backend_declares_its_format():
    for name, b in BACKENDS.items():
        assert b.name == name and b.label and b.suffixes[0].startswith(".") and b.runtime and b.libraries
        assert set(b.precisions) <= {"fp32", "fp16", "int8"} and b.precisions
        assert "minmax" in b.calib_methods and b.exec_precision in ("f32", "model")


@pytest.mark.parametrize("fmt", backend_params())
def test_batches_past_the_files_own_give_the_per_image_logits(exported, fmt):
    """LiteRT files hold batch 1 and ExecuTorch's a bounded batch axis: any batch still runs, image by image
    equal (batch 1, 16, and past ExecuTorch's bound of 64)."""
    images = np.random.default_rng(1).integers(0, 256, (70, 32, 32, 3), dtype=np.uint8)
    model = load_artifact(artifact(exported, fmt, "fp32"))
    single = np.concatenate([model.run(images[i : i + 1]) for i in range(len(images))])
    for n in (1, 16, 70):
        np.testing.assert_allclose(model.run(images[:n]), single[:n], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fmt", [f for f in backend_params() if f.values[0] in EDGE])
def test_metadata_lives_in_the_file(exported, fmt):
    path = artifact(exported, fmt, "int8")
    if fmt == "litert":
        from edgecifar.backends.litert import read_metadata

        meta = read_metadata(path, path.read_bytes())  # the flatbuffer's own metadata entry
    else:
        from executorch.runtime import Runtime

        from edgecifar.backends.executorch import METADATA_METHOD

        program = Runtime.get().load_program(path)
        meta = json.loads(bytes(program.load_method(METADATA_METHOD).execute([])[0].numpy()).decode())
    assert json.loads(meta["classes"]) == CLASSES and meta["format"] == fmt and meta["precision"] == "int8"
    assert "uint8 [N, 32, 32, 3]" in meta["contract"]


@pytest.mark.parametrize("fmt", backend_params("int8"))
def test_int8_keeps_the_uint8_input(exported, fmt):
    session = load_artifact(artifact(exported, fmt, "int8")).session
    assert session.input_type == "uint8" and session.input_shape[1:] == [32, 32, 3]


@pytest.mark.skipif(bool(unavailable(BACKENDS["litert"], export=True)), reason="litert extra not installed")
def test_litert_int8_is_full_integer(exported):
    """Every conv and fully connected layer computes in int8 (what TFLite Micro runs)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(str(artifact(exported, "litert", "int8")))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = [op for op in interpreter._get_ops_details() if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED")]
    assert ops and all(tensors[op["inputs"][1]]["dtype"] == np.int8 for op in ops)


@pytest.mark.parametrize("fmt", backend_params())
def test_truncated_file_is_one_line_not_a_crash(exported, image, tmp_path, fmt):
    source = artifact(exported, fmt, "fp32")
    bad = tmp_path / source.name
    for suffix in BACKENDS[fmt].suffixes[1:]:  # companions whole, the main file cut
        bad.with_suffix(suffix).write_bytes(source.with_suffix(suffix).read_bytes())
    for keep in (0.5, 0.97):
        bad.write_bytes(source.read_bytes()[: int(source.stat().st_size * keep)])
        proc = run_python("-m", "edgecifar.runtime", str(image), "--model", str(bad))
        assert proc.returncode > 0, (proc.returncode, proc.stderr)  # an exit code, not a signal
        lines = proc.stderr.strip().splitlines()
        assert lines and lines[-1].startswith("error:") and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("fmt", [f for f in backend_params() if f.values[0] in EDGE])
def test_missing_runtime_is_one_line(exported, image, tmp_path, fmt):
    fake = tmp_path / "fake"
    module = BACKENDS[fmt].runtime
    (fake / module).mkdir(parents=True)
    (fake / module / "__init__.py").write_text(f"raise ImportError('No module named {module}')\n")
    proc = run_python(
        "-m",
        "edgecifar.runtime",
        str(image),
        "--model",
        str(artifact(exported, fmt, "fp32")),
        env={"PYTHONPATH": f"{fake}{os.pathsep}{ROOT}"},
    )
    assert proc.returncode > 0 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().startswith("error:") and "not installed" in proc.stderr, proc.stderr


@pytest.mark.skipif(bool(unavailable(BACKENDS["litert"])), reason="ai-edge-litert not installed")
def test_litert_runs_on_the_device_without_torch(exported, image):
    proc = run_python(
        "-c",
        f"""
import sys
from edgecifar import runtime
print(runtime.predict([{str(image)!r}], {str(artifact(exported, "litert", "int8"))!r})[0]['predictions'][0]['class'])
print(sorted(m for m in ('torch', 'tensorflow', 'timm') if m in sys.modules))
""",
    )
    assert proc.returncode == 0, proc.stderr
    answer, heavy = proc.stdout.strip().splitlines()[-2:]
    assert answer in CLASSES and heavy == "[]"


@pytest.mark.skipif(bool(unavailable(BACKENDS["litert"], export=True)), reason="litert extra not installed")
def test_litert_int8_logits_are_in_scale(exported):
    """The full-integer file's int8 logits are dequantized with the output tensor's scale and zero point."""
    out, entries = exported
    e = next(e for e in entries if (e.format, e.precision) == ("litert", "int8"))
    assert e.verification["max_abs_logit_diff"] < 5


def _interpreter_logits(data: bytes, images: np.ndarray) -> np.ndarray:
    """The file's logits for the whole batch at once, straight from the LiteRT interpreter (no fallback)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=data)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, list(images.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, images)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.mark.skipif(bool(unavailable(BACKENDS["litert"], export=True)), reason="needs litert-torch")
def test_litert_files_take_any_batch(exported):
    """scratch_cnn flattens before its classifier: its .tflite files still take a batch of 3 in one call."""
    images = np.random.default_rng(2).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    for precision in ("fp32", "fp16", "int8"):
        path = artifact(exported, "litert", precision)
        together = _interpreter_logits(path.read_bytes(), images)
        alone = np.concatenate([_interpreter_logits(path.read_bytes(), images[i : i + 1]) for i in range(3)])
        np.testing.assert_allclose(together, alone, atol=1e-4)


@pytest.mark.skipif(bool(unavailable(BACKENDS["litert"], export=True)), reason="needs litert-torch")
def test_a_flatten_before_a_linear_does_not_fix_the_batch():
    """litert-torch converts a conv + flatten + linear at batch 1 into RESHAPE [1, N]: the export's check refuses
    that graph, and `batch_free` makes it take a batch of 3 with the same logits."""
    import torch

    from edgecifar.backends.litert import _quiet, batch_free, check_any_batch
    from edgecifar.errors import ExportError

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, stride=4), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 5)
    ).eval()

    class Nhwc(torch.nn.Module):
        def forward(self, x):
            return net(x.permute(0, 3, 1, 2).float())

    with _quiet():
        import litert_torch

        fixed = litert_torch.convert(Nhwc(), (torch.zeros(1, 32, 32, 3, dtype=torch.uint8),)).model_content()
    with pytest.raises(ExportError, match="fixes its batch at 1"):
        check_any_batch(fixed, (32, 32, 3))
    free = batch_free(fixed)
    check_any_batch(free, (32, 32, 3))
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    expected = Nhwc()(torch.from_numpy(images)).detach().numpy()
    np.testing.assert_allclose(_interpreter_logits(free, images), expected, rtol=1e-4, atol=1e-4)
