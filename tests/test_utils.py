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


# ---------------------------------------------------------------- no writable home (H8)


@pytest.fixture
def no_home(tmp_path, monkeypatch):
    """HOME that nobody can write into, root included (a file, as a broken image's HOME may be), no XDG_*
    folders and no EDGECIFAR_CACHE: `docker run --user 1234` on an image without that user. The temporary
    folder is one of this test's."""
    import tempfile

    (tmp_path / "home").write_text("")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "EDGECIFAR_CACHE"):
        monkeypatch.setenv(var, "")  # recorded, so that what the code under test sets is undone
        monkeypatch.delenv(var)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    return tmp_path


def test_an_unwritable_home_moves_caches_and_settings_to_a_private_temporary_folder(no_home, capsys):
    from edgecifar.utils import default_cache_dir, writable_homes

    writable_homes()
    private = no_home / "tmp" / f"edgecifar-{os.getuid()}"
    assert os.environ["XDG_CACHE_HOME"] == str(private / "cache")
    assert os.environ["XDG_CONFIG_HOME"] == str(private / "config")
    assert default_cache_dir() == private / "cache" / "edgecifar" and private.stat().st_mode & 0o777 == 0o700
    import torch.hub

    assert torch.hub.get_dir().startswith(str(private / "cache"))  # the libraries' caches follow
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"HOME ({no_home / 'home'}) cannot be written" in err


def test_home_unset_without_a_passwd_entry(no_home, monkeypatch):
    import pwd

    from edgecifar.utils import default_cache_dir

    monkeypatch.delenv("HOME")

    def no_entry(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", no_entry)  # what a uid unknown to the image's /etc/passwd gives
    assert default_cache_dir() == no_home / "tmp" / f"edgecifar-{os.getuid()}" / "cache" / "edgecifar"


def test_another_users_folder_in_tmp_is_never_used(no_home):
    from edgecifar.utils import writable_homes

    (no_home / "tmp" / f"edgecifar-{os.getuid()}").symlink_to(no_home / "elsewhere")  # planted, not ours
    writable_homes()
    assert os.path.realpath(os.environ["XDG_CACHE_HOME"]).startswith(str(no_home / "tmp" / "edgecifar-"))
    assert not (no_home / "elsewhere").exists()


def test_nothing_writable_is_one_line_naming_the_fix(no_home, monkeypatch, image_tree):
    import tempfile

    from edgecifar.data import load_data
    from edgecifar.errors import DataError

    monkeypatch.setattr(tempfile, "tempdir", str(no_home / "home" / "tmp"))  # under a file: cannot be made
    with pytest.raises(
        DataError,
        match=r"cannot write to the cache folder .*/home/.cache/edgecifar \(Not a "
        r"directory\): pass --cache-dir DIR, or set EDGECIFAR_CACHE",
    ):
        load_data(str(image_tree))
    monkeypatch.delenv("HOME")
    monkeypatch.setattr("pwd.getpwuid", lambda uid: {}[uid])  # and no home at all
    with pytest.raises(DataError, match=r"no folder to cache data in: HOME is unset .* pass --cache-dir DIR"):
        load_data(str(image_tree))
    with pytest.raises(
        DataError,
        match=r"cannot write to the cache folder .*/home/c \(Not a directory\): pass "
        r"--cache-dir",
    ):
        load_data(str(image_tree), no_home / "home" / "c")


def test_train_without_a_writable_home_trains(no_home, image_tree):
    """The command as `docker run --user` runs it: a process of its own, HOME unwritable, no --cache-dir."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "EDGECIFAR_CACHE")}
    env.update(HOME=str(no_home / "home"), TMPDIR=str(no_home / "tmp"), OMP_NUM_THREADS="1")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgecifar",
            "train",
            "--data",
            str(image_tree),
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--max-train",
            "16",
            "--out",
            str(no_home / "run"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "cannot be written: caches and settings go to" in done.stderr
    assert list((no_home / "tmp" / f"edgecifar-{os.getuid()}" / "cache" / "edgecifar" / "decoded").glob("*.npz"))


@pytest.mark.parametrize("value", ["abc", "0"])
def test_a_thread_count_that_is_no_number_is_one_note_not_a_library_warning(value):
    """Before torch loads OpenMP (which would print "libgomp: Invalid value ..." and ignore it)."""
    import subprocess
    import sys

    code = "from edgecifar.utils import checked_thread_variables; checked_thread_variables(); import torch"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "OMP_NUM_THREADS": value},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and "libgomp" not in done.stderr
    assert (
        done.stderr == f"note: OMP_NUM_THREADS={value!r} is not a whole number of threads (1 or more): ignored; "
        f"unset it or set one\n"
    )


def test_a_good_thread_count_is_kept(monkeypatch, capsys):
    from edgecifar.utils import checked_thread_variables

    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    checked_thread_variables()
    assert os.environ["OMP_NUM_THREADS"] == "2" and capsys.readouterr().err == ""
