"""`export_run`: a trained run -> ONNX / OpenVINO files in FP32 / FP16 / INT8, each verified against PyTorch
on real test images before it is kept, and listed in `exported/manifest.json`.

All or nothing: every artifact is written and verified in a staging folder first; only when all of them
pass are they moved into `<out>/<run-name>/` and the manifest updated (atomically). A failure leaves
`<out>` exactly as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from . import __version__
from .backends import BACKENDS, CALIB_METHODS, CONTRACT, PRECISIONS, Backend, Calibration, artifact_files
from .data import Splits, load_data
from .errors import DataError, ExportError, UsageError
from .manifest import MANIFEST, read_manifest, update_manifest
from .runtime import load_artifact
from .utils import library_versions, sha256_file

FP32_MIN_AGREEMENT = 0.999  # an FP32 export must reproduce PyTorch's top-1 on 99.9 % of images, or it fails
WARN_AGREEMENT = 0.99  # FP16 / INT8 below this get a warning (kept: reduced precision is a trade-off)
VERIFY_BATCH = 100

Log = Callable[[str], None]


def export_run(run_dir: Path | str, formats: Iterable[str] | str = "all", precisions: Iterable[str] | str = "all",
               out_dir: Path | str = "exported", calib_size: int = 512, calib_method: str = "minmax",
               data: str | None = None, cache_dir: Path | str | None = None, seed: int = 0, verify_size: int = 500,
               log: Log | None = None) -> list[dict[str, Any]]:
    """Export a run to every (format, precision) asked for; returns their manifest entries.

    Calibration images (INT8) are a seeded draw of `calib_size` from the training split, verification images a
    seeded draw of `verify_size` from the test split, both of the run's data (or `data`, if given).
    """
    from .runs import load_run, read_config

    log = log or (lambda _msg: None)
    formats = _choose(formats, tuple(BACKENDS), "format")
    precisions = _choose(precisions, PRECISIONS, "precision")
    if calib_method not in CALIB_METHODS:
        raise UsageError(f"unknown calibration method '{calib_method}': use one of {', '.join(CALIB_METHODS)}")
    if calib_size < 1 or verify_size < 1:
        raise UsageError("--calib-size and --verify-size must be at least 1")
    out_dir = Path(out_dir)
    read_manifest(out_dir / MANIFEST)  # a corrupt manifest stops us before any work, and is never overwritten
    model = load_run(run_dir)
    run_name = Path(run_dir).resolve().name
    model.meta["source_run"] = run_name
    splits = _load_splits(read_config(run_dir), model.meta, data, cache_dir)
    check = _verification_set(model, splits, verify_size, seed)
    calibration = None
    if "int8" in precisions:
        calibration = Calibration(_sample(splits.train_x, calib_size, [seed, 0]), calib_method)
    jobs = [(BACKENDS[f], p) for f in formats for p in precisions]
    return _export_all(model, jobs, out_dir, run_name, calibration, check, seed, log)


def _choose(values: Iterable[str] | str, known: tuple[str, ...], what: str) -> list[str]:
    values = [values] if isinstance(values, str) else list(values)
    if "all" in values:
        return list(known)
    unknown = [v for v in values if v not in known]
    if unknown or not values:
        raise UsageError(f"unknown {what} '{(unknown or [''])[0]}': use one of {', '.join(known)} or all")
    return list(dict.fromkeys(values))


def _load_splits(config: dict[str, Any], meta: dict[str, Any], data: str | None, cache_dir) -> Splits:
    source = data or config.get("data", {}).get("source")
    if not source:
        raise DataError("the run's config.json records no data source: pass --data")
    cache_dir = cache_dir or config.get("train", {}).get("cache_dir")
    splits = load_data(source, cache_dir)
    if list(splits.classes) != list(meta["classes"]):
        raise ExportError(f"data {source} has classes {splits.classes}, the model was trained on {meta['classes']}: "
                          f"pass the run's data with --data")
    return splits


def _sample(images: np.ndarray, size: int, seed: list[int]) -> np.ndarray:
    """A seeded draw without replacement, in dataset order (the same seed gives the same images)."""
    idx = np.sort(np.random.default_rng(seed).permutation(len(images))[:size])
    return images[idx]


def _verification_set(model: Any, splits: Splits, size: int, seed: int) -> dict[str, Any]:
    """Real test images, their labels, and PyTorch's logits for them (the reference every export must match)."""
    import torch

    idx = np.sort(np.random.default_rng([seed, 1]).permutation(len(splits.test_y))[:size])
    images, labels = splits.test_x[idx], splits.test_y[idx]
    with torch.no_grad():
        logits = np.concatenate([model(torch.from_numpy(images[i:i + VERIFY_BATCH])).float().numpy()
                                 for i in range(0, len(images), VERIFY_BATCH)])
    return {"images": images, "labels": labels, "logits": logits,
            "accuracy": float((logits.argmax(1) == labels).mean())}


