"""Instruction-set safety of INT8 files: which x86 INT8 path a CPU takes, the export setting that is exact on
every path, the warning when a file made for VNNI meets a CPU without it, and how the bench runs the AVX2
path on a newer CPU.

Why it matters: x86 INT8 kernels multiply uint8 activations by int8 weights. With VNNI (AVX-512 VNNI, AVX-VNNI)
or AMX the products are summed in int32, exactly. Without (AVX2, AVX-512 before Cascade Lake) ONNX Runtime's
MLAS and oneDNN (OpenVINO's CPU plugin) use `vpmaddubsw`, which adds each pair of products in int16 and
saturates: 255 * 127 * 2 = 64,770 does not fit in 32,767. With 7-bit weights (|w| <= 64) a pair is at most
255 * 64 * 2 = 32,640, so the sum is exact on every x86 CPU (the measured cost of 8-bit weights on an AVX2 CPU:
docs/design-notes.md).

ONNX Runtime's depthwise conv kernel widens to int32 instead, so depthwise weights keep 8 bits under the x86
rule; the weight bits a file records are those of the weights on the int16-pair (GEMM) path. tests/test_isa.py
runs such a graph natively and under QEMU's Haswell.

Every decision that depends on the CPU's features (the INT8 path, the VNNI warning, training's bf16 autocast,
the bench's bf16 rows) reads them through `cpu_flags` here, so that EDGECIFAR_CPU_FLAGS, a list of flags as
Linux names them (e.g. "avx2 fma" for an AVX2-only Zen 3), makes the code believe it runs on another CPU: tests
take both sides of every such decision on any machine. It changes what edgecifar decides, not the kernels the
libraries pick (ONEDNN_MAX_CPU_ISA and ATEN_CPU_CAPABILITY do that).

Device side: no heavy imports here; the runtime's predict path uses `isa_warning`.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

from .errors import UsageError
from .utils import _cpuinfo
from .utils import cpu_flags as _cpuinfo_flags

# export setting (--int8-isa): "x86" is exact on every x86 CPU (7-bit weights where the kernels sum pairs in
# int16: ORT's reduce_range, nncf's OverflowFix.ENABLE); "vnni" keeps 8-bit weights, exact only with VNNI or AMX
INT8_ISAS = ("x86", "vnni")
DEFAULT_INT8_ISA = "x86"
WEIGHT_BITS = {"x86": 7, "vnni": 8}
ISA_KEY, WEIGHT_BITS_KEY = "int8_isa", "int8_weight_bits"  # keys in each INT8 file's metadata

FLAGS_ENV = "EDGECIFAR_CPU_FLAGS"  # the CPU's flags as edgecifar believes them, in place of /proc/cpuinfo's
_BF16 = {"avx512_bf16", "amx_bf16"}
_VNNI = {"avx512_vnni", "avx_vnni"}
_AVX512 = {
    "avx512f",
    "avx512bw",
    "avx512cd",
    "avx512dq",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512ifma",
    "avx512vbmi",
    "avx512_vbmi2",
    "avx512_bitalg",
    "avx512_vpopcntdq",
    "avx512_fp16",
}
_AMX = {"amx_int8", "amx_bf16", "amx_tile", "amx_fp16"}
SHOWN_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux names them: EDGECIFAR_CPU_FLAGS's (space- or comma-separated) when it is
    set, else /proc/cpuinfo's (empty where there is none)."""
    believed = os.environ.get(FLAGS_ENV)
    if believed is not None:
        return set(believed.replace(",", " ").split())
    return _cpuinfo_flags()


def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX-512 bf16 or AMX); elsewhere bf16 is emulated."""
    return bool(_BF16 & cpu_flags())


def cpu_model() -> str:
    """The CPU's model name, marked when EDGECIFAR_CPU_FLAGS stands in for its flags."""
    model = _cpuinfo("model name") or "unknown CPU"
    return f"{model} (flags from {FLAGS_ENV})" if os.environ.get(FLAGS_ENV) is not None else model


@dataclass(frozen=True)
class CpuIsa:
    """What a CPU offers the INT8 kernels (flags as Linux names them), and the cap a figure ran under, if any."""

    model: str
    flags: frozenset[str] = field(default_factory=frozenset)
    cap: str | None = None  # e.g. "ONEDNN_MAX_CPU_ISA=AVX2": the path was narrowed on a wider CPU

    @property
    def vnni(self) -> bool:
        """Exact int32 u8*s8 dot products: VNNI (AVX-512 or AVX) or AMX."""
        return bool((_VNNI | {"amx_int8"}) & self.flags)

    @property
    def int8_path(self) -> str:
        """The widest INT8 path: amx, avx512_vnni, avx_vnni, avx512 (no VNNI), avx2, or older."""
        for name, needs in (
            ("amx", "amx_int8"),
            ("avx512_vnni", "avx512_vnni"),
            ("avx_vnni", "avx_vnni"),
            ("avx512", "avx512bw"),
            ("avx2", "avx2"),
        ):
            if needs in self.flags:
                return name
        return "sse"

    def record(self) -> dict[str, object]:
        """The JSON form every bench figure carries."""
        return {
            "cpu": self.model,
            "int8_path": self.int8_path,
            "vnni": self.vnni,
            "flags": [f for f in SHOWN_FLAGS if f in self.flags],
            "cap": self.cap,
        }


