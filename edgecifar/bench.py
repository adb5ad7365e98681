"""`edgecifar bench`: accuracy, size, parameters, MACs, latency, throughput and load time of every exported
artifact (and the PyTorch baseline of its run), each measured by its own runtime in a fresh process.

Plan per artifact: the first process runs at the largest thread count and counts accuracy over the whole
test set (accuracy does not depend on threads; that pass at --batch-size is also its throughput); every other
thread setting gets its own fresh process for throughput (a timed loop) and batch-1 latency. Results go to
`<out>/bench.{json,csv,md,png}`, all four or none.

What makes a row's figures comparable (edgecifar.stats, docs/statistics.md): top-1 with its Wilson 95 %
interval; which test images the file got right (packed bits) with the test set's fingerprint, so that any two
rows can be compared later with a paired test; batch-1 latency from `latency_trials` independent trials (a fresh
session each), the median of the trials with their min-max; the CPU model and ISA of every row.

Stopping: Ctrl-C, SIGTERM and SIGHUP stop the bench and its running worker at once (one line, no result file);
a worker also dies with its bench if that is killed outright (Linux).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .backends import BACKENDS, backend_for
from .bench_rows import BenchResult
from .bench_targets import Target, check_device, parse_threads, resolve_targets
from .contract import Size, size_text
from .errors import BenchError, DataError, UsageError
from .isa import cap_command, current_isa, emulated, isa_variants, parse_isa
from .records import BenchRow
from .stats import busy_note, per_image_record, spread, test_set_fingerprint, wilson_interval
from .utils import library_versions, machine_info, read_json, terminate_as_interrupt, threads_warning

DEFAULT_OUT = Path("benchmarks/results")
VERSIONED = tuple(
    dict.fromkeys(("edgecifar", "numpy", "torch", "timm", *(lib for b in BACKENDS.values() for lib in b.libraries)))
)
LATENCY_TRIALS = 5  # independent batch-1 trials per row (a fresh session each): the spread a row reports
STARTUP_S = {"pytorch": 3.0, **{name: b.startup_s for name, b in BACKENDS.items()}}  # for the ETA only
Log = Callable[[str], None]


@dataclass(frozen=True)
class BenchOptions:
    """How `bench` measures: `edgecifar bench`'s options. Times in seconds."""

    device: str = "cpu"
    threads: Sequence[int] | str = (1, 2)  # the runtimes' thread counts: a row per count ("1,2" as on the CLI)
    batch_size: int = 64  # the throughput rows' batch
    out_dir: Path | str = DEFAULT_OUT  # where bench.{json,csv,md,png} go
    data: str | None = None  # the test set; None: each run's own data
    cache_dir: Path | str | None = None
    runs_dir: Path | str | None = "runs"  # the source runs (PyTorch baseline, test set)
    baseline: bool = True  # a row for each source run's PyTorch model
    bf16: bool = False  # rows of the OpenVINO FP32 files executed in bf16
    max_images: int | None = None  # accuracy on a seeded subset of the test set
    latency_seconds: float = 1.5  # batch-1 timing per row, shared by its trials
    throughput_seconds: float = 1.0  # batch timing per extra setting
    reuse: bool = False  # return a complete earlier result for exactly these files and settings
    show_progress: bool = False
    isa: Sequence[str] | str = ("native",)  # "native" and/or a narrower INT8 path (edgecifar.isa.CAPS)
    latency_trials: int = LATENCY_TRIALS  # independent batch-1 trials per row, each on a fresh session
    notes: Sequence[str] = ()  # the caller's own notes for the header (e.g. "measured on a shared CPU")


