"""What edgecifar decides from the CPU's features (bf16, VNNI, AVX-512, AMX) is taken both ways on any machine:
EDGECIFAR_CPU_FLAGS makes the code believe it runs on another CPU (edgecifar.isa.cpu_flags). Bad input is one
line whatever the CPU has; a run records the autocast it used and says so once, after the data summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgecifar import isa
from edgecifar.cli import app

ZEN3 = "sse4_2 avx avx2 fma"  # AVX2 only: no AVX-512, no VNNI, no bf16
ZEN4 = ZEN3 + " avx512f avx512bw avx512_vnni avx512_bf16"
SAPPHIRE_RAPIDS = ZEN4 + " amx_tile amx_int8 amx_bf16"
CPUS = {"zen3": ZEN3, "zen4": ZEN4, "sapphire_rapids": SAPPHIRE_RAPIDS}
HAS_BF16 = {"zen3": False, "zen4": True, "sapphire_rapids": True}


@pytest.fixture(params=list(CPUS))
def cpu(request, monkeypatch) -> str:
    monkeypatch.setenv(isa.FLAGS_ENV, CPUS[request.param])
    return request.param


def test_the_switch_decides_every_feature(cpu):
    assert isa.cpu_has_bf16() is HAS_BF16[cpu]
    found = isa.current_isa()
    assert found.int8_path == {"zen3": "avx2", "zen4": "avx512_vnni", "sapphire_rapids": "amx"}[cpu]
    assert found.vnni is (cpu != "zen3") and isa.FLAGS_ENV in found.model  # a believed CPU says so
    vnni_file = {"precision": "int8", **isa.int8_metadata("vnni")}
    assert (isa.isa_warning(vnni_file) is None) is (cpu != "zen3")


def test_without_the_switch_the_flags_are_the_cpus(monkeypatch):
    from edgecifar.utils import cpu_flags

    monkeypatch.delenv(isa.FLAGS_ENV, raising=False)
    assert isa.cpu_flags() == cpu_flags() and isa.FLAGS_ENV not in isa.current_isa().model


@pytest.mark.parametrize("command", ["train", "pipeline"])
def test_bad_data_is_one_line_on_every_cpu(command, cpu, tmp_path):
    result = CliRunner().invoke(app, [command, "--data", str(tmp_path / "nonexistent")])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and result.output.startswith("error: data path not found"), result.output


def test_a_run_records_its_autocast_and_says_it_once(cpu, image_tree, tmp_path):
    """scratch_cnn's recipe autocasts to bf16 where the CPU computes in it; elsewhere it trains in fp32, and the
    summary line (after the data summary) says so once."""
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--data",
            str(image_tree),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--max-train",
            "32",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("data:") or "classes" in lines[0], lines  # the data summary comes first
    config = json.loads((out / "config.json").read_text())
    native = HAS_BF16[cpu]
    assert config["autocast"] == {
        "bf16": native,
        "native_bf16": native,
        "by": "recipe",
        "note": config["autocast"]["note"],
    }
    assert config["train"]["bf16"] is native
    said = [line for line in lines if "bf16" in line]  # once, in the summary line
    assert len(said) == 1 and said[0].startswith("training "), lines
    assert ("--bf16 forces it" in said[0]) is not native and ("bf16 autocast," in said[0]) is native


def test_bench_offers_bf16_rows_only_where_the_cpu_computes_in_bf16(cpu):
    from edgecifar.bench_targets import Target, _bf16_variants

    fp32 = Target(model="m", source_run="r", format="openvino", precision="fp32", path=Path("m.xml"), classes=["a"])
    variants = _bf16_variants([fp32])
    assert [v.exec_precision for v in variants] == ["bf16"]
    assert (variants[0].status == "skipped") is not HAS_BF16[cpu]
