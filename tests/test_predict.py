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
from edgecifar.errors import ArtifactError, DataError, UsageError

pytest.register_assert_rewrite("export_fixtures")
from export_fixtures import CLASSES, edit_manifest, listed_path, tinted_image  # noqa: E402

pytest_plugins = ["export_fixtures"]  # tiny_run, exported: one session-wide export shared with test_export.py

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "timm", "torchvision", "typer", "rich")


def artifact(exported, fmt: str, precision: str) -> Path:
    out, entries = exported
    return out / next(e.path for e in entries if e.format == fmt and e.precision == precision)


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


@pytest.mark.parametrize(
    "fmt, precision", [("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp16"), ("openvino", "int8")]
)
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
for model in {[str(artifact(exported, "onnx", "int8")), str(artifact(exported, "openvino", "fp32"))]!r}:
    runtime.predict([{str(images["photo.jpg"][0])!r}], model)
print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
"""
    proc = run_python("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_python_m_edgecifar_runtime(exported, images):
    proc = run_python(
        "-m",
        "edgecifar.runtime",
        str(images["small.png"][0]),
        str(images["large.webp"][0]),
        "--model",
        str(artifact(exported, "openvino", "int8")),
        "--json",
        "--topk",
        "2",
    )
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


def test_checksum_mismatch_stops_unless_allowed(exported_copy, images, capsys):
    image = str(images["small.png"][0])
    model = exported_copy / "tiny" / "tiny-fp32.onnx"
    edit_manifest(
        exported_copy,
        lambda entries: next(e for e in entries if e["path"] == "tiny/tiny-fp32.onnx").update(
            sha256="0" * 64, files={"tiny/tiny-fp32.onnx": "0" * 64}
        ),
    )
    with pytest.raises(ArtifactError, match="does not match its manifest.*--allow-checksum-mismatch"):
        runtime.predict([image], model)
    warnings = []
    (r,) = runtime.predict([image], model, on_warning=warnings.append, allow_checksum_mismatch=True)
    assert r["checksum"] == "mismatch" and len(warnings) == 1 and "does not match its manifest" in warnings[0]
    assert r["predictions"][0]["class"] == "beta"  # allowed: it says so, and answers

    weights = exported_copy / "tiny" / "tiny-fp16.bin"  # OpenVINO: the .bin is checked too
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 1
    weights.write_bytes(bytes(data))
    xml = str(exported_copy / "tiny" / "tiny-fp16.xml")
    assert runtime.main([image, "--model", xml]) == ArtifactError.exit_code
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error:") and "tiny-fp16.bin has sha256" in err
    assert runtime.main([image, "--model", xml, "--allow-checksum-mismatch"]) == 0
    out, err = capsys.readouterr()
    assert "tiny-fp16.bin has sha256" in err and err.startswith("warning:") and out.startswith(image)
    result = CliRunner().invoke(app, ["predict", image, "--model", xml])
    assert result.exit_code == ArtifactError.exit_code and "--allow-checksum-mismatch" in result.output
    result = CliRunner().invoke(app, ["predict", image, "--model", xml, "--allow-checksum-mismatch"])
    assert result.exit_code == 0 and "checksum: mismatch" in result.output


def test_hand_edited_manifest_is_reported_not_a_traceback(exported_copy, images):
    """An entry that breaks the schema (files as a list here, as a bad merge leaves it) cannot be checked: a
    warning that says why, and the answer; other broken entries do not concern this file."""
    image = str(images["small.png"][0])
    edit_manifest(
        exported_copy,
        lambda entries: (
            entries[0].update(files=list(entries[0]["files"])),
            entries.append(None),
            entries.append("stray line"),
        ),
    )
    model = exported_copy / listed_path(exported_copy, 0)
    warnings = []
    (r,) = runtime.predict([image], model, on_warning=warnings.append)
    assert r["checksum"] == "invalid-manifest" and r["predictions"][0]["class"] == "beta"
    assert len(warnings) == 1 and "'files' must be an object" in warnings[0]
    other = exported_copy / listed_path(exported_copy, 1)
    assert runtime.predict([image], other)[0]["checksum"] == "ok"


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
    image = {
        "not-an-image": bad / "notes.jpg",
        "empty-image": bad / "empty.png",
        "image-is-dir": bad,
        "missing-image": bad / "nope.png",
    }[kind]
    if kind == "not-an-image":
        image.write_text("this is not a picture\n")
    if kind == "empty-image":
        image.write_bytes(b"")
    return onnx_file, image


BAD = {
    "corrupt-onnx": "cannot load",
    "truncated-onnx": "cannot load",
    "truncated-xml": "cannot load",
    "truncated-bin": "cannot load",
    "missing-bin": "m.bin is missing",
    "empty-model": "is empty",
    "model-is-dir": "is a directory",
    "missing-model": "not found",
    "unknown-suffix": "unknown model format",
    "onnx-classes": "outputs 3 logits but its metadata names 2 classes",
    "openvino-classes": "outputs 3 logits but its metadata names 4 classes",
    "not-an-image": "not an image",
    "empty-image": "empty file",
    "image-is-dir": "no image files",
    "missing-image": "image not found",
}


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


# ---------------------------------------------------------------- many images, some bad


def test_good_images_are_answered_and_each_bad_one_is_its_own_error(exported, images, tmp_path, capsys):
    model = str(artifact(exported, "onnx", "int8"))
    good = [str(images["small.png"][0]), str(images["photo.jpg"][0])]
    (tmp_path / "notes.jpg").write_text("not a picture")
    bad = [str(tmp_path / "missing.png"), str(tmp_path / "notes.jpg")]
    args = [good[0], bad[0], good[1], bad[1]]
    results = runtime.predict(args, model)
    assert [r["image"] for r in results] == args
    assert [r["predictions"][0]["class"] for r in results if "predictions" in r] == ["beta", "gamma"]
    assert ["not found" in results[1]["error"], "not an image" in results[3]["error"]] == [True, True]

    assert runtime.main([*args, "--model", model]) == DataError.exit_code
    out, err = capsys.readouterr()
    assert [line.split(":")[0] for line in out.splitlines()] == good
    assert len(err.splitlines()) == 2 and all(line.startswith("error:") for line in err.splitlines())
    result = CliRunner().invoke(app, ["predict", *args, "--model", model, "--json"])
    assert result.exit_code == DataError.exit_code
    listed = json.loads(result.stdout)
    assert [("predictions" in r, "error" in r) for r in listed] == [(True, False), (False, True)] * 2
    result = CliRunner().invoke(app, ["predict", *args, "--model", model])
    assert result.exit_code == DataError.exit_code and "gamma" in result.output
    assert result.output.count("error:") == 2 and "Traceback" not in result.output


def test_a_folder_stands_for_the_images_in_it(exported, images, tmp_path):
    folder = tmp_path / "shots"
    folder.mkdir()
    for name in ("b.PNG", "a.jpg", "c.webp"):
        shutil.copy(images["small.png"][0], folder / name)
    (folder / "._a.jpg").write_bytes(b"\0\5\x16\7 AppleDouble")  # macOS companion files and hidden files
    (folder / ".thumb.png").write_bytes(b"x")
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    (tmp_path / "empty").mkdir()
    results = runtime.predict([folder, images["photo.jpg"][0], tmp_path / "empty"], artifact(exported, "onnx", "fp32"))
    assert [Path(r["image"]).name for r in results] == ["a.jpg", "b.PNG", "c.webp", "photo.jpg", "empty"]
    assert all("predictions" in r for r in results[:4]) and "no image files" in results[4]["error"]


# ---------------------------------------------------------------- names printed literally (rich markup)


def test_bracketed_names_are_printed_literally(exported, images, tmp_path, monkeypatch):
    """`[red]` is a rich style tag and `[/x]` a closing tag: both must reach the user as written."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shots [").mkdir()  # "shots [/edited].jpg": the file "edited].jpg" in the folder "shots ["
    for name in ("cat [red].jpg", "IMG_0001 [edited].jpg", "shots [/edited].jpg"):
        shutil.copy(images["photo.jpg"][0], tmp_path / name)
    model = str(artifact(exported, "onnx", "int8"))
    result = CliRunner().invoke(
        app, ["predict", "cat [red].jpg", "IMG_0001 [edited].jpg", "shots [/edited].jpg", "--model", model]
    )
    assert result.exit_code == 0, result.output
    assert all(n in result.output for n in ("cat [red].jpg", "IMG_0001 [edited].jpg", "shots [/edited].jpg"))
    for missing in ("holiday [red]/cat.jpg", "trip [/day2]/cat.jpg"):  # the error line: literal, no crash
        result = CliRunner().invoke(app, ["predict", missing, "--model", model])
        assert result.exit_code == DataError.exit_code and isinstance(result.exception, (SystemExit, type(None)))
        assert result.output.strip() == f"error: image not found: {missing}"
    result = CliRunner().invoke(app, ["predict", "cat [red].jpg", "--model", "nets [/v2]/m.onnx"])
    assert result.output.strip() == "error: model file not found: nets [/v2]/m.onnx"


