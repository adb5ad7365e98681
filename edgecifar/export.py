"""`export_run`: a trained run -> a file per backend (ONNX, OpenVINO, LiteRT, ExecuTorch) and precision (FP32,
FP16, INT8), each verified against PyTorch on real test images before it is kept, and listed in `exported/manifest.json`.

All or nothing: every artifact is written and verified in a staging folder first; only when all of them
pass are they moved into `<out>/<run-name>/` and the manifest updated (atomically). A failure, Ctrl-C,
SIGTERM or a full disk leaves `<out>` exactly as it was; a staging folder that a killed export (SIGKILL)
left behind is removed by the next export into the same folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from . import __version__
from .backends import BACKENDS, CALIB_METHODS, PRECISIONS, Backend, Calibration, artifact_files, in_all, unavailable
from .contract import contract_text, model_size
from .data import Splits, load_data
from .edge_targets import edge_targets, targets_text
from .errors import DiskFullError, ExportError, UsageError
from .accuracy_control import export_controlled
from .isa import DEFAULT_INT8_ISA, INT8_ISAS, int8_metadata
from .manifest import MANIFEST, add_size_ratios, read_manifest, update_manifest
from .records import ManifestEntry, ModelMeta, RunConfig
from .runtime import load_artifact
from .utils import (
    NO_ROOM,
    data_source,
    library_versions,
    no_room,
    restore_signal_stack,
    sha256_file,
    staging_folder,
    terminate_as_interrupt,
)

FP32_MIN_AGREEMENT = 0.999  # an FP32 export must reproduce PyTorch's top-1 on 99.9 % of images, or it fails
WARN_AGREEMENT = 0.99  # FP16 / INT8 below this get a warning (kept: reduced precision is a trade-off)
# FP16 / INT8 below this are broken, not traded off, and refused unless asked for (keep_low_agreement): it lies
# between the worst sound file measured and the best of those whose 8-bit weights overflowed on a CPU without
# VNNI (every lost point of accuracy is a changed prediction; docs/design-notes.md)
MIN_AGREEMENT = 0.90
KEEP_OPTION = "--keep-low-agreement"  # every command that exports (export, pipeline) has it
KEEP_HINT = f"{KEEP_OPTION} keeps such a file"
VERIFY_BATCH = 100

Log = Callable[[str], None]


@dataclass(frozen=True)
class ExportOptions:
    """How `export_run` exports: `edgecifar export`'s options. Sizes count images; `seed` draws them."""

    out_dir: Path | str = "exported"  # the manifest's folder; each run's files go in <out_dir>/<run name>/
    calib_size: int = 512  # INT8 calibration: a seeded draw from the training split
    calib_method: str = "minmax"  # one of CALIB_METHODS
    data: str | None = None  # None: the run's own data
    cache_dir: Path | str | None = None
    seed: int = 0
    verify_size: int = 500  # test images each file must agree on with PyTorch
    keep_low_agreement: bool = False  # keep FP16/INT8 files under MIN_AGREEMENT (KEEP_OPTION)
    int8_isa: str = DEFAULT_INT8_ISA  # one of edgecifar.isa.INT8_ISAS
    max_drop: float | None = None  # accuracy-controlled INT8: the bound on the top-1 drop, points
    control_size: int = 2000  # held-out training images the bound is measured on
    kept_because: str = ""  # why a file kept under MIN_AGREEMENT is expected to agree less


