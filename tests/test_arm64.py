"""The smallest committed INT8 file on an emulated ARM64 core (benchmarks/arm64.py) gives x86's outputs bit for bit.

Runs where qemu-aarch64-static and a prepared sysroot (`python benchmarks/arm64.py --setup-only`) exist; skips with
the reason elsewhere, and never downloads anything itself."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def arm64_module():
    spec = importlib.util.spec_from_file_location("arm64_bench", ROOT / "benchmarks" / "arm64.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


arm64 = arm64_module()
WHY_NOT = (
    f"{arm64.QEMU} not installed (Debian: qemu-user-static)"
    if not shutil.which(arm64.QEMU)
    else f"no prepared arm64 sysroot at {arm64.SYSROOT} (python benchmarks/arm64.py --setup-only)"
    if not arm64.READY.is_file()
    else ""
)


def test_the_cpuinfo_names_the_core():
    assert "CPU part\t: 0xd08" in arm64.cpuinfo("cortex-a72") and "asimddp" not in arm64.cpuinfo("cortex-a72")
    assert "CPU part\t: 0xd0b" in arm64.cpuinfo("cortex-a76") and "asimddp" in arm64.cpuinfo("cortex-a76")
    with pytest.raises(ValueError, match="max"):
        arm64.qemu_python("max")


@pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT)
def test_smallest_int8_file_on_cortex_a72_matches_x86(tmp_path):
    entry = arm64.committed_files()[0]
    file = ROOT / "exported" / entry["path"]
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "images.npz", images=images)
    x86 = arm64.run([file], tmp_path / "images.npz", [sys.executable], None, tmp_path / "x86.npz", 300)
    arm = arm64.run(
        [file], tmp_path / "images.npz", arm64.qemu_python("cortex-a72"), arm64.qemu_env(), tmp_path / "arm.npz", 600
    )
    assert "error" not in x86 and "error" not in arm, (x86.get("error"), arm.get("error"))
    assert x86["outputs"][0].shape[0] == 4
    np.testing.assert_array_equal(arm["outputs"][0], x86["outputs"][0])
