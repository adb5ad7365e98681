"""Small shared helpers: atomic writes, a full disk, termination signals, staging folders, hashing, versions,
the cores a process may use. Stdlib only: the device-side runtime imports it."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import shutil
import signal
import socket
import stat
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from .errors import DataError, DiskFullError
from .records import RunConfig

# errno -> what it means for the user: a write that failed for lack of room
NO_ROOM = {
    getattr(errno, "EDQUOT", errno.ENOSPC): "the disk quota is exceeded",  # (Windows has no EDQUOT)
    errno.ENOSPC: "the disk is full",
    errno.EFBIG: "the file-size limit is reached (ulimit -f, or the file system's largest file)",
}


def no_room(error: BaseException | None) -> OSError | None:
    """The write that failed for lack of room (ENOSPC, EDQUOT, EFBIG) if `error` is one or was caused by one
    (NO_ROOM[its errno] says what ran out); else None."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in NO_ROOM:
            return error
        error = error.__cause__ or error.__context__
    return None


@contextlib.contextmanager
def atomic_path(final: Path | str, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it over `final` only if the block succeeds.

    Nobody ever sees a half-written file: a crash or an exception leaves `final` untouched. A write that fails
    for lack of room (ENOSPC, EDQUOT, EFBIG) raises DiskFullError, which says so and names `final`.
    """
    final = Path(final)
    tmp_path = None
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix or final.suffix, dir=final.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        os.replace(tmp_path, final)
    except OSError as e:
        if (full := no_room(e)) is None:
            raise
        raise DiskFullError(f"{NO_ROOM[full.errno]}: could not write {final}; no file was replaced") from e
    finally:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)


def json_safe(data: Any) -> Any:
    """`data` with every NaN and infinity replaced by None (JSON null): strict JSON has no such numbers."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: json_safe(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_safe(v) for v in data]
    return data


def write_json(path: Path | str, data: Any) -> None:
    """Write strict JSON atomically (NaN and infinities become null)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(json_safe(data), indent=2, sort_keys=False, allow_nan=False) + "\n")


_SIGNAL_STACK: list[Any] = []  # the alternate signal stack we own, kept alive for the life of the process


def restore_signal_stack() -> None:
    """Point the main thread's alternate signal stack, where Python's signal handlers run (SA_ONSTACK), at memory
    we own. OpenVINO's CPU plugin (2026.4) swaps in a stack of its own for each compiled model and swaps back when
    the model is destroyed; models destroyed out of order leave the thread on freed memory, and the next signal
    (Ctrl-C, SIGTERM) then kills the process with SIGSEGV before any cleanup. Linux (glibc) only; a no-op
    elsewhere and off the main thread."""
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return
    import ctypes

    class StackT(ctypes.Structure):  # stack_t
        _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]

    try:
        if not _SIGNAL_STACK:
            _SIGNAL_STACK.append(ctypes.create_string_buffer(1 << 16))  # 64 KiB: many times MINSIGSTKSZ
        stack = _SIGNAL_STACK[0]
        ctypes.CDLL(None).sigaltstack(ctypes.byref(StackT(ctypes.addressof(stack), 0, len(stack))), None)
    except (OSError, AttributeError):  # no sigaltstack in this C library: nothing to restore
        pass


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C so that every `finally` and cleanup runs."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP (`kill`, `timeout`, `docker stop`, a closed terminal) raise
    Terminated, a KeyboardInterrupt: temporary files and half-made folders are cleaned up as on Ctrl-C instead
    of being left behind by a process killed outright. Only the first signal raises, so a second one cannot
    cut the cleanup short. A no-op off the main thread (Python runs signal handlers there only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    restore_signal_stack()
    raised = []

    def handler(signum: int, _frame) -> None:
        if not raised:
            raised.append(signum)
            raise Terminated(signum)

    signals = [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None]
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


@contextlib.contextmanager
def _flock(path: Path, blocking: bool = True) -> Iterator[bool]:
    """An exclusive flock on a file or folder (POSIX); yields whether it was taken (always True if blocking).
    Elsewhere yields True without locking."""
    try:
        import fcntl
    except ImportError:
        yield True
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            taken = True
        except BlockingIOError:
            taken = False
        yield taken
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def staging_folder(parent: Path, prefix: str = ".staging-") -> Iterator[Path]:
    """A new folder `parent/<prefix>XXXXXXXX`, held (flock) while the block runs and removed after it.

    Folders of that prefix that no process holds are what a killed process (SIGKILL, a power cut) left
    behind: they are removed first. Creating and sweeping happen under a lock on `parent`, so a concurrent
    process never sees another's folder before it is held.
    """
    parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        with _flock(parent):
            for old in parent.glob(f"{prefix}*"):
                _remove_if_free(old)
            folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
            stack.callback(shutil.rmtree, folder, ignore_errors=True)
            stack.enter_context(_flock(folder))
        yield folder


def _remove_if_free(folder: Path) -> None:
    if not folder.is_dir() or folder.is_symlink():
        return
    with contextlib.suppress(OSError), _flock(folder, blocking=False) as free:
        if free:
            shutil.rmtree(folder, ignore_errors=True)


_HELD: dict[Path, int] = {}  # folders this process holds (take_folder) -> the descriptor of their lock file


def take_folder(folder: Path, lock: str) -> str | None:
    """Hold `folder` for this process: an exclusive flock on folder/`lock` (made if missing), which records who
    holds it, until release_folder or the end of the process in any way (the system drops the lock, SIGKILL
    included). Taking a folder this process holds is a no-op. Returns None once held, or, when another process
    holds it, what its lock file says ("pid 1234 on host, `edgecifar train ...`, since ..."). POSIX; elsewhere
    nothing is locked."""
    key = folder.resolve()
    if key in _HELD:
        if _same_file(_HELD[key], folder / lock):
            return None
        os.close(_HELD.pop(key))  # the folder was removed (and made again) since: its old lock is gone
    try:
        import fcntl
    except ImportError:
        return None
    while True:
        fd = os.open(folder / lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_text(fd)
            os.close(fd)
            return holder
        if _same_file(fd, folder / lock):
            break
        os.close(fd)  # its holder removed it as we opened it: take the new one
    os.ftruncate(fd, 0)
    program = "edgecifar" if Path(sys.argv[0]).name in ("edgecifar", "__main__.py") else Path(sys.argv[0]).name
    os.write(
        fd,
        f"pid {os.getpid()} on {socket.gethostname()}, `{' '.join([program, *sys.argv[1:]])[:300]}`, "
        f"since {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n".encode(),
    )
    _HELD[key] = fd
    return None


def release_folder(folder: Path, lock: str) -> None:
    """Let go of a folder this process holds (take_folder): its lock file is removed, then unlocked, so that
    nobody can take a lock file about to disappear. Nothing if this process does not hold it."""
    fd = _HELD.pop(folder.resolve(), None)
    if fd is None:
        return
    try:
        if _same_file(fd, folder / lock):
            (folder / lock).unlink()
    except OSError:
        pass
    finally:
        os.close(fd)


def folder_holder(folder: Path, lock: str) -> str | None:
    """What the lock file of `folder` says of its holder when a process other than this one holds it; else None."""
    if folder.resolve() in _HELD or not (folder / lock).is_file():
        return None
    try:
        import fcntl

        fd = os.open(folder / lock, os.O_RDONLY)
    except (ImportError, OSError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # granted only while nobody holds it
        return None
    except BlockingIOError:
        return _holder_text(fd)
    finally:
        os.close(fd)  # closing drops this probe's shared lock


def _holder_text(fd: int) -> str:
    try:
        text = os.pread(fd, 1000, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "a process that has not said which yet"


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def data_source(config: RunConfig | None, data: str | None = None) -> str:
    """The data a trained run is exported, evaluated or benched with: `data` if given, else the source its
    training recorded (config: its config.json; None: none read). DataError, naming --data, if none is recorded
    or the recorded one is gone."""
    if data:
        return data
    source = ((config.data or {}).get("source") or (config.train or {}).get("data")) if config else None
    if not source:
        raise DataError("the run's config.json records no data source: pass --data")
    if source != "cifar10" and not Path(source).expanduser().exists():
        relative = "" if Path(source).expanduser().is_absolute() else " (relative to where it was trained)"
        raise DataError(
            f"the data this run was trained on, {source}{relative}, is not there: pass --data with where it is now"
        )
    return source


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


CACHE_FIX = "pass --cache-dir DIR, or set EDGECIFAR_CACHE (or XDG_CACHE_HOME), to a folder you can write"


def default_cache_dir() -> Path:
    """Where downloads and decoded data are cached without --cache-dir: EDGECIFAR_CACHE, else
    $XDG_CACHE_HOME/edgecifar, else ~/.cache/edgecifar, else (no writable home: `docker run --user`, a service
    account) a private folder in the temporary folder (writable_homes). DataError, one line naming the paths
    and CACHE_FIX, when none can be written."""
    env = os.environ.get("EDGECIFAR_CACHE")
    if env:
        return Path(env)
    writable_homes()
    base = os.environ.get("XDG_CACHE_HOME") or (str(home / ".cache") if (home := _home()) else None)
    if base is None:
        raise DataError(
            f"no folder to cache data in: HOME is {_home_text()} and no temporary folder can be written; {CACHE_FIX}"
        )
    return Path(base) / "edgecifar"


def usable_dir(folder: Path, what: str, fix: str) -> Path:
    """`folder`, made if missing, once a file can be written in it; DataError naming it, why and `fix` else."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as e:
        raise DataError(f"cannot write to the {what} {folder} ({e.strerror or type(e).__name__}): {fix}") from None
    return folder


_HOMES = (("XDG_CACHE_HOME", ".cache"), ("XDG_CONFIG_HOME", ".config"))


def writable_homes() -> None:
    """Make the per-user folders that edgecifar and its libraries write by default usable: when
    XDG_CACHE_HOME / XDG_CONFIG_HOME are unset and ~/.cache / ~/.config cannot be written (no home, or a
    read-only one), point them at a private folder in the temporary folder, and say so once on stderr.
    Through them go edgecifar's cache, torch hub's and timm's (Hugging Face) downloads, torch's compiled
    extensions (NNCF's) and matplotlib's settings. Where even that cannot be made, nothing changes: the
    folder that is needed is refused by name where it is used (default_cache_dir, usable_dir)."""
    home, moved = _home(), []
    for var, default in _HOMES:
        if os.environ.get(var) or (home is not None and _writable(home / default)):
            continue
        fallback = _private_temp()
        if fallback is None:
            return
        os.environ[var] = str(fallback / default.lstrip("."))
        moved.append(f"{var}={os.environ[var]}")
    if moved:
        print(
            f"note: HOME ({_home_text()}) cannot be written: caches and settings go to {', '.join(moved)}; set "
            f"them (or pass --cache-dir) to keep them elsewhere",
            file=sys.stderr,
        )


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def checked_thread_variables() -> None:
    """Remove thread-count variables that are not a whole number >= 1 ("abc", "0", "-3": a template left unfilled,
    a job script's mistake) from the environment before a library reads them, with one note each: libgomp (loaded
    with torch) prints "Invalid value for environment variable OMP_NUM_THREADS" and goes on with its default,
    which is what happens here too, said in our words."""
    for var in THREAD_VARIABLES:
        value = os.environ.get(var)
        if value is None or (value.strip().isdigit() and int(value) >= 1):
            continue
        del os.environ[var]
        print(
            f"note: {var}={value!r} is not a whole number of threads (1 or more): ignored; unset it or set one",
            file=sys.stderr,
        )


def _home() -> Path | None:
    """HOME, else the password database's home; None when neither names one."""
    try:
        return Path.home()
    except (RuntimeError, KeyError):  # no HOME and no passwd entry for this uid (`docker run --user 1234`)
        return None


def _home_text() -> str:
    return os.environ["HOME"] if os.environ.get("HOME") else "unset"


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            return True
    except OSError:
        return False


def _private_temp() -> Path | None:
    """A folder of this user's in the temporary folder (mode 700, owned by us: another user's folder of the
    name is never used), or None when none can be made."""
    try:
        folder = Path(tempfile.gettempdir()) / f"edgecifar-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)
        st = folder.lstat()  # not a link, and ours
        if not stat.S_ISDIR(st.st_mode) or (hasattr(os, "getuid") and st.st_uid != os.getuid()):
            folder = Path(tempfile.mkdtemp(prefix="edgecifar-"))
        return folder
    except OSError:  # tempfile.gettempdir raises FileNotFoundError when no temporary folder is writable
        return None


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
    """The CPU's feature flags (empty where /proc/cpuinfo is not). Decisions read them through edgecifar.isa's
    `cpu_flags`, which a test or a user can override."""
    return set((_cpuinfo("flags") or "").split())


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
    return (
        f"warning: {threads} threads is more than the {cores} core{'s' if cores > 1 else ''} available to "
        f"this process (CPU affinity and cgroup quota): the runtime's threads will compete for them"
    )


def machine_info() -> dict[str, Any]:
    """CPU model, core count, vector extensions and platform, for every published figure."""
    import platform

    cpu = _cpuinfo("model name") or platform.processor() or platform.machine()
    # the vector extensions that decide INT8 and bf16 speed (and which INT8 kernels ORT runs)
    flags = cpu_flags()
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8") if f in flags]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_available": available_cores(),
        "isa": isa,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
