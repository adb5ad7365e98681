"""`edgecifar pipeline`: the main job in one command. Train each model (scratch and transfer), export each run
to every format and precision, bench everything, write the report.

Re-running skips every step whose output is already there and valid: a run folder with its weights and
metrics trained with the same settings on the same data (its fingerprint: a changed dataset retrains), exports whose files match the manifest and come from the run's
current weights, a bench result for exactly these files and settings. `force` redoes them all. `quick` is a
small profile (one epoch on a subset, small calibration, a subset of the test set, short timings) in its own
folders, so that trying it never touches the real results.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from .errors import CheckpointError, UsageError
from .runs import CHECKPOINT, CONFIG, METRICS, WEIGHTS
from .utils import read_json, sha256_file, terminate_as_interrupt

if TYPE_CHECKING:
    from .bench import BenchOptions

# the report's CNN, the from-scratch net that answers it (airbench's recipe) and the transfer model
DEFAULT_MODELS = ("scratch_cnn", "airnet_m", "efficientnet_lite0")
# The scratch model that dominates EfficientNet-Lite0 is a distilled one: airnet_m taught by the committed airnet_m's
# flip-averaged logits scores about half a point over airnet_m alone (docs/design-notes.md). The teacher is a
# committed from-scratch run, so the pipeline rebuilds that model without training the teacher again. A default
# teacher counts only for data like its own (classes, images per split and class); elsewhere the model trains alone.
DEFAULT_TEACHERS = {"airnet_m": "runs/reference/airnet_m"}
QUICK_TRAIN = {"epochs": 1, "max_train": 2000, "max_test": 500}
# A model trained one epoch on 2,000 images is near chance (the quick run on the JPEG copy: 12.6-46 % top-1): its
# logits lie close together, so INT8 rounding changes its top-1 far more often than a trained model's (Lite0's
# INT8 ONNX agreed on 84 % of 200 images there, under export's 90 % floor). Such a file is kept, and says so.
QUICK_EXPORT = {
    "calib_size": 64,
    "verify_size": 200,
    "keep_low_agreement": True,
    "kept_because": "expected of the quick profile's 1-epoch model, near chance, whose close logits flip "
    "under INT8 rounding",
}
QUICK_BENCH = {"max_images": 1000, "latency_seconds": 0.3, "throughput_seconds": 0.3}
# a run made otherwise is not this step's output
COMPARED = ("model", "pretrained", "epochs", "max_train", "seed", "teacher", "teacher_tta")
Log = Callable[[str], None]


@dataclass(frozen=True)
class Layout:
    runs: Path
    exported: Path
    results: Path


def layout_for(quick: bool, root: Path | str | None = None) -> Layout:
    """Full: runs/, exported/, benchmarks/results/. Quick (or any root): <root>/{runs,exported,results}."""
    if root is None and not quick:
        return Layout(Path("runs"), Path("exported"), Path("benchmarks/results"))
    base = Path(root) if root is not None else Path("runs/pipeline-quick")
    return Layout(base / "runs", base / "exported", base / "results")


def pipeline(
    models: Sequence[str] = DEFAULT_MODELS,
    data: str = "cifar10",
    cache_dir: Path | str | None = None,
    quick: bool = False,
    force: bool = False,
    root: Path | str | None = None,
    threads: Sequence[int] | str = (1,),
    batch_size: int = 64,
    bf16: bool = False,
    teachers: Mapping[str, str] | None = None,
    show_progress: bool = False,
    keep_low_agreement: bool = False,
    log: Log | None = None,
) -> dict[str, Any]:
    """Train, export, bench and report; returns {"layout", "steps": [...], "bench": rows}. SIGTERM and SIGHUP
    stop it as Ctrl-C does, each step cleaning up after itself.

    `teachers` {model: run folder}: each such model is distilled (run `<model>-kd`) from the run's flip-averaged
    logits; UsageError, before any training, for a run that is missing or was trained on other data. None:
    DEFAULT_TEACHERS, each where it fits. `keep_low_agreement`: keep FP16/INT8 files under export's agreement
    floor (the quick profile keeps them, saying why)."""
    with terminate_as_interrupt():
        return _pipeline(
            models,
            data,
            cache_dir,
            quick,
            force,
            root,
            threads,
            batch_size,
            bf16,
            teachers,
            show_progress,
            keep_low_agreement,
            log or print,
        )


def _pipeline(
    models: Sequence[str],
    data: str,
    cache_dir,
    quick: bool,
    force: bool,
    root,
    threads,
    batch_size: int,
    bf16: bool,
    teachers: Mapping[str, str] | None,
    show_progress: bool,
    keep_low_agreement: bool,
    log: Log,
) -> dict[str, Any]:
    from .bench import BenchOptions, bench
    from .bench_targets import parse_threads
    from .models import get_spec

    threads = parse_threads(threads)  # bad options fail before hours of training, not after
    models = list(dict.fromkeys(models))
    if not models:
        raise UsageError("--models names no model")
    for name in models:  # a typo in the last name must not wait for the first model's training
        get_spec(name)
    taught = teachers_for(models, teachers, data, cache_dir, log)
    lay = layout_for(quick, root)
    steps: list[dict[str, Any]] = []
    run_dirs = [
        _step(
            steps,
            "train",
            run_name(m, taught.get(m)),
            log,
            lambda m=m: train_step(m, lay, data, cache_dir, quick, force, show_progress, log, taught.get(m)),
        )
        for m in models
    ]
    artifacts: list[Path] = []
    for run_dir in run_dirs:
        artifacts += _step(
            steps,
            "export",
            run_dir.name,
            log,
            lambda r=run_dir: export_step(r, lay, data, cache_dir, quick, force, log, keep_low_agreement),
        )
    options = BenchOptions(
        device="cpu",
        threads=threads,
        batch_size=batch_size,
        out_dir=lay.results,
        data=data,
        cache_dir=cache_dir,
        runs_dir=lay.runs,
        bf16=bf16,
        reuse=not force,  # a complete earlier result for the same files and settings is the step's output
        show_progress=show_progress,
        **(QUICK_BENCH if quick else {}),
    )
    rows = _step(steps, "bench", "all", log, lambda: _bench_step(bench, artifacts, options, log))
    return {"layout": lay, "steps": steps, "bench": rows, "verdict": _verdict(rows, threads)}


def _verdict(rows, threads) -> dict[str, Any] | None:
    """The file to ship under the default constraints and the Pareto front (recommend.shipping_verdict), at
    one thread when that was benched; None when nothing was measured there."""
    from .errors import BenchError
    from .recommend import DEFAULT_SHIPPING, shipping_verdict

    if DEFAULT_SHIPPING["threads"] not in threads:
        return None
    try:
        return shipping_verdict(rows)
    except BenchError:
        return None


def _step(steps: list[dict[str, Any]], kind: str, what: str, log: Log, fn: Callable[[], tuple[Any, str, str]]) -> Any:
    started = time.perf_counter()
    value, status, detail = fn()
    steps.append(
        {
            "step": kind,
            "target": what,
            "status": status,
            "detail": detail,
            "seconds": round(time.perf_counter() - started, 1),
        }
    )
    log(f"pipeline: {kind} {what}: {status} ({detail})")
    return value


# ---------------------------------------------------------------- train


def parse_teachers(text: str | None) -> dict[str, str] | None:
    """`--teacher`: "MODEL=RUN[,MODEL=RUN...]", "none" ({}), or None (the defaults). UsageError if malformed."""
    if text is None:
        return None
    pairs = [p.strip() for p in text.split(",") if p.strip()]
    if pairs == ["none"]:
        return {}
    if not pairs or not all("=" in p and all(x.strip() for x in p.split("=", 1)) for p in pairs):
        raise UsageError(f"--teacher '{text}': use MODEL=RUN_DIR[,MODEL=RUN_DIR...] or none")
    return {m.strip(): r.strip() for m, r in (p.split("=", 1) for p in pairs)}


def teachers_for(
    models: Sequence[str], teachers: Mapping[str, str] | None, data: str, cache_dir, log: Log
) -> dict[str, str]:
    """{model: the teacher run's absolute folder} for the models that are distilled. Given teachers must fit
    (UsageError); a default one that does not is left out, and the log says why."""
    chosen = {}
    for model, run in (DEFAULT_TEACHERS if teachers is None else teachers).items():
        if model not in models:
            if teachers is not None:
                raise UsageError(f"--teacher {model}={run}: {model} is not one of --models")
            continue
        why = _unfit_teacher(Path(run), data, cache_dir)
        if why is None:
            chosen[model] = str(Path(run).resolve())
        elif teachers is not None:
            raise UsageError(f"--teacher {model}={run}: {why}")
        else:
            log(f"pipeline: {model} trains without a teacher: {why}")
    return chosen


def _unfit_teacher(run: Path, data: str, cache_dir) -> str | None:
    """Why `run` cannot teach a model trained on `data` (None: it can): no trained run there, or other data, as
    a resume tells it (other classes or image counts per split and class; the fingerprint is a cache key that
    changes with the archive's path and date, so it cannot say that a copy elsewhere is the same data)."""
    from .data import load_data

    try:
        made = read_json(run / CONFIG)["data"]
    except (OSError, ValueError, KeyError, TypeError):
        made = None
    if not isinstance(made, dict) or "classes" not in made or not (run / WEIGHTS).is_file():
        return f"{run} holds no trained run"
    now = load_data(data, cache_dir).describe()  # decoded once, then from the cache
    # older runs recorded no per-class counts
    differ = [k for k in ("classes", "train", "val", "test", "per_class") if made.get(k, now[k]) != now[k]]
    return f"{run} was trained on other data (its {', '.join(differ)} differ)" if differ else None


def run_name(model: str, teacher: str | None) -> str:
    return f"{model}-kd" if teacher else model


def train_config(model: str, lay: Layout, data: str, cache_dir, quick: bool, teacher: str | None = None):
    """The model's own recipe, evaluated once, at the end (evaluating every epoch cost 6 minutes of the pipeline)."""
    from .models import get_spec
    from .train_config import TrainConfig

    # transfer models start from their ImageNet weights; scratch ones have none to start from
    pretrained = bool(get_spec(model).pretrained_source)
    return TrainConfig(
        model=model,
        data=data,
        cache_dir=str(cache_dir) if cache_dir else None,
        pretrained=pretrained,
        teacher=teacher,
        teacher_tta=bool(teacher),
        eval_every=0,
        out=str(lay.runs / run_name(model, teacher)),
        **(QUICK_TRAIN if quick else {}),
    )


def train_step(
    model: str,
    lay: Layout,
    data: str,
    cache_dir,
    quick: bool,
    force: bool,
    show_progress: bool,
    log: Log,
    teacher: str | None = None,
) -> tuple[Path, str, str]:
    from dataclasses import replace

    from .train import train

    cfg = train_config(model, lay, data, cache_dir, quick, teacher)
    run_dir = Path(cfg.out)
    differences = _differences(run_dir, cfg)
    data_changed = None if differences else _data_changed(run_dir, cfg)
    if data_changed and not force:  # the run's inputs changed: its output is stale, like a make target's
        return _retrain(cfg, run_dir, show_progress, log), "done", f"retrained into {run_dir}: {data_changed}"
    finished = (run_dir / WEIGHTS).is_file() and (run_dir / METRICS).is_file()
    if not force and finished and not differences and _weights_intact(run_dir):
        acc = read_json(run_dir / METRICS).get("test_acc")
        return run_dir, "skipped", f"valid run in {run_dir}" + (f", test acc {acc:.2%}" if acc is not None else "")
    if not force and not finished and (run_dir / CHECKPOINT).is_file() and not differences:
        return train(replace(cfg, resume=True), show_progress, log), "resumed", f"continued the run in {run_dir}"
    if run_dir.exists() and any(run_dir.iterdir()) and not force:
        why = ", ".join(differences) or "it is incomplete and cannot be resumed"
        raise CheckpointError(f"{run_dir} holds a run made with other settings ({why}): pass --force to redo it")
    return _retrain(cfg, run_dir, show_progress, log), "done", f"trained into {run_dir}"


def _retrain(cfg, run_dir: Path, show_progress: bool, log: Log) -> Path:
    """Train into run_dir; an old run there is set aside and restored if the new one fails."""
    from .train import train

    backup = run_dir.with_name(f".{run_dir.name}.replaced")
    if run_dir.exists():
        shutil.rmtree(backup, ignore_errors=True)
        run_dir.rename(backup)
    try:
        out = train(cfg, show_progress, log)
    except BaseException:
        if backup.exists():
            shutil.rmtree(run_dir, ignore_errors=True)
            backup.rename(run_dir)
        raise
    shutil.rmtree(backup, ignore_errors=True)
    return out


def _differences(run_dir: Path, cfg) -> list[str]:
    """How the run in run_dir was trained otherwise than cfg asks (empty: same settings, or no run)."""
    if not (run_dir / CONFIG).is_file():
        return []
    try:
        made = read_json(run_dir / CONFIG)["train"]
    except (OSError, ValueError, KeyError, TypeError):
        return ["unreadable config.json"]
    wanted = cfg.resolved()
    found = [
        f"{k} {made.get(k)!r} instead of {getattr(wanted, k)!r}" for k in COMPARED if made.get(k) != getattr(wanted, k)
    ]
    if _source(made.get("data")) != _source(wanted.data):
        found.append(f"data {made.get('data')!r} instead of {wanted.data!r}")
    return found


def _data_changed(run_dir: Path, cfg) -> str | None:
    """How the data differs from what the run in run_dir was trained on (None: the same data, or no run)."""
    from .data import load_data

    try:
        made = read_json(run_dir / CONFIG)["data"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no run, or _differences already calls its config unreadable
    now = load_data(cfg.data, cfg.cache_dir)  # decoded once, then from the cache
    if made.get("fingerprint") in (None, now.fingerprint):
        return None
    return (
        f"the data changed since it was trained ({made.get('train')} -> {len(now.train_y)} training images, "
        f"fingerprint {made.get('fingerprint')} -> {now.fingerprint})"
    )


def _source(data: str | None) -> str | None:
    return data if data in (None, "cifar10") else str(Path(data).expanduser().resolve())


def _weights_intact(run_dir: Path) -> bool:
    expected = read_json(run_dir / METRICS).get("weights_sha256")
    return expected is None or sha256_file(run_dir / WEIGHTS) == expected


# ---------------------------------------------------------------- export


def export_options(quick: bool, keep_low_agreement: bool = False) -> dict[str, Any]:
    """What the pipeline passes to export_run beyond the run and the folders."""
    return {**(QUICK_EXPORT if quick else {}), **({"keep_low_agreement": True} if keep_low_agreement else {})}


def export_step(
    run_dir: Path,
    lay: Layout,
    data: str,
    cache_dir,
    quick: bool,
    force: bool,
    log: Log,
    keep_low_agreement: bool = False,
) -> tuple[list[Path], str, str]:
    from .export import export_run

    current = current_exports(run_dir, lay.exported)
    if current is not None and not force:
        return current, "skipped", f"{len(current)} exports in {lay.exported} match the manifest and the run"
    entries = export_run(
        run_dir,
        "all",
        "all",
        out_dir=lay.exported,
        data=data,
        cache_dir=cache_dir,
        log=log,
        **export_options(quick, keep_low_agreement),
    )
    return [lay.exported / e.path for e in entries], "done", f"{len(entries)} exports into {lay.exported}"


def current_exports(run_dir: Path, exported: Path) -> list[Path] | None:
    """The run's artifact paths if every format x precision is listed, intact, and made from its current
    weights; else None."""
    from .backends import BACKENDS, in_all, unavailable
    from .manifest import MANIFEST, read_manifest

    manifest = exported / MANIFEST
    if not manifest.is_file():
        return None
    weights = sha256_file(run_dir / WEIGHTS)
    found = {}
    for e in read_manifest(manifest).artifacts:
        if e.source_run != run_dir.name or e.source_sha256 != weights:
            continue
        files = e.file_hashes()
        if all((exported / f).is_file() and sha256_file(exported / f) == sha for f, sha in files.items()):
            found[(e.format, e.precision)] = exported / e.path
    # what `export_run(..., "all", "all")` makes: each backend that can export here, in its own precisions
    wanted = [
        (f, p) for f, b in BACKENDS.items() if in_all(b) and not unavailable(b, export=True) for p in b.precisions
    ]
    return [found[k] for k in wanted] if all(k in found for k in wanted) else None


# ---------------------------------------------------------------- bench


def _bench_step(bench, artifacts: list[Path], options: BenchOptions, log: Log):
    rows = bench(artifacts, options, log=log)
    status = "skipped" if rows.reused else "done"
    return rows, status, f"{len(rows)} rows, report in {options.out_dir}"