def metadata_for(meta: dict[str, Any], backend: Backend, precision: str) -> dict[str, str]:
    """What every exported file carries about itself (all values are strings: ONNX and rt_info want them)."""
    from .backends.onnx import OPSET

    found = {"edgecifar_version": __version__, "format": backend.name, "precision": precision,
             "model": meta["model"], "classes": json.dumps(meta["classes"]), "num_classes": str(meta["num_classes"]),
             "img_size": str(meta["img_size"]), "source_run": meta.get("source_run", ""),
             "source_sha256": meta.get("source_sha256", ""), "input": json.dumps(meta["input"]),
             "output": json.dumps(meta["output"]), "contract": CONTRACT}
    if backend.name == "onnx":
        found["opset"] = str(OPSET)
    return found


def _export_all(model, jobs: list[tuple[Backend, str]], out_dir: Path, run_name: str,
                calibration: Calibration | None, check: dict[str, Any], seed: int, log: Log) -> list[dict[str, Any]]:
    target = out_dir / run_name
    created = _missing_dirs(target)
    try:
        target.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir))  # same file system: renames are atomic
    except OSError as e:
        _remove_empty(created)
        raise ExportError(f"cannot write to {out_dir}: {e.strerror or e}") from e
    try:
        entries, staged = [], []
        for backend, precision in jobs:
            main = staging / f"{run_name}-{precision}{backend.suffixes[0]}"
            entry = _export_one(model, backend, precision, main, calibration, check, log)
            entry["path"] = f"{run_name}/{main.name}"  # paths in the manifest are relative to it
            entry["files"] = {f"{run_name}/{name}": sha for name, sha in entry["files"].items()}
            if calibration is not None and precision == "int8":
                entry["calibration"] = _calibration_info(calibration, backend, seed)
            entries.append(entry)
            staged += artifact_files(main, backend)
        _add_size_ratios(entries)
        _commit(staged, target, out_dir / MANIFEST, entries)
        return entries
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(created)  # after a failure, leave no empty folders behind


def _remove_empty(folders: list[Path]) -> None:
    for folder in reversed(folders):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _commit(staged: list[Path], target: Path, manifest: Path, entries: list[dict[str, Any]]) -> None:
    """Every artifact passed: move them in, then list them. If that fails, take back the files that are new."""
    new = [target / f.name for f in staged if not (target / f.name).exists()]
    try:
        for file in staged:
            os.replace(file, target / file.name)
        update_manifest(manifest, entries)
    except BaseException:
        for file in new:
            file.unlink(missing_ok=True)
        raise


def _missing_dirs(folder: Path) -> list[Path]:
    missing = []
    for f in (folder, *folder.parents):
        if f.exists():
            break
        missing.append(f)
    return list(reversed(missing))


