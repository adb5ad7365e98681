"""Model files as users change them after export, and the files around them: a batch axis fixed to one size
(onnxruntime's make_dynamic_shape_fixed, OpenVINO's reshape), another tool's manifest.json above the file."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from edgecifar import runtime
from edgecifar.cli import app
from edgecifar.errors import ArtifactError
from edgecifar.manifest import ForeignManifest, check_artifact, find_manifest, update_manifest

from tiny_models import CLASSES, colour_images, tiny_onnx


def fixed_onnx(tmp_path, batch: int):
    """The tiny model with its batch axis fixed to `batch`: the graph that onnxruntime's mobile tool makes
    (`python -m onnxruntime.tools.make_dynamic_shape_fixed --dim_param N --dim_value 1`: dim_param N becomes
    dim_value 1 on the input and output), written directly (importing the tool takes seconds)."""
    return tiny_onnx(tmp_path / f"b{batch}.onnx", batch=batch)


def reshaped_openvino(tmp_path, shape):
    """The tiny model as an OpenVINO IR (our metadata in its rt_info, as export writes it), reshaped."""
    ov = pytest.importorskip("openvino")
    from edgecifar.backends.openvino import RT_SECTION

    model = ov.Core().read_model(str(tiny_onnx(tmp_path / "src.onnx")))
    contract = {"name": "image", "dtype": "uint8", "shape": ["N", 32, 32, 3], "layout": "NHWC", "color": "RGB"}
    for key, value in {"classes": json.dumps(CLASSES), "input": json.dumps(contract)}.items():
        model.set_rt_info(value, [RT_SECTION, key])
    model.reshape(shape)
    path = tmp_path / f"reshaped-{'x'.join(map(str, shape))}.xml"
    ov.save_model(model, str(path))
    return path


@pytest.mark.parametrize(
    "make",
    [lambda t: fixed_onnx(t, 1), lambda t: fixed_onnx(t, 2), lambda t: reshaped_openvino(t, [1, 32, 32, 3])],
    ids=["onnx-b1", "onnx-b2", "openvino-b1"],
)
def test_a_file_with_a_fixed_batch_takes_any_number_of_images(tmp_path, make):
    model = make(tmp_path)
    images = colour_images(tmp_path / "img", 5)
    artifact = runtime.load_artifact(model)
    assert artifact.batch in (1, 2)
    results = runtime.predict(images, model, topk=1)
    assert [r["predictions"][0]["class"] for r in results] == [CLASSES[i % 3] for i in range(5)]
    pixels = np.stack([runtime.read_image(p) for p in images])
    reference = runtime.load_artifact(tiny_onnx(tmp_path / "ref.onnx")).run(pixels)
    np.testing.assert_allclose(artifact.run(pixels), reference, rtol=1e-5, atol=1e-6)
    assert runtime.main([*map(str, images), "--model", str(model)]) == 0  # the device-side command too


def test_a_fixed_size_other_than_the_metadata_is_one_line(tmp_path, capsys):
    model = reshaped_openvino(tmp_path, [1, 48, 48, 3])
    images = colour_images(tmp_path / "img", 2)
    assert runtime.main([*map(str, images), "--model", str(model)]) == ArtifactError.exit_code
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1 and "takes uint8 [N, 48, 48, 3] images but its metadata says uint8 [N, 32, 32, 3]" in err
    )


def test_the_predict_command_batches_a_fixed_file(tmp_path):
    model = fixed_onnx(tmp_path, 1)
    images = colour_images(tmp_path / "img", 3)
    result = CliRunner().invoke(app, ["predict", *map(str, images), "--model", str(model), "--json"])
    assert result.exit_code == 0, result.output
    assert [r["predictions"][0]["class"] for r in json.loads(result.stdout)] == CLASSES


# ---------------------------------------------------------------- manifest.json of another tool

WEB_MANIFEST = {
    "name": "Cat or dog",
    "short_name": "catdog",
    "start_url": "/",
    "display": "standalone",
    "icons": [{"src": "icon-192.png", "sizes": "192x192", "type": "image/png"}],
}


def test_another_tools_manifest_above_a_model_is_passed_by(tmp_path, capsys):
    web = tmp_path / "webapp"
    model = tiny_onnx(web / "public" / "models" / "cat.onnx")
    (web / "manifest.json").write_text(json.dumps(WEB_MANIFEST))
    image = str(colour_images(tmp_path / "img", 1)[0])
    warnings = []
    (result,) = runtime.predict([image], model, on_warning=warnings.append)
    assert result["checksum"] == "no-manifest" and warnings == []
    assert find_manifest(model) is None and check_artifact(model)["status"] == "no-manifest"
    assert runtime.main([image, "--model", str(model)]) == 0 and capsys.readouterr().err == ""
    # ours, further up, is still found: the foreign one on the way is passed by
    shutil.move(web, tmp_path / "exported" / "webapp")
    update_manifest(tmp_path / "exported" / "manifest.json", [])
    assert (
        find_manifest(tmp_path / "exported" / "webapp" / "public" / "models" / "cat.onnx")
        == tmp_path / "exported" / "manifest.json"
    )


def test_export_never_overwrites_another_tools_manifest(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps(WEB_MANIFEST))
    with pytest.raises(ForeignManifest, match=r"another tool's manifest.json.*export to another folder"):
        update_manifest(tmp_path / "manifest.json", [])
    assert json.loads((tmp_path / "manifest.json").read_text()) == WEB_MANIFEST


def test_ours_is_marked_and_older_or_broken_ones_are_still_ours(tmp_path):
    model = tiny_onnx(tmp_path / "exp" / "run" / "run-fp32.onnx")
    written = update_manifest(tmp_path / "exp" / "manifest.json", [])
    assert written.generator == "edgecifar"
    (tmp_path / "exp" / "manifest.json").write_text('{"version": 1, "artifacts": []}')  # before the marker
    assert check_artifact(model)["status"] == "unlisted"
    (tmp_path / "exp" / "manifest.json").write_text('{"version": 1, "artifacts": [')  # a hand edit gone wrong
    check = check_artifact(model)
    assert check["status"] == "invalid-manifest" and "corrupt manifest" in check["detail"]
    (tmp_path / "exp" / "manifest.json").write_text('{"generator": "edgecifar", "version": 1}')
    assert "no 'artifacts' list" in check_artifact(model)["detail"]


# ---------------------------------------------------------------- the predict table at 80 columns


def test_predict_at_80_columns_shows_what_tells_the_images_apart(tmp_path):
    import os
    import subprocess
    import sys

    model = tiny_onnx(tmp_path / "m.onnx")
    deep = tmp_path / "a-rather-long-folder-name" / "another-long-folder-name-of-a-photo-library" / "2026-12"
    images = colour_images(deep, 3)
    env = {**os.environ, "COLUMNS": "80"}
    done = subprocess.run(
        [sys.executable, "-m", "edgecifar", "predict", *map(str, images), "--model", str(model), "--topk", "3"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(map(len, lines[1:])) <= 80  # the table; the folder's line is the terminal's to wrap
    rows = [line for line in lines if "%" in line]
    for i, row in enumerate(rows):  # one row per image, its file name whole
        assert f"img{i}.png" in row and CLASSES[i] in row
    assert lines[0] == f"images in {deep}:"  # the folder they share, said once