def bench(
    paths: Sequence[Path | str] | Path | str = ("exported",),
    options: BenchOptions | None = None,
    *,
    log: Log | None = None,
    **overrides: Any,
) -> BenchResult:
    """Measure every artifact of the manifests/files in `paths` and write the reports into `options.out_dir`.

    options: how (BenchOptions; its defaults when None); `overrides`, BenchOptions' fields by name, override it
    (`bench([folder], threads=(1,), out_dir=...)`; a name BenchOptions lacks is a TypeError).
    reuse: when `out_dir` already holds a complete result for exactly these files and settings, return it
    without measuring (the pipeline's skip). isa: "native" and/or a narrower INT8 path (edgecifar.isa.CAPS,
    "avx2"): each artifact gets a row per path; every row records the ISA it ran on. What is left out
    (invalid manifest entries, files no manifest lists, artifacts not in this checkout) and thread counts above
    the cores available are logged as warnings and kept in the header's `notes`, after the caller's own.
    latency_seconds: batch-1 timing per row, shared by its `latency_trials` trials. Raises UsageError for bad
    options, BenchError when nothing could be measured, KeyboardInterrupt (utils.Terminated for SIGTERM/SIGHUP)
    when stopped, after stopping the worker.
    """
    opts = replace(options or BenchOptions(), **overrides)
    log = log or (lambda _msg: None)
    check_device(opts.device)
    thread_list = parse_threads(opts.threads)
    if (
        opts.batch_size < 1
        or (opts.max_images is not None and opts.max_images < 1)
        or opts.latency_seconds <= 0
        or opts.throughput_seconds <= 0
        or opts.latency_trials < 1
    ):
        raise UsageError("--batch-size, --max-images, --latency-trials and the timing budgets must be positive")
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    targets, found_notes = resolve_targets(paths, opts.runs_dir, opts.baseline, opts.bf16, opts.data, opts.cache_dir)
    notes = [*opts.notes, *found_notes]
    isa_paths = parse_isa(opts.isa)
    targets += isa_variants(targets, [p for p in isa_paths if p != "native"])
    notes += [w for n in thread_list if (w := threads_warning(n))]
    for note in notes:
        log(note if note.startswith("warning:") else f"warning: {note}")
    if not targets:  # every entry was broken or left out: the notes say why
        raise BenchError(
            f"nothing to measure: {notes[0] if notes else 'no artifacts'}"
            + (f" (and {len(notes) - 1} more)" if len(notes) > 1 else "")
        )
    out_dir = Path(opts.out_dir)
    settings = {
        "device": opts.device,
        "threads": list(thread_list),
        "isa": isa_paths,
        "batch_size": opts.batch_size,
        "max_images": opts.max_images,
        "latency_seconds": opts.latency_seconds,
        "latency_trials": opts.latency_trials,
        "throughput_seconds": opts.throughput_seconds,
        "data": opts.data,
    }
    key = _request_key(targets, settings)
    if opts.reuse and (previous := _previous_result(out_dir, key)) is not None:
        log(f"bench: {out_dir / 'bench.json'} is current for these files and settings; not measured again")
        return previous
    created = _check_writable(out_dir)
    try:
        with terminate_as_interrupt():  # SIGTERM/SIGHUP as Ctrl-C: the worker is stopped, nothing is written
            return _measure_and_write(targets, thread_list, settings, key, notes, out_dir, opts.show_progress, log)
    except BaseException:
        for folder in reversed(created):  # leave no empty result folders behind
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise


def _measure_and_write(
    targets: list[Target],
    thread_list: tuple[int, ...],
    settings: dict[str, Any],
    key: str,
    notes: list[str],
    out_dir: Path,
    show_progress: bool,
    log: Log,
) -> BenchResult:
    from .report import write_reports

    started, loads = time.perf_counter(), [_load_average()]
    with tempfile.TemporaryDirectory(prefix="edgecifar-bench-") as tmp:
        test_sets = _prepare_data(targets, settings["max_images"], Path(tmp))
        for test_set in test_sets.values():
            if test_set["empty_classes"]:
                notes.append(
                    f"the test set {test_set['source']} has no images of "
                    f"{', '.join(map(repr, test_set['empty_classes']))}: per-class accuracy n/a"
                )
                log(f"warning: {notes[-1]}")
        measured = _measure_all(targets, thread_list, settings, test_sets, show_progress, log)
    rows = _rows(targets, thread_list, measured, test_sets, settings)
    if not any(r.status == "ok" for r in rows):
        reasons = list(dict.fromkeys(f"{r.model} {r.variant}: {r.reason}" for r in rows))
        more = f" (and {len(reasons) - 3} more)" if len(reasons) > 3 else ""
        raise BenchError(f"nothing could be measured: {'; '.join(reasons[:3])}{more}")
    loads.append(_load_average())
    if (busy := busy_note(loads, machine_info()["cores_available"])) is not None:
        notes.append(busy)
        log(f"warning: {busy}")
    header = _header(settings, key, time.perf_counter() - started, notes)
    header["load_average"] = loads
    result = BenchResult(rows, header)
    result.files = write_reports(header, rows, out_dir)
    return result


