"""Instruction-set safety of INT8 files: the CPU's INT8 path from its flags (faked here), the 7-bit/8-bit export
setting recorded in each file, the VNNI warning of predict and bench, and the bench's AVX2 path."""

from __future__ import annotations

import json
import platform

import numpy as np
import pytest

pytest.register_assert_rewrite("export_fixtures")
from export_fixtures import CALIB_SIZE, VERIFY_SIZE, tinted_image  # noqa: E402

from edgecifar import isa  # noqa: E402
from edgecifar.backends import BACKENDS  # noqa: E402
from edgecifar.isa import CpuIsa, isa_warning, read_cpu_isa  # noqa: E402

pytest_plugins = ["export_fixtures"]

ZEN3 = {"sse4_2", "avx", "avx2", "fma"}  # an AVX2-only CPU
ICELAKE = ZEN3 | {"avx512f", "avx512bw", "avx512_vnni"}
SKYLAKE_SP = ZEN3 | {"avx512f", "avx512bw"}  # AVX-512 without VNNI: saturates like AVX2
SAPPHIRE = ICELAKE | {"amx_int8", "amx_bf16", "avx512_bf16"}


def fake_cpu(flags: set[str]) -> CpuIsa:
    return read_cpu_isa(flags=lambda: set(flags), model=lambda: "Fake CPU")


@pytest.mark.parametrize(
    "flags, path, vnni",
    [
        (ZEN3, "avx2", False),
        (SKYLAKE_SP, "avx512", False),
        (ICELAKE, "avx512_vnni", True),
        (SAPPHIRE, "amx", True),
        (ZEN3 | {"avx_vnni"}, "avx_vnni", True),
        (set(), "sse", False),
    ],
)
def test_int8_path_from_flags(flags, path, vnni):
    cpu = fake_cpu(flags)
    assert (cpu.int8_path, cpu.vnni) == (path, vnni)
    record = cpu.record()
    assert record["cpu"] == "Fake CPU" and record["int8_path"] == path and record["cap"] is None
    assert set(record["flags"]) <= flags


def test_vnni_warning_only_for_an_8_bit_file_on_a_cpu_without_vnni():
    vnni_file = {"precision": "int8", **isa.int8_metadata("vnni")}
    portable = {"precision": "int8", **isa.int8_metadata("x86")}
    assert vnni_file["int8_weight_bits"] == "8" and portable["int8_weight_bits"] == "7"
    for flags in (ZEN3, SKYLAKE_SP):
        note = isa_warning(vnni_file, fake_cpu(flags))
        assert note and note.startswith("warning:") and "--int8-isa x86" in note and "Fake CPU" in note
    for flags in (ICELAKE, SAPPHIRE):
        assert isa_warning(vnni_file, fake_cpu(flags)) is None
    for meta in (portable, {"precision": "fp32"}, {"precision": "int8"}):  # older files name no ISA: no guess
        assert isa_warning(meta, fake_cpu(ZEN3)) is None


def test_a_cap_narrows_the_recorded_path(monkeypatch):
    monkeypatch.setenv("EDGECIFAR_ISA_CAP", "avx2")
    monkeypatch.setenv("EDGECIFAR_ISA_CAP_HOW", "ONEDNN_MAX_CPU_ISA=AVX2")
    cpu = isa.current_isa(flags=lambda: set(SAPPHIRE))
    assert cpu.int8_path == "avx2" and not cpu.vnni and cpu.cap == "ONEDNN_MAX_CPU_ISA=AVX2"
    vnni_file = {"precision": "int8", **isa.int8_metadata("vnni")}
    assert "ONEDNN_MAX_CPU_ISA=AVX2" in isa_warning(vnni_file, cpu)