def _export_one(model, backend: Backend, precision: str, main: Path, calibration: Calibration | None,
                check: dict[str, Any], log: Log) -> dict[str, Any]:
    started = time.perf_counter()
    files = backend.export(model, main, precision, calibration if precision == "int8" else None,
                           metadata_for(model.meta, backend, precision))
    exported = time.perf_counter() - started
    verification = verify_artifact(main, check, model.meta["classes"])
    agreement = verification["agreement"]
    what = f"{backend.name} {precision}"
    if precision == "fp32" and agreement < FP32_MIN_AGREEMENT:
        raise ExportError(f"{what} failed verification: top-1 agrees with PyTorch on {agreement:.2%} of "
                          f"{verification['images']} test images (needs >= {FP32_MIN_AGREEMENT:.1%}), max |logit "
                          f"diff| {verification['max_abs_logit_diff']:.3g}; nothing was written")
    if agreement < WARN_AGREEMENT:
        verification["warning"] = f"top-1 agreement {agreement:.2%} is under {WARN_AGREEMENT:.0%}"
        log(f"warning: {what}: {verification['warning']}")
    log(f"{what}: {sum(f.stat().st_size for f in files) / 1e6:.2f} MB, agreement {agreement:.2%}, "
        f"max |logit diff| {verification['max_abs_logit_diff']:.2g}, {exported:.1f}s")
    return {"model": model.meta["model"], "format": backend.name, "precision": precision,
            "files": {f.name: sha256_file(f) for f in files}, "bytes": sum(f.stat().st_size for f in files),
            "sha256": sha256_file(main), "classes": model.meta["classes"], "input": model.meta["input"],
            "output": model.meta["output"], "source_run": model.meta["source_run"],
            "source_sha256": model.meta["source_sha256"], "edgecifar_version": __version__,
            "versions": library_versions(*_LIBRARIES[backend.name]), "verification": verification,
            "export_seconds": round(exported, 2), "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


_LIBRARIES = {"onnx": ("torch", "onnx", "onnxruntime"), "openvino": ("torch", "openvino", "nncf")}


def verify_artifact(path: Path, check: dict[str, Any], classes: list[str]) -> dict[str, Any]:
    """Run the file with its own runtime (the device path, runtime.load_artifact) and compare with PyTorch."""
    artifact = load_artifact(path)  # OpenVINO: precision pinned to f32, so FP32 is really FP32
    if artifact.classes != list(classes):
        raise ExportError(f"{path.name}: class names in the file's metadata do not round-trip")
    images = check["images"]
    logits = np.concatenate([artifact.run(images[i:i + VERIFY_BATCH]) for i in range(0, len(images), VERIFY_BATCH)])
    reference = check["logits"]
    if logits.shape != reference.shape:
        raise ExportError(f"{path.name} returns logits of shape {list(logits.shape)}, PyTorch "
                          f"{list(reference.shape)}")
    return {"images": int(len(images)), "agreement": float((logits.argmax(1) == reference.argmax(1)).mean()),
            "max_abs_logit_diff": float(np.abs(logits - reference).max()),
            "accuracy": float((logits.argmax(1) == check["labels"]).mean()), "torch_accuracy": check["accuracy"],
            "inference_precision": artifact.session.extra.get("hint", "model")}


def _calibration_info(calibration: Calibration, backend: Backend, seed: int) -> dict[str, Any]:
    from .backends.onnx import ORT_CALIB
    from .backends.openvino import NNCF_CALIB

    method = (ORT_CALIB if backend.name == "onnx" else NNCF_CALIB).get(calibration.method)
    return {"images": int(len(calibration.images)), "split": "train", "seed": seed, "method": calibration.method,
            "backend_method": method or "nncf default", "batch_size": calibration.batch_size,
            "images_sha256": hashlib.sha256(calibration.images.tobytes()).hexdigest()}


def _add_size_ratios(entries: list[dict[str, Any]]) -> None:
    fp32 = {e["format"]: e["bytes"] for e in entries if e["precision"] == "fp32"}
    for e in entries:
        if e["format"] in fp32 and e["precision"] != "fp32":
            e["size_vs_fp32"] = round(e["bytes"] / fp32[e["format"]], 4)