def _check_writable(out_dir: Path) -> list[Path]:
    """Fail before measuring anything if the reports could not be written; returns the folders created."""
    created = [f for f in (out_dir, *out_dir.parents) if not f.exists()][::-1]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-test-"):
            pass
    except OSError as e:
        for folder in reversed(created):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise BenchError(f"cannot write the bench results to {out_dir}: {e.strerror or e}") from None
    return created


def _request_key(targets: list[Target], settings: dict[str, Any]) -> str:
    import hashlib

    what = [[t.variant, t.model, t.source_run, t.sha256, t.status, t.data] for t in targets]
    return hashlib.sha256(json.dumps([what, settings], sort_keys=True, default=str).encode()).hexdigest()[:16]


def _previous_result(out_dir: Path, key: str) -> BenchResult | None:
    from .report import REPORT_FILES

    files = {kind: out_dir / name for kind, name in REPORT_FILES.items()}
    if not all(f.is_file() for f in files.values()):
        return None
    try:
        previous = read_json(files["json"])
    except (OSError, ValueError):
        return None
    if not isinstance(previous, dict) or previous.get("header", {}).get("key") != key:
        return None
    result = BenchResult.from_json(previous)
    if result.unread:  # not a result bench wrote: measure again
        return None
    result.files, result.reused = files, True
    return result


def _prepare_data(targets: list[Target], max_images: int | None, tmp: Path) -> dict[str, dict[str, Any]]:
    """Load each test set once, check its classes, keep the (seeded) subset, save it for the workers."""
    from .data import load_data

    sets: dict[str, dict[str, Any]] = {}
    for target in targets:
        if target.status != "ok":
            continue
        key = target.test_set  # one load per source and size: runs may name different caches of the same data
        if key not in sets:
            splits = load_data(target.data, target.cache_dir, input_size=target.input_size)
            x, y = splits.test_x, splits.test_y
            if len(y) == 0:
                raise DataError(f"{target.data} has no test images")
            if max_images and max_images < len(y):  # a seeded draw: the same images on every run
                keep = np.sort(np.random.default_rng(0).permutation(len(y))[:max_images])
                x, y = x[keep], y[keep]
            file = tmp / f"test-{len(sets)}.npz"
            np.savez(file, test_x=x, test_y=y)
            counts = np.bincount(y, minlength=len(splits.classes))
            sets[key] = {
                "file": str(file),
                "classes": list(splits.classes),
                "images": int(len(y)),
                "source": splits.source,
                "fingerprint": splits.fingerprint,
                "test_set": test_set_fingerprint(y, x, splits.classes),
                "empty_classes": [c for c, n in zip(splits.classes, counts) if n == 0],
            }
        if sets[key]["classes"] != target.classes:
            target.skip(f"the test set {target.data} has classes {sets[key]['classes']}, the model {target.classes}")
    return sets