def test_cap_commands(monkeypatch):
    env, prefix, emulated = isa.cap_command("avx2", "openvino")
    assert env == {"ONEDNN_MAX_CPU_ISA": "AVX2"} and prefix == [] and not emulated
    monkeypatch.setattr(isa.shutil, "which", lambda name: None)
    with pytest.raises(LookupError, match="qemu"):
        isa.cap_command("avx2", "onnx")
    monkeypatch.setattr(isa.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert isa.cap_command("avx2", "onnx") == ({}, ["/usr/bin/qemu-x86_64", "-cpu", "Haswell"], True)


ISA_FORMATS = [name for name, b in BACKENDS.items() if b.int8_isa_rule]  # the formats --int8-isa applies to


@pytest.fixture(scope="module")
def exported_vnni(tiny_run, tmp_path_factory):
    from edgecifar.export import export_run

    out = tmp_path_factory.mktemp("vnni")
    return out, export_run(
        tiny_run, ISA_FORMATS, "int8", out_dir=out, calib_size=CALIB_SIZE, verify_size=VERIFY_SIZE, int8_isa="vnni"
    )


def _int8_weights(path):
    """Every int8 weight tensor of an INT8 file (ONNX initializers; OpenVINO i8 constants)."""
    if path.suffix == ".onnx":
        import onnx

        proto = onnx.load(str(path))
        return [onnx.numpy_helper.to_array(t) for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    import openvino as ov

    model = ov.Core().read_model(str(path))
    return [
        op.get_data()
        for op in model.get_ordered_ops()
        if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8
    ]


def test_int8_isa_is_recorded_and_decides_the_weight_range(exported, exported_vnni):
    from edgecifar.runtime import load_artifact

    for (out, entries), setting in ((exported, "x86"), (exported_vnni, "vnni")):
        manifest = {a["path"]: a for a in json.loads((out / "manifest.json").read_text())["artifacts"]}
        for e in (e for e in entries if e.precision == "int8" and e.format in ISA_FORMATS):
            meta = load_artifact(out / e.path).metadata
            assert meta["int8_isa"] == setting and meta["int8_weight_bits"] == str(isa.WEIGHT_BITS[setting])
            assert manifest[e.path]["calibration"]["int8_isa"] == setting
            weights = _int8_weights(out / e.path)
            widest = max(int(np.abs(w.astype(np.int32)).max()) for w in weights)
            # 7-bit: |w| <= 64, so a u8 * s8 pair sum (255 * 64 * 2) fits int16 on AVX2; 8-bit uses the range
            assert widest <= 64 if setting == "x86" else widest > 64, (e.path, widest)


def test_predict_warns_for_a_vnni_file_on_a_cpu_without_vnni(exported_vnni, tmp_path):
    from PIL import Image

    from edgecifar.runtime import predict

    out, entries = exported_vnni
    image = tmp_path / "a.png"
    Image.fromarray(tinted_image(0, np.random.default_rng(0))).save(image)
    for e in entries:
        warnings: list[str] = []
        predict([image], out / e.path, on_warning=warnings.append, cpu=fake_cpu(ZEN3))
        assert [w for w in warnings if "VNNI" in w], e.path
        warnings.clear()
        predict([image], out / e.path, on_warning=warnings.append, cpu=fake_cpu(ICELAKE))
        assert not [w for w in warnings if "VNNI" in w]


def test_bench_records_the_isa_of_every_row_and_runs_the_avx2_path(exported_vnni, tiny_run, tmp_path, monkeypatch):
    from edgecifar.bench import bench

    monkeypatch.setattr(isa.shutil, "which", lambda name: None)  # no emulator: the ONNX @avx2 row says why
    out, _ = exported_vnni
    rows = bench(
        [out],
        threads=(1,),
        out_dir=tmp_path / "res",
        runs_dir=tiny_run.parent,
        baseline=False,
        isa="native,avx2",
        max_images=40,
        latency_seconds=0.05,
        throughput_seconds=0.05,
    )
    by_variant = {r.variant: r for r in rows}
    assert set(by_variant) == {"ONNX INT8", "OpenVINO INT8", "ONNX INT8 @avx2", "OpenVINO INT8 @avx2"}
    native = by_variant["OpenVINO INT8"].isa
    assert native["int8_path"] == read_cpu_isa().int8_path and native["cap"] is None
    capped = by_variant["OpenVINO INT8 @avx2"]
    assert capped.status == "ok" and capped.isa["int8_path"] == "avx2"
    assert capped.isa["cap"] == "ONEDNN_MAX_CPU_ISA=AVX2" and capped.latency_p50_ms > 0
    assert "VNNI" in capped.isa_warning  # the 8-bit file on the capped path
    assert by_variant["ONNX INT8 @avx2"].status == "skipped" and "qemu" in by_variant["ONNX INT8 @avx2"].reason
    assert "## INT8 paths" in (tmp_path / "res" / "bench.md").read_text()


def test_formats_the_isa_rule_does_not_apply_to_record_no_isa(exported):
    """LiteRT's and ExecuTorch's INT8 kernels (XNNPACK) are not oneDNN's u8 x s8 ones: their files claim no ISA."""
    from edgecifar.runtime import load_artifact

    out, entries = exported
    others = [e for e in entries if e.precision == "int8" and e.format not in ISA_FORMATS]
    for e in others:
        assert "int8_isa" not in load_artifact(out / e.path).metadata
        assert "int8_isa" not in e.calibration


def _grouped_convs(path):
    """A uint8 NHWC graph: depthwise 3x3 conv (3 groups, 1 output each), ReLU, a grouped conv with a channel
    multiplier (3 groups, 2 outputs each: MLAS's GEMM path), ReLU, dense 3x3 conv; all weights positive, so that
    a u8 * s8 pair sum on the GEMM path overflows int16 when its weights have 8 bits (255 * 127 * 2 > 32,767)."""
    import torch

    torch.manual_seed(0)
    dw = torch.nn.Conv2d(3, 3, 3, padding=1, groups=3)
    multiplier = torch.nn.Conv2d(3, 6, 3, padding=1, groups=3)
    dense = torch.nn.Conv2d(6, 8, 3, padding=1)
    for conv in (dw, multiplier, dense):
        conv.weight.data.abs_()

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dw, self.multiplier, self.dense = dw, multiplier, dense

        def forward(self, image):
            x = torch.relu(self.dw(image.permute(0, 3, 1, 2).float() / 255))
            return self.dense(torch.relu(self.multiplier(x)))

    torch.onnx.export(
        Net().eval(),
        (torch.zeros(1, 8, 8, 3, dtype=torch.uint8),),
        str(path),
        dynamo=True,
        input_names=["image"],
        output_names=["logits"],
    )
    return path


def _quantized(tmp_path, setting):
    """(prepared float graph, QDQ graph) of _grouped_convs, quantized as the exporter does under `setting`."""
    from edgecifar.backends import Calibration
    from edgecifar.backends.onnx import prepare_and_quantize

    fp32 = _grouped_convs(tmp_path / "fp32.onnx")
    images = np.full((1, 8, 8, 3), 255, np.uint8)  # the widest activations: every sum at its largest
    (tmp_path / setting).mkdir()
    return prepare_and_quantize(fp32, tmp_path / setting, Calibration(images, isa=setting))


def test_depthwise_weights_keep_8_bits_under_the_x86_rule(tmp_path):
    """MLAS's depthwise kernel widens u8 * s8 to int32 on every x86 CPU, unlike its GEMM (dense convs, grouped
    convs with several outputs per group, MatMul): only the GEMM weights need 7 bits to be exact without VNNI."""
    import onnx

    from edgecifar.backends.onnx import depthwise_weights

    for setting in ("x86", "vnni"):
        quantized = onnx.load(str(_quantized(tmp_path, setting)[1]))
        widest = {
            t.name: int(np.abs(onnx.numpy_helper.to_array(t).astype(np.int32)).max())
            for t in quantized.graph.initializer
            if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4
        }
        depthwise = depthwise_weights(quantized)
        assert len(depthwise) == 1 and widest.pop(depthwise[0]) == 127  # the 3-group, 1-output conv only
        assert list(widest.values()) == [64 if setting == "x86" else 127] * 2, (setting, widest)


@pytest.mark.skipif(
    not isa.shutil.which(isa.EMULATOR) or not read_cpu_isa().vnni or platform.machine() != "x86_64",
    reason="needs an x86 CPU with VNNI (the exact native path) and qemu-x86_64 for the AVX2 path",
)
def test_the_x86_rule_is_exact_on_the_avx2_path(tmp_path):
    """The same file, natively (VNNI: exact) and under QEMU's AVX2 CPU model (no VNNI): the x86 file (8-bit
    depthwise, 7-bit GEMM weights) gives the same logits on both; the vnni file (8-bit GEMM weights) does not."""
    import subprocess
    import sys

    script = (
        "import sys, numpy as np, onnxruntime as ort; s = ort.InferenceSession(sys.argv[1], "
        "providers=['CPUExecutionProvider']); np.save(sys.argv[2], s.run(None, "
        "{'image': np.full((1, 8, 8, 3), 255, np.uint8)})[0])"
    )
    for setting in ("x86", "vnni"):
        path = _quantized(tmp_path, setting)[1]
        outputs = []
        for prefix in ([], [isa.shutil.which(isa.EMULATOR), "-cpu", isa.CAPS["avx2"].emulator_cpu]):
            out = tmp_path / f"{setting}-{len(prefix)}.npy"
            subprocess.run(
                [*prefix, sys.executable, "-c", script, str(path), str(out)],
                check=True,
                capture_output=True,
                timeout=300,
            )
            outputs.append(np.load(out))
        same = np.array_equal(*outputs)
        assert same if setting == "x86" else not same, (setting, np.abs(outputs[0] - outputs[1]).max())