def export_run(
    run_dir: Path | str,
    formats: Iterable[str] | str = "all",
    precisions: Iterable[str] | str = "all",
    options: ExportOptions | None = None,
    *,
    log: Log | None = None,
    **overrides: Any,
) -> list[ManifestEntry]:
    """Export a run to every (format, precision) asked for; returns their manifest entries.

    options: how (ExportOptions; its defaults when None); `overrides`, ExportOptions' fields by name, override it
    (`export_run(run, "onnx", "int8", out_dir=..., calib_size=64)`). Calibration images (INT8) are a seeded draw
    of `calib_size` from the training split (all of it when it is smaller: said in the log and the manifest),
    verification images a seeded draw of `verify_size` from the test split, both of the run's data (or `data`, if
    given). Raises ExportError for a file that fails verification (FP32 under FP32_MIN_AGREEMENT, FP16/INT8 under
    MIN_AGREEMENT unless `keep_low_agreement`, non-finite outputs), DiskFullError when the disk is full;
    `out_dir` is then left as it was. int8_isa: "x86" (7-bit weights, exact on every x86 CPU) or "vnni" (8-bit,
    exact only with VNNI/AMX), recorded in each INT8 file. max_drop: keep each INT8 file's top-1 drop under this
    many points on `control_size` held-out training images (edgecifar.accuracy_control), leaving the most
    sensitive layers in float; ExportError if it cannot. kept_because: why a file kept under MIN_AGREEMENT
    (keep_low_agreement) is expected to agree less, said in the log and recorded in its verification (the
    pipeline's quick profile: a model near chance). A setting ExportOptions lacks is a TypeError.
    """
    options = replace(options or ExportOptions(), **overrides)
    with terminate_as_interrupt():  # SIGTERM cleans up the staging folder as Ctrl-C does
        return _export_run(run_dir, formats, precisions, options, log or (lambda _msg: None))


def _export_run(run_dir, formats, precisions, opts: ExportOptions, log: Log) -> list[ManifestEntry]:
    from .qat_model import qat_section
    from .runs import load_run, read_config

    backends = _choose_backends(formats, log)
    precisions_asked, precisions = precisions, _choose(precisions, PRECISIONS, "precision")
    config = read_config(run_dir)
    qat = qat_section(config)
    if qat:
        backends, precisions, int8_isa = _for_qat(
            qat,
            backends,
            precisions,
            not _is_all(formats),
            not _is_all(precisions_asked),
            opts.int8_isa,
            opts.max_drop,
            log,
        )
        opts = replace(opts, int8_isa=int8_isa)
    if opts.calib_method not in CALIB_METHODS:
        raise UsageError(f"unknown calibration method '{opts.calib_method}': use one of {', '.join(CALIB_METHODS)}")
    if opts.int8_isa not in INT8_ISAS:
        raise UsageError(f"unknown --int8-isa '{opts.int8_isa}': use one of {', '.join(INT8_ISAS)}")
    jobs = _jobs(backends, precisions, opts.calib_method, explicit=not (_is_all(formats) or _is_all(precisions_asked)))
    if opts.max_drop is not None and (lacking := [b.name for b, p in jobs if p == "int8" and not b.accuracy_control]):
        controlled = " or ".join(name for name, b in BACKENDS.items() if b.accuracy_control)
        raise UsageError(
            f"--max-drop: {', '.join(lacking)} has no accuracy-controlled INT8 (export it without "
            f"--max-drop, or choose --format {controlled})"
        )
    if opts.calib_size < 1 or opts.verify_size < 1:
        raise UsageError("--calib-size and --verify-size must be at least 1")
    out_dir = Path(opts.out_dir)
    read_manifest(out_dir / MANIFEST)  # a corrupt manifest stops us before any work, and is never overwritten
    model = load_run(run_dir)
    for backend in dict.fromkeys(b for b, _ in jobs):  # a backend that cannot take the model says so before any work
        getattr(backend, "check_model", lambda _model: None)(model)
    run_name = Path(run_dir).resolve().name
    model.meta.source_run = run_name
    splits = _load_splits(config, model.meta, opts.data, opts.cache_dir)
    check = _verification_set(model, splits, opts.verify_size, opts.seed)
    calibration = None
    if any(p == "int8" for _, p in jobs):
        calibration = Calibration(
            _sample(splits.train_x, opts.calib_size, [opts.seed, 0]),
            opts.calib_method,
            isa=opts.int8_isa,
            control=_control(model, splits, opts.calib_size, opts.control_size, opts.seed, opts.max_drop),
        )
        if len(calibration.images) < opts.calib_size:
            log(
                f"note: INT8 calibration uses all {len(calibration.images)} training images, fewer than "
                f"--calib-size {opts.calib_size}"
            )
    return _export_all(model, jobs, out_dir, run_name, calibration, check, opts, log)


