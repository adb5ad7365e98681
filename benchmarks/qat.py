"""When does quantization-aware training beat post-training quantization? (issue 15)

For each source run: `edgecifar qat` (NNCF fake quantization), and the same fine-tuning in float as the control
(what the extra epochs alone buy), then the source and the control exported in FP32 and INT8 (PTQ, x86-safe
7-bit weights where the runtime needs them, the default) and the QAT run in INT8, to every format this machine
can export, and all files measured in one bench (1 thread, full test set of the JPEG copy, each file in its own
runtime). OpenVINO keeps NNCF's quantizers as they are; ONNX, LiteRT and ExecuTorch quantize the QAT run's float
twin with its learned weight grids and activation ranges (edgecifar.qat.requantizable). Writes
benchmarks/results/qat/{qat.md,qat.json} and the bench beside them.

    uv run python benchmarks/qat.py runs/reference/edge_tiny runs/reference/airnet_m-kd

The QAT run's folder is kept in --work (default runs/qat-bench); copy it to runs/reference/ to ship it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "qat"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "qat-bench")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    from edgecifar.backends import BACKENDS, unavailable
    from edgecifar.bench import bench
    from edgecifar.export import export_run
    from edgecifar.qat import QatConfig, finetune

    formats = [name for name, b in BACKENDS.items() if not unavailable(b, export=True)]

    exported = args.work / "exported"
    variants: dict[str, dict[str, str]] = {}
    started = time.perf_counter()
    for run in args.runs:
        made = {"PTQ": run}
        for kind, fake_quant in (("QAT", True), ("float fine-tune", False)):
            out = args.work / f"{run.name}-{'qat' if fake_quant else 'ft'}"
            if not (out / "model.safetensors").is_file():
                shutil.rmtree(out, ignore_errors=True)
                finetune(QatConfig(run=str(run), epochs=args.epochs, lr=args.lr, fake_quant=fake_quant, out=str(out)))
            made[kind] = out
        for kind, folder in made.items():
            export_run(folder, formats, ["int8"] if kind == "QAT" else ["fp32", "int8"], out_dir=exported)
            variants[folder.name] = {"source": run.name, "kind": kind}
    from edgecifar.runs import read_config
    from edgecifar.utils import data_source

    result = bench(
        [exported],
        threads=(1,),
        out_dir=args.out,
        baseline=False,
        latency_seconds=1.0,
        data=data_source(read_config(args.runs[0])),
        throughput_seconds=0.2,
    )
    _report(result, variants, formats, args, time.perf_counter() - started)


def _report(result, variants: dict[str, dict[str, str]], formats: list[str], args, seconds: float) -> None:
    rows = {
        (r["source_run"], r["format"], r["precision"]): r for r in (x.to_json() for x in result) if r["status"] == "ok"
    }
    table = []
    for name, v in variants.items():
        for fmt in formats:
            int8, source_fp32 = rows.get((name, fmt, "int8")), rows.get((v["source"], fmt, "fp32"))
            if int8 is None or source_fp32 is None:
                continue
            fp32 = rows.get((name, fmt, "fp32"))
            table.append(
                {
                    "source": v["source"],
                    "variant": v["kind"],
                    "run": name,
                    "format": fmt,
                    "fp32_top1": 100 * fp32["accuracy"] if fp32 else None,
                    "int8_top1": 100 * int8["accuracy"],
                    "int8_minus_source_fp32": 100 * (int8["accuracy"] - source_fp32["accuracy"]),
                    "int8_p50_ms": int8["latency_p50_ms"],
                    "int8_mb": int8["size_mb"],
                }
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "qat.json").write_text(
        json.dumps(
            {
                "epochs": args.epochs,
                "lr": args.lr,
                "seconds": seconds,
                "machine": result.header["machine"],
                "rows": table,
            },
            indent=2,
        )
        + "\n"
    )
    lines = [
        f"# QAT against PTQ ({args.epochs} epoch(s), AdamW peak lr {args.lr:g}, distilled from the float model)",
        "",
        f"Machine: {result.header['machine']['cpu']}. Bench: `bench.md` beside this file (1 thread, full "
        "test set of the CIFAR-10 JPEG copy, each file in its own runtime). INT8: x86-safe 7-bit weights in "
        "ONNX Runtime and OpenVINO (LiteRT and ExecuTorch run XNNPACK's 8-bit kernels).",
        "",
        "| source run | variant | format | FP32 top-1 % | INT8 top-1 % | INT8 - source FP32 | INT8 p50 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in table:
        fp32 = "-" if t["fp32_top1"] is None else f"{t['fp32_top1']:.2f}"
        lines.append(
            f"| {t['source']} | {t['variant']} | {t['format']} | {fp32} | "
            f"{t['int8_top1']:.2f} | {t['int8_minus_source_fp32']:+.2f} | {t['int8_p50_ms']:.3f} |"
        )
    (args.out / "qat.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
