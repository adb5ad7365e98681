"""`edgecifar predict` / `python -m edgecifar.runtime`: real image files of any size and format, the light
device-side import (never torch), manifest checksums, and bad input (one line, non-zero exit)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgecifar import runtime
from edgecifar.cli import app

pytest.register_assert_rewrite("export_fixtures")
from export_fixtures import CLASSES, tinted_image  # noqa: E402

pytest_plugins = ["export_fixtures"]  # tiny_run, exported: one session-wide export shared with test_export.py

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "timm", "torchvision", "typer", "rich")


def artifact(exported, fmt: str, precision: str) -> Path:
    out, entries = exported
    return out / next(e["path"] for e in entries if e["format"] == fmt and e["precision"] == precision)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, tuple[Path, int | None]]:
    """Image files in common formats and sizes -> (path, class its tint shows, or None)."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(5)
    files = {
        "small.png": (Image.fromarray(tinted_image(1, rng)), 1),
        "photo.jpg": (Image.fromarray(tinted_image(2, rng, (200, 300))), 2),
        "alpha.png": (Image.fromarray(tinted_image(0, rng, (48, 64))).convert("RGBA"), 0),
        "gray.bmp": (Image.fromarray(tinted_image(0, rng)).convert("L"), None),
        "palette.gif": (Image.fromarray(tinted_image(1, rng, (40, 40))).convert("P"), 1),
        "large.webp": (Image.fromarray(tinted_image(2, rng, (480, 640))), 2),
    }
    found = {}
    for name, (img, cls) in files.items():
        img.save(folder / name)
        found[name] = (folder / name, cls)
    return found


# ---------------------------------------------------------------- predictions

def test_read_image_matches_training_decoding(tiny_run, images):
    from edgecifar.data import load_data
    from edgecifar.images import decode_image

    data = tiny_run.parents[1] / "data"
    splits = load_data(str(data), tiny_run.parents[1] / "cache")
    assert np.array_equal(runtime.read_image(data / "test" / "alpha" / "000.png"), splits.test_x[0])
    for path, _ in images.values():  # any size: the same resize as the training data's decoding
        image = runtime.read_image(path)
        assert image.dtype == np.uint8 and image.shape == (32, 32, 3)
        assert np.array_equal(image, decode_image(path.read_bytes(), path.name))


@pytest.mark.parametrize("fmt, precision", [("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp16"),
                                            ("openvino", "int8")])
def test_predict_on_image_files(exported, images, fmt, precision):
    model = artifact(exported, fmt, precision)
    paths = [p for p, _ in images.values()]
    results = runtime.predict(paths, model, topk=3)
    assert [r["image"] for r in results] == [str(p) for p in paths]
    logits = runtime.load_artifact(model).run(np.stack([runtime.read_image(p) for p in paths]))
    for r, (path, cls), row in zip(results, images.values(), runtime.softmax(logits)):
        probs = [p["probability"] for p in r["predictions"]]
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0)
        assert [p["class"] for p in r["predictions"]] == [CLASSES[p["index"]] for p in r["predictions"]]
        assert probs == pytest.approx([row[p["index"]] for p in r["predictions"]])
        assert r["checksum"] == "ok"
        if cls is not None:
            assert r["predictions"][0]["class"] == CLASSES[cls], path.name
    assert len(runtime.predict(paths[:1], model, topk=1)[0]["predictions"]) == 1


def test_cli_predict_table_and_json(exported, images):
    model = artifact(exported, "onnx", "int8")
    path = images["photo.jpg"][0]
    result = CliRunner().invoke(app, ["predict", str(path), "--model", str(model), "--json", "--topk", "2"])
    assert result.exit_code == 0, result.output
    (r,) = json.loads(result.stdout)
    assert r["predictions"][0]["class"] == "gamma" and len(r["predictions"]) == 2
    result = CliRunner().invoke(app, ["predict", str(path), "--model", str(model)])
    assert result.exit_code == 0 and "gamma" in result.output and "checksum: ok" in result.output


# ---------------------------------------------------------------- the light, device-side path

def run_python(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)


