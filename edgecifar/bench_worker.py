"""The fresh-process half of `edgecifar bench`: measure one artifact at one thread setting.

    python -m edgecifar.bench_worker < job.json > result.json

Each measurement runs in its own process so that one runtime's thread pools, caches and allocator state
cannot disturb another's. Exported files go through `edgecifar.runtime.load_artifact` (the device path)
and never import torch (but ExecuTorch's Python runtime does, and says so in torch_imported); the PyTorch
baseline does.

Job (JSON on stdin): kind ("artifact" | "pytorch"), path (artifact) or run_dir (pytorch), threads,
exec_precision (OpenVINO hint or null), classes, expect (the manifest's model, format and precision, checked
against the file's metadata), data (an .npz with test_x/test_y, or null), accuracy (bool), batch_size,
latency_seconds (all trials together), latency_trials, throughput_seconds, warmup_seconds.
Result (JSON on stdout): ok, error, import_s, load_s, latency {p50_ms, p90_ms, p99_ms, mean_ms, iterations,
trials: [{p50_ms, p90_ms, p99_ms, mean_ms, iterations}]}, throughput_ips, accuracy {correct, images,
per_class_correct, per_class_total, seconds, hits (stats.pack_hits)} or null, threads_runtime, metadata,
torch_imported.

Latency is measured in `latency_trials` independent trials, each on a freshly loaded session (its own warm-up,
its own kernel choices and allocations) for an equal share of latency_seconds; the row's figures are the
medians of the trials' percentiles, and the trials are kept so that the spread and any ratio can be given
(edgecifar.stats).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from typing import Any, Callable

import numpy as np

MIN_LATENCY_ITERS = 20  # a percentile needs samples even when one call is slower than the budget
MAX_LATENCY_ITERS = 50_000
Runner = Callable[[np.ndarray], np.ndarray]


def measure(job: dict[str, Any]) -> dict[str, Any]:
    """Load, (optionally) count accuracy over the test set, time batch-1 latency and batch throughput."""
    threads = int(job["threads"])

    def load() -> tuple[Runner, dict[str, Any]]:
        if job["kind"] == "pytorch":
            return _load_pytorch(job["run_dir"], threads)
        return _load_artifact(
            job["path"], threads, job.get("exec_precision"), job.get("classes"), job.get("expect") or {}
        )

    run, info = load()
    x, y = _load_data(job.get("data"))
    batch = int(job["batch_size"])
    result: dict[str, Any] = {"ok": True, **info, "accuracy": None, **_isa_fields(info["metadata"])}
    warmup = float(job.get("warmup_seconds", 0.2))
    if job.get("accuracy"):
        result["accuracy"] = accuracy_pass(run, x, y, batch, len(job["classes"]))
    acc = result["accuracy"]
    if acc and acc["seconds"] >= float(job["throughput_seconds"]) and acc["images"] >= batch:
        # a pass over a real test set at batch size B doubles as this setting's throughput figure
        result["throughput_ips"] = acc["images"] / acc["seconds"]
        result["throughput_source"] = "accuracy pass"
    else:  # no pass, or one too short to time (a tiny test set)
        result["throughput_ips"] = throughput(run, _batch_of(x, batch), float(job["throughput_seconds"]), warmup)
        result["throughput_source"] = "timed loop"
    samples = [np.ascontiguousarray(x[i : i + 1]) for i in range(min(len(x), 64))]  # real images, batch 1
    trials = max(1, int(job.get("latency_trials", 1)))
    share = float(job["latency_seconds"]) / trials
    found = []
    for k in range(trials):
        if k:  # a fresh session: its own warm-up, kernel choices and allocations
            del run
            run = load()[0]
        found.append(latency(run, samples, share, warmup))
    result["latency"] = combine_trials(found)
    return result


def combine_trials(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """The row's latency: the median over trials of each percentile (the middle trial, robust to one
    disturbed trial), the calls counted over all trials, and the trials themselves."""
    merged: dict[str, Any] = {
        key: float(np.median([t[key] for t in trials])) for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms")
    }
    merged["min_ms"] = float(min(t["min_ms"] for t in trials))
    merged["iterations"] = int(sum(t["iterations"] for t in trials))
    merged["trials"] = trials
    return merged


def _isa_fields(metadata: dict[str, Any]) -> dict[str, Any]:
    """The INT8 path this process runs on (narrowed by the bench's cap, if any) and the VNNI warning."""
    from .isa import current_isa, isa_warning

    cpu = current_isa()
    return {"isa": cpu.record(), "isa_warning": isa_warning(metadata, cpu)}


def _load_artifact(
    path: str, threads: int, exec_precision: str | None, classes: list[str] | None, expect: dict[str, str]
) -> tuple[Runner, dict[str, Any]]:
    from .backends import backend_for
    from .errors import ArtifactError
    from .runtime import load_artifact

    started = time.perf_counter()
    backend = backend_for(path)
    try:
        importlib.import_module(backend.runtime)  # timed apart from loading: the import is not the model's cost
    except ImportError as e:
        raise ArtifactError(f"{backend.runtime} is not installed ({e.msg})") from e
    imported = time.perf_counter()
    artifact = load_artifact(path, threads=threads, precision=exec_precision)
    loaded = time.perf_counter()
    if classes is not None and artifact.classes != list(classes):
        raise ArtifactError(f"{path}: its class names differ from the manifest's")
    for key, label in expect.items():  # a label edited in the manifest must not rename the row
        if artifact.metadata.get(key) not in (None, label):
            raise ArtifactError(
                f"the manifest says {key} '{label}', the file's own metadata '{artifact.metadata[key]}'"
            )
    meta = {
        k: artifact.metadata.get(k)
        for k in ("model", "img_size", "num_classes", "precision", "source_run", "int8_isa", "int8_weight_bits")
    }
    figures = getattr(artifact.backend, "device_figures", None)  # a backend's own figures (TFLite Micro's arena)
    return artifact.run, {
        "import_s": imported - started,
        "load_s": loaded - imported,
        "metadata": meta,
        "threads_runtime": _runtime_threads(artifact),
        **({"device": figures(artifact.session)} if figures else {}),
    }


def _runtime_threads(artifact: Any) -> int | None:
    """The thread count the runtime reports it will use (checks that the pin took effect)."""
    try:
        return artifact.backend.threads_used(artifact.session)
    except Exception:  # a reporting nicety only: never fail a measurement over it
        return None


def _load_pytorch(run_dir: str, threads: int) -> tuple[Runner, dict[str, Any]]:
    started = time.perf_counter()
    import torch

    # both pools, before any parallel work: the interop pool can only be sized once per process (a later
    # trial's fresh load finds it sized)
    torch.set_num_threads(threads)
    if torch.get_num_interop_threads() != threads:
        torch.set_num_interop_threads(threads)
    from .runs import load_run

    imported = time.perf_counter()
    model = load_run(run_dir)
    loaded = time.perf_counter()

    def run(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(images)).float().numpy()

    meta = {"model": model.meta.model, "img_size": model.meta.img_size, "num_classes": model.meta.num_classes}
    return run, {
        "import_s": imported - started,
        "load_s": loaded - imported,
        "metadata": meta,
        "threads_runtime": torch.get_num_threads(),
    }


def _load_data(path: str | None) -> tuple[np.ndarray, np.ndarray]:
    if not path:
        from .errors import BenchError

        raise BenchError("the job names no test data")
    with np.load(path, allow_pickle=False) as z:
        return np.ascontiguousarray(z["test_x"]), z["test_y"].astype(np.int64)


def _batch_of(x: np.ndarray, batch: int) -> np.ndarray:
    """The first `batch` images (repeated when the test set is smaller), contiguous."""
    reps = -(-batch // len(x))
    return np.ascontiguousarray(np.concatenate([x] * reps)[:batch] if reps > 1 else x[:batch])


def accuracy_pass(run: Runner, x: np.ndarray, y: np.ndarray, batch: int, num_classes: int) -> dict[str, Any]:
    """Top-1 over every image, per-class counts, which images were right (packed bits, in test-set order),
    and the seconds the timed pass took."""
    run(_batch_of(x, batch))  # warm-up: first calls allocate and pick kernels
    started = time.perf_counter()
    preds = np.concatenate([run(x[i : i + batch]).argmax(1) for i in range(0, len(x), batch)])
    seconds = time.perf_counter() - started
    hits = preds == y
    from .stats import pack_hits

    return {
        "correct": int(hits.sum()),
        "images": int(len(y)),
        "seconds": seconds,
        "per_class_correct": np.bincount(y[hits], minlength=num_classes).tolist(),
        "per_class_total": np.bincount(y, minlength=num_classes).tolist(),
        "hits": pack_hits(hits),
    }


def throughput(run: Runner, images: np.ndarray, seconds: float, warmup: float) -> float:
    """Images per second at batch len(images), over about `seconds` after a warm-up."""
    _spin(run, [images], warmup, 2)
    calls, elapsed = _spin(run, [images], seconds, 3)
    return calls * len(images) / elapsed


def latency(run: Runner, samples: list[np.ndarray], seconds: float, warmup: float) -> dict[str, Any]:
    """Batch-1 latency percentiles over about `seconds` of back-to-back calls, after a warm-up."""
    _spin(run, samples, warmup, 5)
    times: list[int] = []
    end = time.perf_counter() + seconds
    i = 0
    while (time.perf_counter() < end or i < MIN_LATENCY_ITERS) and i < MAX_LATENCY_ITERS:
        sample = samples[i % len(samples)]
        t0 = time.perf_counter_ns()
        run(sample)
        times.append(time.perf_counter_ns() - t0)
        i += 1
    ms = np.asarray(times, dtype=np.float64) / 1e6
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "mean_ms": float(ms.mean()),
        "min_ms": float(ms.min()),
        "iterations": int(len(ms)),
    }


def _spin(run: Runner, inputs: list[np.ndarray], seconds: float, min_calls: int) -> tuple[int, float]:
    calls, started = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - started < seconds:
        run(inputs[calls % len(inputs)])
        calls += 1
    return calls, time.perf_counter() - started


def _one_line(error: BaseException) -> str:
    from .backends import error_text

    return f"{type(error).__name__}: {error_text(error)}"


def die_with_parent() -> None:
    """Linux: have the kernel kill this worker when the bench that started it dies, however it dies (even by
    SIGKILL, which the bench cannot catch), instead of measuring on as an orphan. The bench names itself in
    EDGECIFAR_BENCH_PARENT; if it is already gone, exit now."""
    parent = os.environ.get("EDGECIFAR_BENCH_PARENT")
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if str(os.getppid()) != parent:  # the parent died before the request took effect
        os._exit(128 + signal.SIGKILL)


def main() -> int:
    die_with_parent()
    # runtimes and plugins may print; the result must be the only thing on stdout
    result_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        from .errors import EdgecifarError

        job = json.loads(sys.stdin.read())
        try:
            result = measure(job)
        except EdgecifarError as e:
            result = {"ok": False, "error": str(e)}
        except Exception as e:  # any runtime failure becomes this row's error, never a crash of the bench
            result = {"ok": False, "error": _one_line(e)}
        result["torch_imported"] = "torch" in sys.modules
        payload = json.dumps(result)
    except Exception as e:  # a malformed job
        payload = json.dumps({"ok": False, "error": f"bad job: {_one_line(e)}"})
    with os.fdopen(result_fd, "w") as out:
        out.write(payload + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