def _for_qat(
    qat: dict[str, Any],
    backends: list[Backend],
    precisions: list[str],
    named_formats: bool,
    named_precisions: bool,
    int8_isa: str,
    max_drop: float | None,
    log: Log,
) -> tuple[list[Backend], list[str], str]:
    """A QAT run (edgecifar.qat) exports INT8 only, through the backends that export what it learned, with
    the weight rule (--int8-isa) it was trained for: its graph is already quantized."""
    keep = [b for b in backends if b.qat]
    able = ", ".join(name for name, b in BACKENDS.items() if b.qat)
    if not keep or (named_formats and len(keep) < len(backends)) or (named_precisions and precisions != ["int8"]):
        raise UsageError(
            f"a QAT run exports INT8 through {able} only: its graph carries the quantizers it "
            f"learned (export its source run {qat['source_run']} for other formats and precisions)"
        )
    if max_drop is not None:
        raise UsageError("--max-drop does not apply to a QAT run: its quantizers are trained, not calibrated")
    for b in backends:
        if not b.qat:
            log(f"note: {b.name} left out: it cannot keep a QAT run's quantizers")
        elif b.qat != "native":  # measured in benchmarks/results/qat/qat.md
            log(
                f"note: {b.name} quantizes more tensors than the OpenVINO layout QAT trained in: its file may score "
                f"under the source run's own PTQ (benchmarks/results/qat/qat.md)"
            )
    if int8_isa != qat["int8_isa"]:
        log(f"note: INT8 weights follow the QAT run's --int8-isa {qat['int8_isa']}")
    return keep, ["int8"], qat["int8_isa"]


def _choose(values: Iterable[str] | str, known: tuple[str, ...], what: str) -> list[str]:
    values = [values] if isinstance(values, str) else list(values)
    if "all" in values:
        return list(known)
    unknown = [v for v in values if v not in known]
    if unknown or not values:
        raise UsageError(f"unknown {what} '{(unknown or [''])[0]}': use one of {', '.join(known)} or all")
    return list(dict.fromkeys(values))


def _choose_backends(formats: Iterable[str] | str, log: Log) -> list[Backend]:
    """The backends asked for; "all" is every one that can export here (the others are named in the log), a
    backend named that cannot is an error that says what is missing."""
    everything = _is_all(formats)
    names = [n for n in _choose(formats, tuple(BACKENDS), "format") if not everything or in_all(BACKENDS[n])]
    chosen = []
    for name in names:
        why = unavailable(BACKENDS[name], export=True)
        if why and not everything:
            raise UsageError(f"cannot export to {name}: {why}")
        if why:
            log(f"note: {name} left out: {why}")
        else:
            chosen.append(BACKENDS[name])
    return chosen


def _is_all(values: Iterable[str] | str) -> bool:
    return "all" in ([values] if isinstance(values, str) else list(values))


def _jobs(
    backends: list[Backend], precisions: list[str], calib_method: str, explicit: bool
) -> list[tuple[Backend, str]]:
    """Each (backend, precision) asked for that the backend has. When both the formats and the precisions are
    named (not "all"), one that a backend lacks (a precision, the INT8 calibration method) is an error."""
    jobs = []
    for backend in backends:
        for precision in precisions:
            lacks = (
                f"{precision}"
                if precision not in backend.precisions
                else f"'{calib_method}' INT8 calibration"
                if precision == "int8" and calib_method not in backend.calib_methods
                else ""
            )
            if lacks and explicit:
                has = backend.precisions if precision not in backend.precisions else tuple(backend.calib_methods)
                raise UsageError(f"{backend.name} has no {lacks}: it has {', '.join(has)}")
            if not lacks:
                jobs.append((backend, precision))
    if not jobs:
        raise UsageError("nothing to export: no backend here has the precisions asked for (see `edgecifar doctor`)")
    return jobs