def test_runtime_never_imports_torch(exported, images):
    code = f"""
import json, sys
import edgecifar
assert 'numpy' not in sys.modules, 'edgecifar/__init__.py must stay import-free'
from edgecifar import runtime
for model in {[str(artifact(exported, 'onnx', 'int8')), str(artifact(exported, 'openvino', 'fp32'))]!r}:
    runtime.predict([{str(images['photo.jpg'][0])!r}], model)
print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
"""
    proc = run_python("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_python_m_edgecifar_runtime(exported, images):
    proc = run_python("-m", "edgecifar.runtime", str(images["small.png"][0]), str(images["large.webp"][0]),
                      "--model", str(artifact(exported, "openvino", "int8")), "--json", "--topk", "2")
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert [r["predictions"][0]["class"] for r in results] == ["beta", "gamma"]
    assert all(r["checksum"] == "ok" for r in results)
    proc = run_python("-m", "edgecifar.runtime", "--help")
    assert proc.returncode == 0 and "--model" in proc.stdout


# ---------------------------------------------------------------- manifest checksums

@pytest.fixture()
def exported_copy(exported, tmp_path) -> Path:
    out = tmp_path / "exported"
    shutil.copytree(exported[0], out)
    return out


def test_checksum_mismatch_is_reported(exported_copy, images, capsys):
    image = str(images["small.png"][0])
    manifest_path = exported_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    entry = next(a for a in manifest["artifacts"] if a["path"] == "tiny/tiny-fp32.onnx")
    entry["files"]["tiny/tiny-fp32.onnx"] = entry["sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    warnings = []
    (r,) = runtime.predict([image], exported_copy / "tiny" / "tiny-fp32.onnx", on_warning=warnings.append)
    assert r["checksum"] == "mismatch" and len(warnings) == 1 and "does not match its manifest" in warnings[0]
    assert r["predictions"][0]["class"] == "beta"  # it says so, and still answers

    weights = exported_copy / "tiny" / "tiny-fp16.bin"  # OpenVINO: the .bin is checked too
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 1
    weights.write_bytes(bytes(data))
    assert runtime.main([image, "--model", str(exported_copy / "tiny" / "tiny-fp16.xml")]) == 0
    err = capsys.readouterr().err
    assert "tiny-fp16.bin has sha256" in err and err.startswith("warning:")


def test_checksum_without_manifest_or_entry(exported_copy, images, tmp_path):
    image = str(images["small.png"][0])
    loose = tmp_path / "loose" / "model.onnx"
    loose.parent.mkdir()
    shutil.copy(exported_copy / "tiny" / "tiny-int8.onnx", loose)
    assert runtime.predict([image], loose)[0]["checksum"] == "no-manifest"
    other = exported_copy / "tiny" / "renamed.onnx"
    shutil.copy(exported_copy / "tiny" / "tiny-int8.onnx", other)
    assert runtime.predict([image], other)[0]["checksum"] == "unlisted"


# ---------------------------------------------------------------- bad input

def make_bad(kind: str, exported, tmp_path: Path) -> tuple[Path, Path | None]:
    """A broken model (returns (model, None)) or a broken image (returns (None-able model, image))."""
    onnx_file, xml_file = artifact(exported, "onnx", "fp32"), artifact(exported, "openvino", "fp32")
    bad = tmp_path / "bad"
    bad.mkdir(exist_ok=True)

    def copy_ir(xml_bytes: bytes, bin_bytes: bytes | None) -> Path:
        (bad / "m.xml").write_bytes(xml_bytes)
        if bin_bytes is not None:
            (bad / "m.bin").write_bytes(bin_bytes)
        return bad / "m.xml"

    if kind == "corrupt-onnx":
        (bad / "m.onnx").write_bytes(os.urandom(4096))
        return bad / "m.onnx", None
    if kind == "truncated-onnx":
        data = onnx_file.read_bytes()
        (bad / "m.onnx").write_bytes(data[: len(data) // 2])
        return bad / "m.onnx", None
    if kind == "truncated-xml":
        return copy_ir(xml_file.read_bytes()[:3000], xml_file.with_suffix(".bin").read_bytes()), None
    if kind == "truncated-bin":
        return copy_ir(xml_file.read_bytes(), xml_file.with_suffix(".bin").read_bytes()[:100_000]), None
    if kind == "missing-bin":
        return copy_ir(xml_file.read_bytes(), None), None
    if kind == "empty-model":
        (bad / "m.onnx").write_bytes(b"")
        return bad / "m.onnx", None
    if kind == "model-is-dir":
        return bad, None
    if kind == "missing-model":
        return bad / "nope.onnx", None
    if kind == "unknown-suffix":
        (bad / "m.pt").write_bytes(b"x")
        return bad / "m.pt", None
    if kind == "onnx-classes":
        import onnx

        proto = onnx.load(str(onnx_file))
        next(p for p in proto.metadata_props if p.key == "classes").value = json.dumps(CLASSES[:2])
        onnx.save(proto, str(bad / "m.onnx"))
        return bad / "m.onnx", None
    if kind == "openvino-classes":
        import openvino as ov

        model = ov.Core().read_model(str(xml_file))
        model.set_rt_info(json.dumps(CLASSES + ["delta"]), ["edgecifar", "classes"])
        ov.save_model(model, str(bad / "m.xml"), compress_to_fp16=False)
        return bad / "m.xml", None
    image = {"not-an-image": bad / "notes.jpg", "empty-image": bad / "empty.png", "image-is-dir": bad,
             "missing-image": bad / "nope.png"}[kind]
    if kind == "not-an-image":
        image.write_text("this is not a picture\n")
    if kind == "empty-image":
        image.write_bytes(b"")
    return onnx_file, image


BAD = {"corrupt-onnx": "cannot load", "truncated-onnx": "cannot load", "truncated-xml": "cannot load",
       "truncated-bin": "cannot load", "missing-bin": "m.bin is missing", "empty-model": "is empty",
       "model-is-dir": "is a directory", "missing-model": "not found", "unknown-suffix": "unknown model format",
       "onnx-classes": "outputs 3 logits but its metadata names 2 classes",
       "openvino-classes": "outputs 3 logits but its metadata names 4 classes",
       "not-an-image": "not an image", "empty-image": "empty file", "image-is-dir": "is a directory",
       "missing-image": "image not found"}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_input_is_one_clear_line(kind, exported, images, tmp_path, capsys):
    model, image = make_bad(kind, exported, tmp_path)
    image = image or images["small.png"][0]
    code = runtime.main([str(image), "--model", str(model)])
    out, err = capsys.readouterr()
    assert code != 0 and out == ""
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1 and BAD[kind] in err, err
    result = CliRunner().invoke(app, ["predict", str(image), "--model", str(model)])  # the same through the CLI
    assert result.exit_code == code and "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert BAD[kind] in " ".join(result.output.split())