def _jobs(
    targets: list[Target], threads: tuple[int, ...], settings: dict[str, Any], test_sets: dict[str, dict[str, Any]]
) -> list[tuple[Target, int, dict[str, Any]]]:
    jobs = []
    for target in targets:
        if target.status != "ok":
            continue
        test_set = test_sets[target.test_set]
        # the largest thread count first: it runs the accuracy pass, the one long job of each artifact
        for i, n in enumerate(sorted(threads, reverse=True)):
            if i and target.isa_cap and emulated(target):
                break  # an emulator's timings are not the CPU's: its one job is the accuracy pass
            jobs.append(
                (
                    target,
                    n,
                    {
                        "isa_cap": target.isa_cap,
                        "kind": "pytorch" if target.format == "pytorch" else "artifact",
                        "path": str(target.path),
                        "run_dir": str(target.run_dir) if target.run_dir else None,
                        "threads": n,
                        "exec_precision": target.exec_precision,
                        "classes": target.classes,
                        "data": test_set["file"],
                        # the manifest's labels, checked against the file's own metadata by the worker
                        "expect": {"model": target.model, "format": target.format, "precision": target.precision},
                        "accuracy": i == 0,
                        "batch_size": settings["batch_size"],
                        "latency_seconds": settings["latency_seconds"],
                        "latency_trials": settings["latency_trials"],
                        "throughput_seconds": settings["throughput_seconds"],
                        "warmup_seconds": 0.2,
                        "images": test_set["images"],
                    },
                )
            )
    return jobs


def _estimate(job: dict[str, Any], target: Target) -> float:
    """Expected seconds of a job: the weights of the progress bar, from which the remaining time is estimated."""
    work = job["images"] / 1500 if job["accuracy"] else job["throughput_seconds"]
    return STARTUP_S.get(target.format, 1.0) + 0.6 * job["latency_trials"] + job["latency_seconds"] + work


def _measure_all(
    targets: list[Target],
    threads: tuple[int, ...],
    settings: dict[str, Any],
    test_sets: dict[str, dict[str, Any]],
    show_progress: bool,
    log: Log,
) -> dict[tuple[int, int], dict[str, Any]]:
    jobs = _jobs(targets, threads, settings, test_sets)
    results: dict[tuple[int, int], dict[str, Any]] = {}
    with _progress(show_progress, sum(_estimate(j, t) for t, _, j in jobs)) as progress:
        for target, n, job in jobs:
            what = f"{target.model} {target.variant} @{n} thread{'s' if n > 1 else ''}"
            progress.describe(what + (" (accuracy)" if job["accuracy"] else ""))
            first = results.get((id(target), max(threads)))
            if first is not None and not first.get("ok"):  # its first process failed: the others would too
                results[(id(target), n)] = first
            else:
                results[(id(target), n)] = run_worker(job, n)
            res = results[(id(target), n)]
            line = (
                f"{what}: p50 {res['latency']['p50_ms']:.3f} ms, {res['throughput_ips']:.0f} img/s"
                if res.get("ok")
                else f"{what}: failed: {res.get('error')}"
            )
            progress.advance(_estimate(job, target), line, log)
    return results