def _load_splits(config: RunConfig, meta: ModelMeta, data: str | None, cache_dir) -> Splits:
    source = data_source(config, data)
    cache_dir = cache_dir or (config.train or {}).get("cache_dir")
    splits = load_data(source, cache_dir, input_size=model_size(meta))  # at the run's input size
    if list(splits.classes) != list(meta.classes):
        raise ExportError(
            f"data {source} has classes {splits.classes}, the model was trained on {meta.classes}: "
            f"pass the run's data with --data"
        )
    return splits


def _sample(images: np.ndarray, size: int, seed: list[int]) -> np.ndarray:
    """A seeded draw without replacement, in dataset order (the same seed gives the same images)."""
    idx = np.sort(np.random.default_rng(seed).permutation(len(images))[:size])
    return images[idx]


def _control(model: Any, splits: Splits, calib_size: int, size: int, seed: int, max_drop: float | None) -> Any:
    """The accuracy bound and its held-out training images, with the float model's top-1 on them; None without a
    bound."""
    import torch

    from .accuracy_control import Control, accuracy

    if max_drop is None:
        return None
    if max_drop < 0 or size < 1:
        raise UsageError("--max-drop must be >= 0 points and --control-images >= 1")
    idx = holdout_indices(len(splits.train_y), calib_size, size, seed)
    if len(idx) == 0:
        raise UsageError(f"--max-drop needs training images beyond the {calib_size} calibration images")
    images, labels = splits.train_x[idx], splits.train_y[idx]
    with torch.no_grad():
        reference = accuracy(lambda x: model(torch.from_numpy(x)).float().numpy(), images, labels)
    return Control(max_drop, images, labels, reference)


def holdout_indices(n: int, calib_size: int, size: int, seed: int) -> np.ndarray:
    """Indices of a seeded slice of a training split of `n` images, disjoint from the INT8 calibration draw
    (`_sample(..., calib_size, [seed, 0])`: the same permutation, the next `size` places). It measures what
    quantization costs (accuracy control, the per-layer report) without touching the test split."""
    return np.sort(np.random.default_rng([seed, 0]).permutation(n)[calib_size : calib_size + size])


def _verification_set(model: Any, splits: Splits, size: int, seed: int) -> dict[str, Any]:
    """Real test images, their labels, and PyTorch's logits for them (the reference every export must match)."""
    import torch

    idx = np.sort(np.random.default_rng([seed, 1]).permutation(len(splits.test_y))[:size])
    images, labels = splits.test_x[idx], splits.test_y[idx]
    with torch.no_grad():
        logits = np.concatenate(
            [
                model(torch.from_numpy(images[i : i + VERIFY_BATCH])).float().numpy()
                for i in range(0, len(images), VERIFY_BATCH)
            ]
        )
    if not np.isfinite(logits).all():
        bad = int((~np.isfinite(logits)).any(1).sum())
        raise ExportError(
            f"the PyTorch model gives NaN or infinite logits on {bad} of {len(images)} test images: nothing to export"
        )
    return {
        "images": images,
        "labels": labels,
        "logits": logits,
        "accuracy": float((logits.argmax(1) == labels).mean()),
    }


def metadata_for(meta: ModelMeta, backend: Backend, precision: str) -> dict[str, str]:
    """What every exported file carries about itself (all values are strings: ONNX and rt_info want them)."""
    found = {
        "edgecifar_version": __version__,
        "format": backend.name,
        "precision": precision,
        "model": meta.model,
        "classes": json.dumps(meta.classes),
        "num_classes": str(meta.num_classes),
        "img_size": str(meta.img_size or ""),
        "source_run": meta.source_run or "",
        "source_sha256": meta.source_sha256 or "",
        "input": json.dumps(meta.input),
        "output": json.dumps(meta.output),
        "contract": contract_text(model_size(meta)),
    }
    found.update(backend.metadata())
    return found


