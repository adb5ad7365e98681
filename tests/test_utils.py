"""The cores a process may use: CPU affinity, capped by a cgroup CPU quota (v2 cpu.max, v1 cfs quota),
read from file systems laid out in a temporary folder as Linux lays them out."""

from __future__ import annotations

import os

import pytest

from edgecifar.utils import available_cores, cgroup_cpu_quota, threads_warning


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_the_smallest_on_the_path(tmp_path):
    write(tmp_path / "proc", "0::/system.slice/job.scope\n")
    root = tmp_path / "cgroup"
    write(root / "system.slice" / "job.scope" / "cpu.max", "max 100000\n")  # no limit here...
    write(root / "system.slice" / "cpu.max", "150000 100000\n")  # ...but 1.5 CPUs on the parent
    assert cgroup_cpu_quota(tmp_path / "proc", root) == 1.5
    write(root / "system.slice" / "cpu.max", "max 100000\n")
    assert cgroup_cpu_quota(tmp_path / "proc", root) is None


def test_cgroup_v1_quota(tmp_path):
    write(tmp_path / "proc", "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n")
    folder = tmp_path / "cgroup" / "cpu,cpuacct" / "docker" / "abc"
    write(folder / "cpu.cfs_quota_us", "200000\n")
    write(folder / "cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_quota(tmp_path / "proc", tmp_path / "cgroup") == 2.0
    write(folder / "cpu.cfs_quota_us", "-1\n")
    assert cgroup_cpu_quota(tmp_path / "proc", tmp_path / "cgroup") is None


def test_no_cgroup_file_system(tmp_path):
    assert cgroup_cpu_quota(tmp_path / "missing", tmp_path) is None
    write(tmp_path / "proc", "garbage\n0::/\n")
    assert cgroup_cpu_quota(tmp_path / "proc", tmp_path / "none") is None


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="Linux only")
def test_available_cores_follow_the_affinity_and_warn_above_them():
    cores = available_cores()
    assert 1 <= cores <= len(os.sched_getaffinity(0))
    assert threads_warning(cores) is None and threads_warning(None) is None
    assert f"{cores + 1} threads is more than the {cores} core" in threads_warning(cores + 1)
