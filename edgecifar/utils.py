"""Small shared helpers: atomic writes, hashing, versions, the cores a process may use. Stdlib only: the
device-side runtime imports it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(final: Path | str, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it over `final` only if the block succeeds.

    Nobody ever sees a half-written file: a crash or an exception leaves `final` untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix or final.suffix, dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_json(path: Path | str, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text())


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def remove_tree(path: Path | str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def library_versions(*names: str) -> dict[str, str]:
    """Installed versions of the named distributions (missing ones are left out)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in names:
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


def default_cache_dir() -> Path:
    env = os.environ.get("EDGECIFAR_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgecifar"


def _cpuinfo(field: str) -> str | None:
    """The first `field` line of Linux's /proc/cpuinfo (None elsewhere, or when absent)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_flags() -> set[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo is not)."""
    return set((_cpuinfo("flags") or "").split())


def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX-512 bf16 or AMX); elsewhere bf16 is emulated."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


CGROUP_ROOT = Path("/sys/fs/cgroup")


def available_cores() -> int:
    """The cores this process may run on: its CPU affinity (taskset, cpusets), capped by a cgroup CPU quota
    (docker --cpus, Kubernetes limits), which os.cpu_count() ignores."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return max(1, min(cores, math.ceil(quota))) if quota is not None else cores


def cgroup_cpu_quota(proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota (in cores) of this process's cgroup or of any cgroup above it, the smallest one; None when
    there is none or no cgroup file system (v2: cpu.max "QUOTA PERIOD"; v1: cpu.cfs_quota_us / cfs_period_us)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        if line.count(":") < 2:
            continue
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2, the unified hierarchy
            folders, files = [root], ("cpu.max",)
        elif "cpu" in controllers.split(","):  # v1: mounted as cpu/, or cpu,cpuacct/ (and a cpu symlink)
            folders, files = [root / "cpu", root / controllers], ("cpu.cfs_quota_us", "cpu.cfs_period_us")
        else:
            continue
        for base in folders:
            here = base / path.lstrip("/")
            for folder in (here, *here.parents):  # a limit set on a parent applies to its children
                if folder == base.parent:
                    break
                limits.append(_quota(folder, files))
    found = [q for q in limits if q is not None]
    return min(found) if found else None


def _quota(folder: Path, files: tuple[str, ...]) -> float | None:
    try:
        if len(files) == 1:
            quota, period = (folder / files[0]).read_text().split()[:2]
        else:
            quota, period = ((folder / f).read_text().strip() for f in files)
        if quota in ("max", "-1"):
            return None
        return int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        return None


def threads_warning(threads: int | None) -> str | None:
    """A warning when `threads` is more than the cores this process may use (oversubscribed runtime pools
    spin and wait on each other: on 2 cores, 16 onnxruntime threads made p99 latency 50-100x worse)."""
    cores = available_cores()
    if threads is None or threads <= cores:
        return None
    return (f"warning: {threads} threads is more than the {cores} core{'s' if cores > 1 else ''} available to "
            f"this process (CPU affinity and cgroup quota): the runtime's threads will compete for them")


def machine_info() -> dict[str, Any]:
    """CPU model, core count, vector extensions and platform, for every published figure."""
    import platform

    cpu = _cpuinfo("model name") or platform.processor() or platform.machine()
    # the vector extensions that decide INT8 and bf16 speed (and which INT8 kernels ORT runs)
    flags = cpu_flags()
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8") if f in flags]
    return {"cpu": cpu, "cores": os.cpu_count(), "cores_available": available_cores(), "isa": isa,
            "platform": platform.platform(), "python": platform.python_version()}