def _export_all(
    model,
    jobs: list[tuple[Backend, str]],
    out_dir: Path,
    run_name: str,
    calibration: Calibration | None,
    check: dict[str, Any],
    opts: ExportOptions,
    log: Log,
) -> list[ManifestEntry]:
    target = out_dir / run_name
    created = _missing_dirs(target)
    doing = "the export"  # what a full disk stopped, should the error not name its file
    try:
        with staging_folder(out_dir) as staging:  # same file system as the target: renames are atomic
            entries, staged = [], []
            for backend, precision in jobs:
                doing = f"the {backend.name} {precision} file"
                main = staging / f"{run_name}-{precision}{backend.suffixes[0]}"
                entry = _export_one(model, backend, precision, main, calibration, check, opts, log)
                entry.path = f"{run_name}/{main.name}"  # paths in the manifest are relative to it
                entry.files = {f"{run_name}/{name}": sha for name, sha in (entry.files or {}).items()}
                if calibration is not None and precision == "int8":
                    entry.calibration = _calibration_info(calibration, backend, opts.seed, opts.calib_size)
                entries.append(entry)
                staged += artifact_files(main, backend)
            add_size_ratios(entries)
            target.mkdir(parents=True, exist_ok=True)
            _commit(staged, target, out_dir / MANIFEST, entries)
            return entries
    except Exception as e:  # a full disk may reach us wrapped by a converter's own exception
        if (full := no_room(e)) is not None:
            file = Path(full.filename).name if full.filename else doing
            raise DiskFullError(f"{NO_ROOM[full.errno]}: could not write {file}; {out_dir} was left as it was") from e
        if isinstance(e, OSError):
            raise ExportError(f"cannot write to {out_dir}: {e.strerror or e}") from e
        raise
    finally:
        _remove_empty(created)  # after a failure, leave no empty folders behind


def _remove_empty(folders: list[Path]) -> None:
    for folder in reversed(folders):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _commit(staged: list[Path], target: Path, manifest: Path, entries: list[ManifestEntry]) -> None:
    """Every artifact passed: move them in, then list them. If that fails (a full disk, SIGTERM), take back the
    new files and put back the ones they replaced (kept as hard links in the staging folder meanwhile)."""
    previous = staged[0].parent / ".replaced"
    previous.mkdir()
    moved = []
    try:
        for file in staged:
            final = target / file.name
            if final.exists():
                try:
                    os.link(final, previous / file.name)
                except OSError:  # a file system without hard links
                    shutil.copy2(final, previous / file.name)
            moved.append(final)
            os.replace(file, final)
        update_manifest(manifest, entries)
    except BaseException:
        for final in moved:
            if (previous / final.name).exists():
                os.replace(previous / final.name, final)
            else:
                final.unlink(missing_ok=True)
        raise


def _missing_dirs(folder: Path) -> list[Path]:
    missing = []
    for f in (folder, *folder.parents):
        if f.exists():
            break
        missing.append(f)
    return list(reversed(missing))