def read_cpu_isa(flags: Callable[[], set[str]] = cpu_flags, model: Callable[[], str | None] = cpu_model) -> CpuIsa:
    """This CPU's INT8-relevant flags (readers injectable: tests fake a CPU)."""
    return CpuIsa(model=model() or "unknown CPU", flags=frozenset(flags()))


@dataclass(frozen=True)
class IsaCap:
    """A narrower INT8 path run on a wider CPU. OpenVINO: oneDNN's own ISA cap (real AVX2 kernels, real timings).
    ONNX Runtime has no such switch (MLAS dispatches on CPUID), so its process runs under QEMU's user-mode
    emulator with a CPU model of that ISA: the same binary takes the same kernels as on such a CPU, but the
    timings are the emulator's and are not reported."""

    name: str
    env: Mapping[str, str]
    emulator_cpu: str
    drops: frozenset[str]

    def apply(self, cpu: CpuIsa, how: str) -> CpuIsa:
        return CpuIsa(cpu.model, cpu.flags - self.drops, cap=how)


CAPS = {"avx2": IsaCap("avx2", {"ONEDNN_MAX_CPU_ISA": "AVX2"}, "Haswell", frozenset(_AVX512 | _AMX | _VNNI))}
EMULATOR = "qemu-x86_64"


def cap_command(cap: str, fmt: str) -> tuple[dict[str, str], list[str], bool]:
    """(environment, command prefix, emulated) to run a worker for the format `fmt` on the `cap` path, as its
    backend's `isa_switch` says (OpenVINO: oneDNN's own cap; ONNX Runtime: QEMU). Raises LookupError when this
    machine cannot (no emulator) or the format has no such path."""
    from .backends import BACKENDS

    spec, backend = CAPS[cap], BACKENDS.get(fmt)
    switch = getattr(backend, "isa_switch", "")
    if switch == "env":
        return dict(spec.env), [], False
    if switch == "emulator":
        emulator = shutil.which(EMULATOR)
        if emulator is None:
            raise LookupError(
                f"{backend.runtime} has no ISA switch; the {cap} path needs {EMULATOR} (apt install "
                f"qemu-user) on this {read_cpu_isa().int8_path} CPU"
            )
        return {}, [emulator, "-cpu", spec.emulator_cpu], True
    raise LookupError(f"{fmt} has no {cap} path to run")


def current_isa(flags: Callable[[], set[str]] = cpu_flags) -> CpuIsa:
    """This process's INT8 path: the CPU's, narrowed by a cap the bench set (EDGECIFAR_ISA_CAP names it; QEMU
    passes the host's /proc/cpuinfo through, so the flags alone cannot say)."""
    cpu = read_cpu_isa(flags)
    cap = os.environ.get("EDGECIFAR_ISA_CAP")
    if cap in CAPS:
        how = os.environ.get("EDGECIFAR_ISA_CAP_HOW", cap)
        return CAPS[cap].apply(cpu, how)
    return cpu


def int8_metadata(isa: str) -> dict[str, str]:
    """What an INT8 file records about the ISA it is exact on."""
    if isa not in INT8_ISAS:
        raise ValueError(f"unknown INT8 ISA '{isa}'")
    return {ISA_KEY: isa, WEIGHT_BITS_KEY: str(WEIGHT_BITS[isa])}


def isa_warning(metadata: Mapping[str, object], cpu: CpuIsa | None = None) -> str | None:
    """A warning when an INT8 file made for VNNI (8-bit weights) runs on a CPU without VNNI/AMX, where its
    int16 pair sums saturate and its accuracy drops; None otherwise (7-bit files are exact everywhere)."""
    if metadata.get("precision") != "int8" or metadata.get(ISA_KEY) != "vnni":
        return None
    cpu = cpu or current_isa()
    if cpu.vnni:
        return None
    return (
        f"warning: this INT8 file has 8-bit weights made for CPUs with VNNI/AMX; this CPU's INT8 path is "
        f"{cpu.int8_path} ({cpu.model}{', ' + cpu.cap if cpu.cap else ''}), where its sums saturate and "
        f"accuracy drops (points, not decimals): re-export with --int8-isa x86"
    )


def parse_isa(isa: Sequence[str] | str) -> list[str]:
    """`bench --isa`: "native" and/or names of CAPS, checked (UsageError)."""
    names = [p.strip() for p in isa.split(",")] if isinstance(isa, str) else list(isa)
    known = ("native", *CAPS)
    if not names or any(p not in known for p in names):
        raise UsageError(f"--isa takes a comma-separated list of {', '.join(known)}, got {isa!r}")
    return list(dict.fromkeys(names))


def isa_variants(targets: list[Any], caps: list[str]) -> list[Any]:
    """A copy of every bench target (bench_targets.Target) whose format can run on a narrower INT8 path (its
    backend's `isa_switch`), per such path (skipped, with the reason, where this machine cannot run it)."""
    from .backends import BACKENDS

    variants = []
    for cap in caps:
        for target in targets:
            if getattr(BACKENDS.get(target.format), "isa_switch", "") and target.isa_cap is None:
                variant = replace(target, isa_cap=cap)
                try:
                    cap_command(cap, target.format)
                except LookupError as e:
                    variant.skip(str(e))
                variants.append(variant)
    return variants


def emulated(target: Any) -> bool:
    """Whether the target's INT8 path runs under an emulator (whose timings are not the CPU's)."""
    try:
        return cap_command(target.isa_cap, target.format)[2] if target.isa_cap else False
    except LookupError:
        return False
