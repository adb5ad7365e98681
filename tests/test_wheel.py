"""The device install (docs/device.md): the wheel `uv build --wheel` makes, installed with --no-deps, runs
`python -m edgecifar.runtime` where only onnxruntime, numpy and Pillow can be imported (torch cannot)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tiny_models import CLASSES, colour_images, tiny_onnx

ROOT = Path(__file__).resolve().parents[1]
DEVICE_PACKAGES = ("onnxruntime", "numpy", "numpy.libs", "PIL", "pillow.libs")  # and nothing else


@pytest.fixture(scope="module")
def device(tmp_path_factory) -> dict[str, str]:
    """The environment of `python -S` on a device: the wheel installed alone (--no-deps) and a folder holding
    only the runtime, numpy and Pillow (links to this environment's), on PYTHONPATH."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed (it builds the wheel)")
    root = tmp_path_factory.mktemp("device")
    subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(root / "dist"), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (root / "dist").glob("edgecifar-*.whl")
    subprocess.run(
        [
            uv,
            "pip",
            "install",
            "--no-deps",
            "--offline",
            "--target",
            str(root / "site"),
            "--python",
            sys.executable,
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    site = Path(sysconfig.get_paths()["purelib"])
    (root / "deps").mkdir()
    for name in DEVICE_PACKAGES:
        if (site / name).exists():
            (root / "deps" / name).symlink_to(site / name)
    # -S below: no site-packages, only what PYTHONPATH names (the standard library aside)
    return {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": f"{root / 'site'}{os.pathsep}{root / 'deps'}"}


def test_the_wheel_runs_the_device_path_without_torch(device, tmp_path):
    python = [sys.executable, "-S"]
    for heavy in ("torch", "onnx", "typer", "timm"):
        found = subprocess.run(
            [*python, "-c", f"import {heavy}"], env=device, capture_output=True, text=True, cwd=tmp_path
        )
        assert found.returncode != 0 and "ModuleNotFoundError" in found.stderr
    where = subprocess.run(
        [*python, "-c", "import edgecifar; print(edgecifar.__file__)"],
        env=device,
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )  # not this checkout
    assert where.stdout.startswith(device["PYTHONPATH"].split(os.pathsep)[0])  # the installed wheel, not src
    model = tiny_onnx(tmp_path / "m.onnx", batch=1)  # a phone's file, batch fixed
    images = colour_images(tmp_path / "img", 3)
    done = subprocess.run(
        [*python, "-m", "edgecifar.runtime", str(tmp_path / "img"), "--model", str(model)],
        env=device,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert [line.split(": ")[1].split()[0] for line in done.stdout.splitlines()] == CLASSES
    assert [line.split(": ")[0] for line in done.stdout.splitlines()] == [str(p) for p in images]