def _export_one(
    model,
    backend: Backend,
    precision: str,
    main: Path,
    calibration: Calibration | None,
    check: dict[str, Any],
    opts: ExportOptions,
    log: Log,
) -> ManifestEntry:
    """One file exported and verified; its entry's path and files are the staged file's names (the caller
    makes them relative to the manifest)."""
    started = time.perf_counter()
    metadata = metadata_for(model.meta, backend, precision)
    if precision == "int8" and calibration is not None and backend.int8_isa_rule:
        metadata.update(int8_metadata(calibration.isa))
    if precision == "int8" and model.meta.qat is not None:
        qat = model.meta.qat
        metadata["quantization"] = f"QAT: {qat['epochs']} epoch(s) from {Path(qat['source_run']).name}"
    if precision == "int8" and calibration is not None and calibration.control is not None:
        files, control = export_controlled(backend, model, main, calibration, metadata, log)
    else:
        files, control = (
            backend.export(model, main, precision, calibration if precision == "int8" else None, metadata),
            None,
        )
    exported = time.perf_counter() - started
    verification = verify_artifact(main, check, model.meta.classes)
    restore_signal_stack()  # OpenVINO may have left the signal stack on freed memory: SIGTERM must still clean up
    agreement = verification["agreement"]
    what = f"{backend.name} {precision}"
    needed = FP32_MIN_AGREEMENT if precision == "fp32" else 0.0 if opts.keep_low_agreement else MIN_AGREEMENT
    if agreement < needed:
        keep = "" if precision == "fp32" else f" ({KEEP_HINT})"
        raise ExportError(
            f"{what} failed verification: top-1 agrees with PyTorch on {agreement:.2%} of "
            f"{verification['images']} test images (needs >= {needed:.1%}{keep}), max |logit "
            f"diff| {verification['max_abs_logit_diff']:.3g}; nothing was written"
        )
    if agreement < MIN_AGREEMENT and opts.kept_because:
        verification["warning"] = (
            f"top-1 agreement {agreement:.2%} is under {MIN_AGREEMENT:.0%}, kept: {opts.kept_because}"
        )
        log(f"note: {what}: {verification['warning']}")
    elif agreement < WARN_AGREEMENT:
        verification["warning"] = f"top-1 agreement {agreement:.2%} is under {WARN_AGREEMENT:.0%}"
        log(f"warning: {what}: {verification['warning']}")
    log(
        f"{what}: {sum(f.stat().st_size for f in files) / 1e6:.2f} MB, agreement {agreement:.2%}, "
        f"max |logit diff| {verification['max_abs_logit_diff']:.2g}, {exported:.1f}s"
    )
    targets = edge_targets(main)  # which microcontroller and phone accelerators take every op of the file
    if targets:
        log(f"{what}: {targets_text(targets)}")
    return ManifestEntry(
        model=model.meta.model,
        format=backend.name,
        precision=precision,
        files={f.name: sha256_file(f) for f in files},
        bytes=sum(f.stat().st_size for f in files),
        sha256=sha256_file(main),
        classes=model.meta.classes,
        input=model.meta.input,
        output=model.meta.output,
        source_run=model.meta.source_run,
        source_sha256=model.meta.source_sha256,
        edgecifar_version=__version__,
        versions=library_versions(*backend.libraries),
        verification=verification,
        export_seconds=round(exported, 2),
        edge_targets=targets or None,
        exported_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        accuracy_control=control or None,
        path=main.name,
    )


def verify_artifact(path: Path, check: dict[str, Any], classes: list[str]) -> dict[str, Any]:
    """Run the file with its own runtime (the device path, runtime.load_artifact) and compare with PyTorch."""
    artifact = load_artifact(path)  # OpenVINO: precision pinned to f32, so FP32 is really FP32
    if artifact.classes != list(classes):
        raise ExportError(f"{path.name}: class names in the file's metadata do not round-trip")
    images = check["images"]
    logits = np.concatenate([artifact.run(images[i : i + VERIFY_BATCH]) for i in range(0, len(images), VERIFY_BATCH)])
    reference = check["logits"]
    if logits.shape != reference.shape:
        raise ExportError(f"{path.name} returns logits of shape {list(logits.shape)}, PyTorch {list(reference.shape)}")
    if not np.isfinite(logits).all():  # an argmax of NaNs "agrees" with PyTorch's: never let it verify
        bad = int((~np.isfinite(logits)).any(1).sum())
        raise ExportError(
            f"{path.name} gives NaN or infinite logits on {bad} of {len(images)} test images; nothing was written"
        )
    return {
        "images": int(len(images)),
        "agreement": float((logits.argmax(1) == reference.argmax(1)).mean()),
        "max_abs_logit_diff": float(np.abs(logits - reference).max()),
        "accuracy": float((logits.argmax(1) == check["labels"]).mean()),
        "torch_accuracy": check["accuracy"],
        "inference_precision": artifact.session.extra.get("hint", "model"),
    }


def _calibration_info(calibration: Calibration, backend: Backend, seed: int, requested: int) -> dict[str, Any]:
    found = {"images": int(len(calibration.images)), "requested": requested}
    if found["images"] < requested:
        found["note"] = f"the training split has {found['images']} images, fewer than the {requested} requested"
    return {
        **found,
        "split": "train",
        "seed": seed,
        "method": calibration.method,
        "backend_method": backend.calib_methods[calibration.method],
        "batch_size": calibration.batch_size,
        **(int8_metadata(calibration.isa) if backend.int8_isa_rule else {}),
        "images_sha256": hashlib.sha256(calibration.images.tobytes()).hexdigest(),
    }