def run_worker(job: dict[str, Any], threads: int) -> dict[str, Any]:
    """One job in a fresh Python process with its thread count pinned (env for OpenMP/BLAS pools too), on the
    job's INT8 path (`isa_cap`: oneDNN's cap, or an emulator for ONNX Runtime)."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    package_root = str(Path(__file__).resolve().parents[1])  # the same edgecifar, wherever we run from
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env["EDGECIFAR_BENCH_PARENT"] = str(os.getpid())  # the worker dies with this process (bench_worker.main)
    # a backend may say its runtime is slow per image (TFLite Micro's reference kernels: tens of ms)
    per_image = getattr(backend_for(job["path"]), "seconds_per_image", 0.03) if job["kind"] == "artifact" else 0.03
    timeout = 120 + 10 * (job["latency_seconds"] + job["throughput_seconds"]) + per_image * job["images"]
    prefix: list[str] = []
    if job.get("isa_cap"):
        try:
            cap_env, prefix, slow = cap_command(job["isa_cap"], backend_for(job["path"]).name)
        except LookupError as e:
            return {"ok": False, "error": str(e)}
        how = " ".join(f"{k}={v}" for k, v in cap_env.items()) or " ".join([Path(prefix[0]).name, *prefix[1:]])
        env.update(cap_env, EDGECIFAR_ISA_CAP=job["isa_cap"], EDGECIFAR_ISA_CAP_HOW=how)
        timeout *= 200 if slow else 1  # QEMU's user-mode emulation runs this code 100-150x slower
    try:  # on any exception here (Ctrl-C, utils.Terminated) subprocess.run kills the worker and waits for it
        proc = subprocess.run(
            [*prefix, sys.executable, "-m", "edgecifar.bench_worker"],
            input=json.dumps(job),
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout:.0f}s"}
    lines = proc.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        err = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return {"ok": False, "error": f"worker exited with code {proc.returncode}: {err[-1] if err else 'no output'}"}


class _progress:
    """A rich progress bar with the remaining time (on stderr), or plain log lines without one."""

    def __init__(self, show: bool, total: float):
        self.show, self.total, self.bar = show, total, None

    def __enter__(self) -> "_progress":
        if self.show:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self.bar.__enter__()
            self.task = self.bar.add_task("bench", total=self.total)
        return self

    def describe(self, text: str) -> None:
        if self.bar:
            self.bar.update(self.task, description=text)

    def advance(self, amount: float, line: str, log: Log) -> None:
        if self.bar:
            self.bar.console.print(line, highlight=False)
            self.bar.advance(self.task, amount)
        else:
            log(line)

    def __exit__(self, *exc) -> None:
        if self.bar:
            self.bar.__exit__(*exc)


def _rows(
    targets: list[Target], threads: tuple[int, ...], measured: dict, test_sets: dict, settings: dict[str, Any]
) -> list[BenchRow]:
    """One row per target and thread setting (skipped and failed ones too, with their reason)."""
    machine, date = machine_info(), datetime.now(timezone.utc).isoformat(timespec="seconds")
    isa_record = current_isa().record()
    versions = library_versions(*VERSIONED)
    stats = _model_stats(targets, measured)
    rows = []
    for target in targets:
        first = measured.get((id(target), max(threads)), {})
        accuracy = first.get("accuracy") if first.get("ok") else None
        test_set = test_sets.get(target.test_set, {})
        for n in sorted(threads):
            res = measured.get((id(target), n), {})
            status, reason = target.status, target.reason
            if status == "ok" and not res.get("ok"):
                status, reason = "error", res.get("error", "not measured")
            if target.isa_cap and emulated(target) and n != max(threads):
                continue  # emulated: the accuracy pass only (see _jobs)
            timing = res if status == "ok" and not (target.isa_cap and emulated(target)) else {}
            row = {
                "model": target.model,
                "variant": target.variant,
                "format": target.format,
                "precision": target.precision,
                "exec_precision": target.exec_precision or _default_exec(target),
                "threads": n,
                "status": status,
                "reason": reason,
                **_accuracy_fields(accuracy if status == "ok" else None, target.classes, test_set.get("test_set")),
                "size_bytes": target.bytes,
                "size_mb": round(target.bytes / 1e6, 4) if target.bytes else None,
                **stats.get(target.source_run, {"params": None, "macs": None}),
                **_timing_fields(timing),
                **(first.get("device") or {}),
                "batch_size": settings["batch_size"],
                "isa": res.get("isa") or isa_record,
                "isa_warning": res.get("isa_warning"),
                "checksum": target.checksum,
                "sha256": target.sha256,
                "path": _shown(target.path),
                "source_run": target.source_run,
                "data": test_set.get("source", target.data),
                "input_size": size_text(target.input_size),
                "device": settings["device"],
                "cpu": machine["cpu"],
                "cores": machine["cores"],
                "date": date,
                "versions": versions,
            }
            rows.append(BenchRow.from_json(row))
    return rows


def _default_exec(target: Target) -> str:
    # what each runtime computes in when no variant hint is given (OpenVINO is pinned to f32 by load_artifact)
    return "f32" if target.format == "pytorch" else BACKENDS[target.format].exec_precision


def _accuracy_fields(acc: dict[str, Any] | None, classes: list[str], test_set: str | None) -> dict[str, Any]:
    """Top-1 with its Wilson 95 % interval (stats.wilson_interval), per-class top-1 and the per-image results."""
    if not acc:
        return {
            "accuracy": None,
            "accuracy_low": None,
            "accuracy_high": None,
            "correct": None,
            "images": None,
            "test_set": None,
            "per_class": None,
            "per_image": None,
        }
    from .stats import unpack_hits

    per_class = {
        c: (hit / total if total else None)
        for c, hit, total in zip(classes, acc["per_class_correct"], acc["per_class_total"], strict=True)
    }
    low, high = wilson_interval(acc["correct"], acc["images"])
    return {
        "accuracy": acc["correct"] / acc["images"],
        "accuracy_low": low,
        "accuracy_high": high,
        "correct": acc["correct"],
        "images": acc["images"],
        "test_set": test_set,
        "per_class": per_class,
        "per_image": per_image_record(unpack_hits(acc["hits"], acc["images"]), test_set or ""),
    }


def _timing_fields(res: dict[str, Any]) -> dict[str, Any]:
    """Latency: the median over trials of each percentile, the p50's min-max over trials, and every trial's
    p50 and p99 (what stats.latency_ratio compares)."""
    lat = res.get("latency") or {}
    trials = lat.get("trials") or []
    p50s = [t["p50_ms"] for t in trials]
    _, low, high = spread(p50s) if p50s else (None, None, None)
    return {
        "latency_p50_ms": lat.get("p50_ms"),
        "latency_p50_min_ms": low,
        "latency_p50_max_ms": high,
        "latency_p90_ms": lat.get("p90_ms"),
        "latency_p99_ms": lat.get("p99_ms"),
        "latency_mean_ms": lat.get("mean_ms"),
        "latency_iterations": lat.get("iterations"),
        "latency_trials": len(trials) or None,
        "latency_trial_p50_ms": p50s or None,
        "latency_trial_p99_ms": [t["p99_ms"] for t in trials] or None,
        "throughput_ips": res.get("throughput_ips"),
        "throughput_source": res.get("throughput_source"),
        "load_s": res.get("load_s"),
        "import_s": res.get("import_s"),
        "threads_runtime": res.get("threads_runtime"),
    }


def _model_stats(targets: list[Target], measured: dict) -> dict[str, dict[str, int | None]]:
    """Parameters and MACs of each source run's architecture (the same for all its formats and precisions)."""
    stats: dict[str, dict[str, int | None]] = {}
    for target in targets:
        if target.source_run in stats:
            continue
        meta = next(
            (
                r.get("metadata")
                for (tid, _), r in measured.items()
                if r.get("ok") and tid in {id(t) for t in targets if t.source_run == target.source_run}
            ),
            None,
        )
        if meta and meta.get("model"):
            stats[target.source_run] = _count(
                meta["model"], len(target.classes), meta.get("img_size"), target.input_size
            )
    return stats


def _count(model: str, num_classes: int, img_size: Any, input_size: Size) -> dict[str, int | None]:
    """Parameters and MACs at the run's input size; img_size: the backbone's resolution (None or "": none)."""
    try:
        from .models import count_macs, count_params, create_model

        net = create_model(model, num_classes, img_size=int(img_size) if img_size else None, input_size=input_size)
        return {"params": count_params(net), "macs": count_macs(net)}
    except Exception:  # an architecture we cannot rebuild here: the row keeps its measurements
        return {"params": None, "macs": None}


def _shown(path: Path) -> str:
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def _load_average() -> float | None:
    """The 1-minute load average (runnable processes), None where the OS does not say."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def _header(settings: dict[str, Any], key: str, seconds: float, notes: list[str]) -> dict[str, Any]:
    return {
        "schema": 1,
        "tool": "edgecifar bench",
        "key": key,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": library_versions(*VERSIONED),
        "settings": settings,
        "bench_seconds": round(seconds, 1),
        "notes": [n.removeprefix("warning: ") for n in notes],
    }