# ---------------------------------------------------------------- threads, LFS pointers, runtime versions


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
@pytest.mark.parametrize("threads", [0, -1, 2.5, True])
def test_threads_are_checked_the_same_for_both_runtimes(exported, images, fmt, threads):
    model = artifact(exported, fmt, "fp32")
    with pytest.raises(UsageError, match=r"--threads must be a whole number of at least 1"):
        runtime.load_artifact(model, threads=threads)
    if type(threads) is int:  # the same from both command lines
        image = str(images["small.png"][0])
        assert runtime.main([image, "--model", str(model), "--threads", str(threads)]) == UsageError.exit_code
        result = CliRunner().invoke(app, ["predict", image, "--model", str(model), "--threads", str(threads)])
        assert result.exit_code == UsageError.exit_code and result.output.startswith("error: --threads")


def test_more_threads_than_cores_warns(exported, images):
    from edgecifar.utils import available_cores

    warnings = []
    model = artifact(exported, "onnx", "int8")
    runtime.predict([images["small.png"][0]], model, threads=available_cores(), on_warning=warnings.append)
    assert warnings == []
    runtime.predict([images["small.png"][0]], model, threads=available_cores() + 1, on_warning=warnings.append)
    assert len(warnings) == 1 and f"more than the {available_cores()} core" in warnings[0]


LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:" + "ab" * 32 + "\nsize 1187264\n"


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_git_lfs_pointer_is_named(exported, images, tmp_path, fmt):
    model = artifact(exported, fmt, "fp32")
    pointer = tmp_path / model.name
    if fmt == "onnx":
        pointer.write_text(LFS_POINTER)
    else:  # the .xml came through, its weights did not
        shutil.copy(model, pointer)
        pointer.with_suffix(".bin").write_text(LFS_POINTER)
    code = runtime.main([str(images["small.png"][0]), "--model", str(pointer)])
    assert code == ArtifactError.exit_code
    with pytest.raises(ArtifactError, match="is a Git LFS pointer, not the model itself.*git lfs pull"):
        runtime.load_artifact(pointer)


def test_too_new_onnx_file_names_the_cause_and_versions(exported_copy, images):
    """onnxruntime's error is kept to its cause (past its C++ signature), with what the file needs."""
    import onnx
    import onnxruntime

    model = exported_copy / "tiny" / "tiny-fp32.onnx"
    proto = onnx.load(str(model))
    opset = next(o.version for o in proto.opset_import if o.domain == "")
    proto.ir_version = 99
    onnx.save(proto, str(model))
    with pytest.raises(ArtifactError) as caught:
        runtime.load_artifact(model)
    text = str(caught.value)
    assert "Unsupported model IR version: 99" in text and f"onnxruntime {onnxruntime.__version__}" in text
    assert f"the file is ONNX IR version 99, opset {opset}" in text
    versions = json.loads((exported_copy / "manifest.json").read_text())["artifacts"][0]["versions"]
    assert f"exported and verified with onnxruntime {versions['onnxruntime']}" in text
    assert ".cc:" not in text and "onnxruntime::" not in text


def test_onnx_versions_read_without_onnx(exported):
    import onnx

    from edgecifar.backends.onnx import onnx_versions

    for precision in ("fp32", "int8"):
        path = artifact(exported, "onnx", precision)
        proto = onnx.load(str(path))
        assert onnx_versions(path) == (proto.ir_version, {o.domain: o.version for o in proto.opset_import})
    assert onnx_versions(artifact(exported, "openvino", "fp32")) == (None, {})


def test_runtime_error_text_keeps_the_cause():
    from edgecifar.backends import error_text

    ort = RuntimeError(
        "[ONNXRuntimeError] : 1 : FAIL : Load model from m.onnx failed:/onnxruntime_src/onnxruntime/"
        "core/graph/model.cc:180 onnxruntime::Model::Model(onnx::ModelProto&&, const PathString&, "
        "const IOnnxRuntimeOpSchemaRegistryList*, const logging::Logger&, const ModelOptions&) "
        "Unsupported model IR version: 10, max supported IR version: 9\n"
    )
    cause = "Unsupported model IR version: 10, max supported IR version: 9"
    assert error_text(ort) == f"Load model from m.onnx failed: {cause}"
    ov = RuntimeError(
        "Exception from src/inference/src/cpp/core.cpp:92:\nCheck 'false' failed at src/frontends/"
        "common/src/frontend.cpp:54:\nFrontEnd API failed with GeneralFailure:\n"
        + "x" * 3000
        + "\nthe cause at the end\n"
    )
    text = error_text(ov)
    assert text.startswith("FrontEnd API failed") and text.endswith("the cause at the end") and len(text) <= 1000
