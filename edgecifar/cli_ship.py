"""The shipping side of the `edgecifar` command: export (and QAT for it), quant-report, predict, bench,
compare, recommend, pipeline, doctor."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.text import Text

from .backends import BACKENDS, CALIB_METHODS, PRECISIONS
from .cli_common import (
    BatchOpt,
    CacheOpt,
    DataOpt,
    Device,
    RunDir,
    ThreadsOpt,
    app,
    console,
    err_console,
    error_line,
    handle_errors,
    note,
    say,
)
from .errors import DataError
from .pipeline import DEFAULT_MODELS, DEFAULT_TEACHERS


# the choices come from the backends' registry: a new backend is a new --format value
ExportFormat = Enum("ExportFormat", {name: name for name in (*BACKENDS, "all")}, type=str)
Precision = Enum("Precision", {name: name for name in (*PRECISIONS, "all")}, type=str)
CalibMethod = Enum("CalibMethod", {name: name for name in CALIB_METHODS}, type=str)
MODEL_FILES = ", ".join(b.suffixes[0] for b in BACKENDS.values())


class Int8Isa(str, Enum):
    x86 = "x86"
    vnni = "vnni"


@app.command()
@handle_errors
def export(
    run_dir: RunDir,
    fmt: Annotated[
        ExportFormat,
        typer.Option("--format", help="file format (all: every one available here, see `edgecifar doctor`)"),
    ] = ExportFormat.all,
    precision: Annotated[Precision, typer.Option(help="weights/compute precision")] = Precision.all,
    out: Annotated[Path, typer.Option(help="output folder (holds manifest.json and <run-name>/)")] = Path("exported"),
    calib_size: Annotated[int, typer.Option(min=1, help="INT8 calibration images (seeded draw from train)")] = 512,
    calib_method: Annotated[
        CalibMethod,
        typer.Option(
            help="INT8 activation ranges. minmax: over all calibration "
            "images; percentile; entropy (nncf: histogram); default: "
            "each backend's own (nncf: mean of per-image min/max)"
        ),
    ] = CalibMethod.minmax,
    verify_size: Annotated[int, typer.Option(min=1, help="test images each export is verified on")] = 500,
    data: DataOpt = "",
    cache_dir: CacheOpt = None,
    seed: int = 0,
    keep_low_agreement: Annotated[
        bool, typer.Option(help="keep FP16/INT8 files whose top-1 agrees with PyTorch on under 90 % of the test images")
    ] = False,
    int8_isa: Annotated[
        Int8Isa,
        typer.Option(
            help="INT8 weights: x86 (7-bit, exact on every x86 CPU) or vnni (8-bit, exact only on CPUs with VNNI/AMX)"
        ),
    ] = Int8Isa.x86,
    max_drop: Annotated[
        Optional[float],
        typer.Option(
            min=0.0,
            help="INT8: keep the top-1 drop under this many "
            "points on held-out training images, leaving the "
            "most sensitive layers in float",
        ),
    ] = None,
    control_images: Annotated[
        int, typer.Option(min=1, help="held-out training images --max-drop is measured on")
    ] = 2000,
) -> None:
    """Export a run to every format and precision (ONNX, OpenVINO, LiteRT, ExecuTorch; FP32, FP16, INT8), each
    verified against PyTorch on test images."""
    from rich.table import Table

    from .export import ExportOptions, export_run

    options = ExportOptions(
        out_dir=out,
        calib_size=calib_size,
        calib_method=calib_method.value,
        data=data or None,
        cache_dir=cache_dir,
        seed=seed,
        verify_size=verify_size,
        keep_low_agreement=keep_low_agreement,
        int8_isa=int8_isa.value,
        max_drop=max_drop,
        control_size=control_images,
    )
    entries = export_run(run_dir, fmt.value, precision.value, options, log=note)
    table = Table(title=escape(f"exported {run_dir} -> {out} (manifest.json updated)"))
    for col in ("format", "precision", "MB", "agree", "max |dlogit|", "acc", "torch acc", "file"):
        table.add_column(col, justify="left" if col in ("format", "precision", "file") else "right")
    for e in entries:
        v = e.verification or {}
        table.add_row(
            e.format,
            e.precision,
            f"{(e.bytes or 0) / 1e6:.2f}",
            f"{v['agreement']:.2%}",
            f"{v['max_abs_logit_diff']:.2g}",
            f"{v['accuracy']:.2%}",
            f"{v['torch_accuracy']:.2%}",
            escape(Path(e.path).name),
            style="yellow" if "warning" in v else None,
        )
    console.print(table)


@app.command()
@handle_errors
def qat(
    run_dir: RunDir,
    epochs: Annotated[int, typer.Option(min=1, help="fine-tuning epochs")] = 1,
    lr: Annotated[float, typer.Option(min=0.0, help="AdamW peak learning rate, cosine-decayed to 0")] = 3e-5,
    distill: Annotated[bool, typer.Option(help="also learn the float model's logits")] = True,
    int8_isa: Annotated[
        Int8Isa,
        typer.Option(help="weights the quantizers simulate: x86 (7-bit) or vnni (8-bit); its export follows it"),
    ] = Int8Isa.x86,
    calib_size: Annotated[int, typer.Option(min=1, help="training images that initialise the quantizers")] = 512,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="default: the run's recipe")] = None,
    data: DataOpt = "",
    cache_dir: CacheOpt = None,
    max_train: Annotated[Optional[int], typer.Option(min=1)] = None,
    max_test: Annotated[Optional[int], typer.Option(min=1)] = None,
    seed: int = 0,
    device: Annotated[Device, typer.Option()] = Device.auto,
    out: Annotated[Optional[Path], typer.Option(help="new run folder [default: runs/<run>-qat]")] = None,
) -> None:
    """Quantization-aware training: fine-tune a trained run with NNCF's fake quantization; `export` turns the
    new run into INT8 files with what it learned (OpenVINO keeps its quantizers as they are)."""
    from .qat import QatConfig, finetune

    finetune(
        QatConfig(
            run=str(run_dir),
            data=data or None,
            cache_dir=str(cache_dir) if cache_dir else None,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            distill=distill,
            int8_isa=int8_isa.value,
            calib_size=calib_size,
            max_train=max_train,
            max_test=max_test,
            seed=seed,
            device=device.value,
            out=str(out) if out else None,
        ),
        show_progress=sys.stderr.isatty(),
        log=say,
    )


@app.command("quant-report")
@handle_errors
def quant_report(
    model: Annotated[Path, typer.Argument(help="an exported FP32 .onnx file")],
    data: Annotated[str, typer.Option("--data", help="the data it was trained on (its training split only is used)")],
    out: Annotated[Path, typer.Option(help="folder for <source run>-int8-layers.json/.png")] = Path("benchmarks/quant"),
    calib_size: Annotated[int, typer.Option(min=1, help="as in export")] = 512,
    calib_method: Annotated[CalibMethod, typer.Option(help="as in export")] = CalibMethod.minmax,
    int8_isa: Annotated[Int8Isa, typer.Option(help="as in export")] = Int8Isa.x86,
    images: Annotated[int, typer.Option(min=1, help="held-out training images the errors are measured on")] = 256,
    seed: int = 0,
    cache_dir: CacheOpt = None,
) -> None:
    """Per-layer INT8 error (SQNR and MSE of each layer's activation and weights, float vs quantized graph) of an
    FP32 ONNX file quantized as `export` does it: JSON and a plot, layers ranked by sensitivity."""
    from .quant_report import quant_report as run_report

    files = run_report(model, data, out, calib_size, calib_method.value, int8_isa.value, images, seed, cache_dir)
    say(f"per-layer report: {', '.join(str(f) for f in files)}")


@app.command()
@handle_errors
def predict(
    images: Annotated[list[Path], typer.Argument(help="image files, or folders of them (any size, any common format)")],
    model: Annotated[Path, typer.Option("--model", help=f"an exported model file ({MODEL_FILES})")],
    topk: Annotated[int, typer.Option(help="classes to show per image")] = 3,
    threads: Annotated[Optional[int], typer.Option(help="runtime threads [default: the runtime's]")] = None,
    allow_checksum_mismatch: Annotated[
        bool,
        typer.Option(
            "--allow-checksum-mismatch", help="use a model whose sha256 differs from its manifest (default: refuse)"
        ),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON (failed images with their error)")] = False,
) -> None:
    """Classify images with an exported model (the same code path as `python -m edgecifar.runtime`).

    Every readable image gets its answer; each one that cannot be read gets an error line, and the exit code
    is then non-zero."""
    from .runtime import predict as run_predict
    from .cli_common import short_paths

    results = run_predict(
        images, model, topk, threads, on_warning=note, allow_checksum_mismatch=allow_checksum_mismatch
    )
    for r in results:
        if "error" in r:
            error_line(r["error"])
    answered = [r for r in results if "predictions" in r]
    if json_out:
        import json

        print(json.dumps(results, indent=2))
    elif answered:
        from rich.table import Table

        names, folder = short_paths([r["image"] for r in answered])  # narrow terminals: the file names show
        if folder:
            say(f"images in {folder}:")
        table = Table(title=escape(f"{model} (checksum: {answered[0]['checksum']})"))
        table.add_column("image", overflow="fold")
        for i in range(len(answered[0]["predictions"])):
            table.add_column(f"#{i + 1}")
        for r, name in zip(answered, names):
            table.add_row(escape(name), *(escape(f"{p['class']} {p['probability']:.1%}") for p in r["predictions"]))
        console.print(table)
    if len(answered) < len(results):
        raise typer.Exit(DataError.exit_code)


@app.command()
@handle_errors
def bench(
    artifacts: Annotated[
        Optional[list[Path]],
        typer.Argument(
            help=f"exported folders (holding manifest.json), manifests, or model files ({MODEL_FILES}) "
            "(default: exported)"
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="only cpu for now")] = "cpu",
    threads: ThreadsOpt = "1,2",
    batch_size: BatchOpt = 64,
    out: Annotated[Path, typer.Option(help="folder for bench.json/.csv/.md/.png")] = Path("benchmarks/results"),
    data: Annotated[
        str, typer.Option("--data", help="test set (default: the one each source run was trained on)")
    ] = "",
    cache_dir: CacheOpt = None,
    runs: Annotated[Path, typer.Option(help="folder of the source runs (PyTorch baseline, test set)")] = Path("runs"),
    baseline: Annotated[bool, typer.Option(help="also bench each source run's PyTorch model")] = True,
    bf16: Annotated[bool, typer.Option(help="add rows of the OpenVINO FP32 files executed in bf16")] = False,
    max_images: Annotated[Optional[int], typer.Option(min=1, help="count accuracy on a seeded subset")] = None,
    latency_seconds: Annotated[
        float, typer.Option(min=0.01, help="batch-1 timing per setting, all trials together")
    ] = 1.5,
    latency_trials: Annotated[
        int,
        typer.Option(
            min=1, help="independent batch-1 trials per setting, each on a fresh session: the spread each row reports"
        ),
    ] = 5,
    throughput_seconds: Annotated[float, typer.Option(min=0.01, help="batch timing per extra setting")] = 1.0,
    isa: Annotated[
        str,
        typer.Option(
            help="INT8 paths, comma-separated: native (this CPU's) and/or avx2 (OpenVINO: "
            "oneDNN capped to AVX2; ONNX Runtime: under qemu-x86_64 -cpu Haswell, "
            "accuracy only)"
        ),
    ] = "native",
) -> None:
    """Accuracy, size, params, MACs, latency, throughput and load time of exported models and their PyTorch run."""
    from .bench import BenchOptions, bench as run_bench
    from .report import rich_table

    options = BenchOptions(
        device=device,
        threads=threads,
        batch_size=batch_size,
        out_dir=out,
        data=data or None,
        cache_dir=cache_dir,
        runs_dir=runs,
        baseline=baseline,
        bf16=bf16,
        max_images=max_images,
        latency_seconds=latency_seconds,
        throughput_seconds=throughput_seconds,
        show_progress=sys.stderr.isatty(),
        isa=isa,
        latency_trials=latency_trials,
    )
    rows = run_bench(artifacts or [Path("exported")], options, log=note)
    machine = rows.header["machine"]
    console.print(
        rich_table(
            rows, escape(f"bench on {machine['cpu']} ({machine['cores']} cores), {rows.header['bench_seconds']:.0f} s")
        )
    )
    say(f"results: {', '.join(str(p) for p in rows.files.values())}")


@app.command()
@handle_errors
def compare(
    a: Annotated[
        str,
        typer.Argument(
            help=f"a model file ({MODEL_FILES}), or with --bench a row: its file path "
            "or 'MODEL VARIANT'; or seed runs: a <out>-seeds.json or RUN,RUN,..."
        ),
    ],
    b: Annotated[str, typer.Argument(help="the other one, the same way")],
    bench: Annotated[
        Optional[Path],
        typer.Option(
            help="a bench.json (or its folder) holding both rows: compared from its per-image results, nothing run"
        ),
    ] = None,
    data: Annotated[str, typer.Option("--data", help="the test set both files are run on (without --bench)")] = "",
    cache_dir: CacheOpt = None,
    alpha: Annotated[float, typer.Option(help="significance level of the verdict")] = 0.05,
) -> None:
    """Are two files' accuracies different? Both top-1s, the discordant images, the exact McNemar p-value and a
    paired bootstrap interval of the difference, on the same test images (refused, exit 2, on different ones).
    Two groups of seed runs: the difference of their mean accuracies with Welch's interval."""
    from .compare import compare as run_compare

    for line in run_compare(a, b, bench=bench, data=data or None, cache_dir=cache_dir, alpha=alpha)["lines"]:
        say(line)


class Percentile(str, Enum):
    p50 = "p50"
    p90 = "p90"
    p99 = "p99"


@app.command()
@handle_errors
def recommend(
    result: Annotated[Path, typer.Argument(help="a bench.json or the folder holding it")] = Path("benchmarks/results"),
    max_latency_ms: Annotated[Optional[float], typer.Option(min=0.0, help="batch-1 latency limit")] = None,
    max_size_mb: Annotated[Optional[float], typer.Option(min=0.0, help="file size limit")] = None,
    min_accuracy: Annotated[Optional[float], typer.Option(help="top-1 in percent, e.g. 85 (not 0.85)")] = None,
    threads: Annotated[Optional[int], typer.Option(min=1, help="only rows at this thread count")] = None,
    percentile: Annotated[Percentile, typer.Option(help="which latency the limit applies to")] = Percentile.p50,
    alpha: Annotated[
        float,
        typer.Option(
            help="significance level: a file less accurate than the best with McNemar p >= alpha is tied with it"
        ),
    ] = 0.05,
) -> None:
    """The artifact to ship under the constraints and why: the smallest, then fastest, of the files tied on
    accuracy with the most accurate one; or which constraint fails and by how much."""
    from .recommend import recommend as pick

    found = pick(
        result,
        max_latency_ms=max_latency_ms,
        max_size_mb=max_size_mb,
        min_accuracy=min_accuracy,
        threads=threads,
        percentile=percentile.value,
        alpha=alpha,
    )
    for line in found["ignored"]:
        note(f"warning: {line}")
    note(found["machine"])
    for warning in (found["machine_warning"], found["load_warning"]):
        if warning:
            note(warning)
    if not found["met"]:
        err_console.print(
            Text.assemble(("no artifact meets the constraints:", "red"), " ", found["reason"]),
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
    choice = found["choice"]
    console.print(
        Text.assemble(
            ("recommended:", "green"),
            f" {choice.path or choice.model} at {choice.threads} thread{'s' if choice.threads > 1 else ''}",
        ),
        highlight=False,
    )
    say(found["reason"])


@app.command()
@handle_errors
def pipeline(
    models: Annotated[str, typer.Option(help="comma-separated registry names")] = ",".join(DEFAULT_MODELS),
    data: DataOpt = "cifar10",
    cache_dir: CacheOpt = None,
    quick: Annotated[
        bool, typer.Option(help="a few-minute profile (1 epoch on a subset, short timings) in runs/pipeline-quick/")
    ] = False,
    force: Annotated[bool, typer.Option(help="redo every step, even those whose outputs are valid")] = False,
    root: Annotated[Optional[Path], typer.Option(help="put runs/, exported/, results/ here instead")] = None,
    # 1 thread, the row the verdict ships by: a 2-thread row per file costs minutes and changes nothing it decides
    threads: Annotated[
        str, typer.Option(help="comma-separated runtime thread counts; each is its own row (bench's default is 1,2)")
    ] = "1",
    batch_size: BatchOpt = 64,
    bf16: Annotated[bool, typer.Option(help="bench OpenVINO FP32 in bf16 too")] = False,
    teacher: Annotated[
        Optional[str],
        typer.Option(
            help="MODEL=RUN_DIR[,...]: distil MODEL (run MODEL-kd) from the run's flip-averaged logits; the run must "
            "have been trained on --data. 'none': no teacher \\[default: "
            + ",".join(f"{m}={r}" for m, r in DEFAULT_TEACHERS.items())
            + ", where trained on --data]"
        ),
    ] = None,
    keep_low_agreement: Annotated[
        bool, typer.Option(help="keep FP16/INT8 files under export's agreement floor (--quick keeps them, saying why)")
    ] = False,
) -> None:
    """The main job: train the scratch and transfer models, export each to every format and precision, bench, report."""
    from rich.table import Table

    from .pipeline import parse_teachers, pipeline as run_pipeline
    from .report import rich_table

    done = run_pipeline(
        [m.strip() for m in models.split(",") if m.strip()],
        data=data,
        cache_dir=cache_dir,
        quick=quick,
        force=force,
        root=root,
        threads=threads,
        batch_size=batch_size,
        bf16=bf16,
        teachers=parse_teachers(teacher),
        show_progress=sys.stderr.isatty(),
        keep_low_agreement=keep_low_agreement,
        log=note,
    )
    steps = Table(title="pipeline steps")
    for col in ("step", "target", "status", "seconds", "detail"):
        steps.add_column(col, justify="right" if col == "seconds" else "left")
    for s in done["steps"]:
        steps.add_row(s["step"], escape(s["target"]), s["status"], f"{s['seconds']:.0f}", escape(s["detail"]))
    console.print(steps)
    console.print(rich_table(done["bench"], "bench"))
    say(f"report: {done['layout'].results / 'bench.md'}")
    for line in (done["verdict"] or {}).get("lines", []):
        say(line)


@app.command()
@handle_errors
def doctor() -> None:
    """List each export backend: whether its runtime (predict, bench) and its converter (export) are installed
    here, and what is missing."""
    from rich.table import Table

    from .backends import unavailable

    table = Table(title="backends")
    for col in ("format", "files", "precisions", "runtime", "run files", "export"):
        table.add_column(col, no_wrap=col == "files")  # each suffix whole (.micro.tflite)
    for backend in BACKENDS.values():
        run_missing, export_missing = unavailable(backend), unavailable(backend, export=True)
        table.add_row(
            backend.name,
            " ".join(backend.suffixes),
            " ".join(backend.precisions),
            backend.runtime,
            escape(run_missing or "yes"),
            escape(export_missing or "yes"),
        )
    console.print(table)
