"""Write benchmarks/results/README.md: an index of every result file and folder in benchmarks/results/, what it
shows and the command that rebuilt it, from the table of entries below (so the index is edited in one place and
tests/test_docs.py fails when a result is added without an entry, or an entry outlives its result).

    uv run python benchmarks/results_index.py           # write the index
    uv run python benchmarks/results_index.py --check   # exit 1 if it is stale or a result has no entry

An entry's figures are the result file's own; the file is the authority (dates are when it was measured, on the
machine its header names). The study behind a result is told in docs/ (linked from each section).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
INDEX = RESULTS / "README.md"


@dataclass(frozen=True)
class Entry:
    paths: tuple[str, ...]  # relative to benchmarks/results/: files or folders
    shows: str  # what it shows, with its headline figures
    command: str  # the command that rebuilt it, from the repository root
    note: str = ""  # how the command was used, where it is not the whole story


@dataclass(frozen=True)
class Section:
    title: str
    about: str  # one line, with the docs/ page that tells the study
    entries: tuple[Entry, ...]


BENCH = ("bench.md", "bench.json", "bench.csv", "bench.png")


SECTIONS = (
    Section(
        "The reference comparison",
        "Every committed reference run in every runtime, 1 and 2 threads; how a bench works: "
        "[docs/benchmarking.md](../../docs/benchmarking.md).",
        (
            Entry(
                BENCH,
                "The published comparison (2026-12-07, 2-core AMD EPYC Zen 4 with AVX-512 VNNI/bf16, quiet, 1,748 s): "
                "192 rows, top-1 with its Wilson 95 % interval and per-image results on the 10,000 test images of "
                "the JPEG copy through each file's own runtime, size, parameters, MACs, p50/p90/p99 batch-1 "
                "latency from 5 independent trials (their spread), batch-64 throughput, load time, and the "
                "accuracy-latency plot. `airnet_m-kd` INT8 against EfficientNet-Lite0 INT8 at 1 thread: "
                "90.15-90.22 % against 89.98-90.10 %, 1.14-1.19 MB against 3.67-4.02 MB, 0.40-0.54 ms against "
                "0.69-0.90 ms (p50 ratios 0.48-0.78x, each interval below 1).",
                "uv run --extra edge python benchmarks/run_reference.py",
            ),
            Entry(
                ("verify.json",),
                "Each file re-evaluated by its runtime alone, against the bench's top-1 (tolerance 0.05 "
                "points): 74 of 74 agree. From the bench of 2026-11-29 (the re-check of 2026-11-30 was stopped "
                "after 12 files, all equal).",
                "uv run --extra edge python benchmarks/run_reference.py --verify",
            ),
            Entry(
                ("repeatability.json",),
                "A second bench of the 2026-11-25 reference set: 40 of 42 rows' p50 within 10 %, top-1 equal.",
                "uv run --extra edge python benchmarks/run_reference.py --repeat",
            ),
            Entry(
                ("frontier",),
                "Scratch against transfer per budget, from the reference bench and transfer-sizes (docs/frontier.md): "
                "each family's best file within 0.25-4 ms (1 thread) and 128 KB-4 MB. Scratch wins to 0.5 ms (by "
                "2.69 points over MobileNetV2 at 32 px, p = 7e-17) and below 2.62 MB; from 0.95 ms and 2.62 MB "
                "MobileNetV2 at 64 px wins by 1.65 points (91.87 against 90.22 %, exact McNemar p = 2.5e-08): the "
                "crossover. One training run per point.",
                "uv run edgecifar frontier benchmarks/results/bench.json benchmarks/results/transfer-sizes "
                "--out benchmarks/results/frontier",
            ),
            Entry(
                ("mobilenet_v2",),
                "MobileNetV2 (40 px, torchvision's ImageNet weights, Lite0's transfer recipe) beside "
                "EfficientNet-Lite0 (40 px, seed 0), INT8 in ONNX Runtime, OpenVINO, LiteRT and ExecuTorch, full "
                "test set, 1 thread (2026-12-07, two trainings on the same 2 cores: latencies contended): 89.42-89.51 "
                "% against 89.98-90.10 %, paired -0.51 to -0.62 points (p = 0.08 / 0.07 / 0.03 / 0.04, "
                "`compare.txt`), 2.5-2.8 MB against 3.7-4.0 MB.",
                "uv run --extra edge edgecifar bench exported/mobilenet_v2/*-int8.{onnx,xml,tflite,pte} "
                "exported/efficientnet_lite0/*-int8.{onnx,xml,tflite,pte} --threads 1 --no-baseline --runs "
                "runs/reference --out benchmarks/results/mobilenet_v2",
                note="then `edgecifar compare --bench benchmarks/results/mobilenet_v2 'mobilenet_v2 ONNX INT8' "
                "'efficientnet_lite0 ONNX INT8'` and likewise per runtime for compare.txt",
            ),
            Entry(
                ("transfer-sizes",),
                "MobileNetV2's INT8 ONNX file at each backbone size beside Lite0 (40 px), airnet_m-kd and "
                "airnet_m_relu-kd, one bench run, 1 thread, 5 latency trials (2026-12-07, machine otherwise idle): "
                "32 px 87.51 % 0.337 ms, 40 px 89.47 % 0.511 ms, 64 px 91.87 % 0.952 ms (2.62 MB each); "
                "airnet_m-kd 90.22 % 0.621 ms, Lite0 89.98 % 0.654 ms.",
                "uv run --extra edge edgecifar bench exported/mobilenet_v2*/*-int8.onnx "
                "exported/efficientnet_lite0/efficientnet_lite0-int8.onnx exported/airnet_m-kd/airnet_m-kd-int8.onnx "
                "exported/airnet_m_relu-kd/airnet_m_relu-kd-int8.onnx --threads 1 --no-baseline --runs runs/reference "
                "--out benchmarks/results/transfer-sizes",
            ),
            Entry(
                ("seeds",),
                "The headline over three training seeds per recipe (the reference runs <run>, -s1, -s2): "
                "airnet_m-kd 90.18 % mean (sd 0.06), EfficientNet-Lite0 89.88 % (sd 0.25); +0.30 points, Welch "
                "95 % interval [-0.27, +0.87], p = 0.17: tied; beside it the paired test of each seed's INT8 "
                "ONNX pair (docs/statistics.md). The lever tried, airnet_m-kd distilled from the ensemble of its "
                "three seeds (airnet_m-kd-ens, 2 seeds): 90.02 % mean, 0.16 points under airnet_m-kd (p = 0.03), "
                "tied with Lite0 (p = 0.43).",
                "uv run --extra edge python benchmarks/seeds.py",
            ),
            Entry(
                ("dominance",),
                "An earlier comparison (2026-11-29) against the lost EfficientNet-Lite0 run's files; "
                "`vnni_rule_bench.md`: `airnet_m`'s OpenVINO INT8 IR with 8-bit weights (90.13 %).",
                "uv run --extra edge edgecifar bench exported/ --threads 1 --out benchmarks/results/dominance",
                note="the files of that day",
            ),
            Entry(
                ("edge",),
                "LiteRT and ExecuTorch beside ONNX Runtime (2026-11-29, loaded machine): `edge_tiny` and "
                "`airnet_m` in FP32/FP16/INT8, 1 and 2 threads. FP32 files give PyTorch's accuracy exactly; "
                "LiteRT INT8 is the fastest file of both models (0.102 and 0.399 ms).",
                "uv run edgecifar bench exported/{edge_tiny,airnet_m}/*.{tflite,pte,onnx} --threads 1,2 "
                "--runs runs/reference --out benchmarks/results/edge",
            ),
        ),
    ),
    Section(
        "INT8 on every x86 CPU",
        "Whether INT8 files compute the same without VNNI (AVX2 CPUs); the rules: "
        "[docs/export-and-quantization.md](../../docs/export-and-quantization.md).",
        (
            Entry(
                ("isa_paths_emulated.json",),
                "Every reference run's INT8 `.onnx`, `.tflite` and `.pte` file (21) on this CPU's path and under "
                "QEMU's Haswell (AVX2, no VNNI): bit-identical logits on 200 test images; the widest "
                "GEMM-path weight of each ONNX file.",
                "uv run --extra edge python benchmarks/isa_paths.py exported/*/*-int8.onnx "
                "exported/*/*-int8.tflite exported/*/*-int8.pte --data ../shared/data/cifar10-jpeg.tar.gz "
                "--images 200",
            ),
            Entry(
                ("isa_paths_onnx.json",),
                "The first, ONNX-only run of the same check: the then committed 7-bit INT8 ONNX files agree on "
                "both paths (300 images); an 8-bit `airnet_m` file falls from 88.0 to 43.0 % on AVX2.",
                "uv run python benchmarks/isa_paths.py FILE.onnx ... --data ../shared/data/cifar10-jpeg.tar.gz "
                "--out benchmarks/results/isa_paths_onnx.json",
            ),
            Entry(
                ("isa_paths_onnx_edge_tiny.md", "isa_paths_onnx_edge_tiny.json"),
                "`edge_tiny`'s INT8 ONNX file on both paths, full test set: 84.28 % natively and on AVX2.",
                "uv run edgecifar bench exported/edge_tiny/edge_tiny-int8.onnx --isa native,avx2 --threads 1 "
                "--no-baseline --out DIR",
                note="bench.md/.json renamed",
            ),
            Entry(
                ("isa_paths_openvino_before.md", "isa_paths_openvino_before.json"),
                "OpenVINO INT8 IRs with NNCF's first-layer overflow fix only, native and oneDNN capped at AVX2: "
                "Lite0 90.09 / 89.04 %, `airnet_m` 89.53 / 89.20 %.",
                "uv run edgecifar bench IR files --isa native,avx2 --threads 1 --no-baseline --out DIR",
                note="bench.md/.json renamed",
            ),
            Entry(
                ("isa_paths_openvino_after.md", "isa_paths_openvino_after.json"),
                "The same IRs re-exported with `--int8-isa x86` (7-bit weights in every layer): `airnet_m` "
                "89.61 / 89.60 %, `edge_tiny` 84.09 / 84.09 %.",
                "uv run edgecifar bench IR files --isa native,avx2 --threads 1 --no-baseline --out DIR",
                note="bench.md/.json renamed",
            ),
            Entry(
                ("isa_paths_openvino_lite0",),
                "EfficientNet-Lite0's re-exported INT8 IR: 90.11 % on both paths.",
                "uv run edgecifar bench exported/efficientnet_lite0/efficientnet_lite0-int8.xml "
                "--isa native,avx2 --threads 1 --no-baseline --out benchmarks/results/isa_paths_openvino_lite0",
            ),
            Entry(
                ("isa-latency-openvino",),
                "Latency on OpenVINO's AVX2 INT8 kernels, timed natively on the Zen 4 (oneDNN held to AVX2; not "
                "an AVX2-only CPU): airnet_m-kd / Lite0 p50 0.80x [0.73, 0.87] held to AVX2, 0.92x [0.66, 1.07] "
                "unheld in the same run (5 trials each; benchmarks/latency_ratios.py); top-1 equal on both paths.",
                "uv run --extra edge edgecifar bench exported/airnet_m-kd/airnet_m-kd-int8.xml "
                "exported/efficientnet_lite0/efficientnet_lite0-int8.xml exported/airnet_s-kd/airnet_s-kd-int8.xml "
                "exported/scratch_cnn/scratch_cnn-int8.xml --isa native,avx2 --threads 1 --no-baseline --runs "
                "runs/reference --out benchmarks/results/isa-latency-openvino",
            ),
            Entry(
                ("isa_paths_openvino_qat",),
                "Every reference INT8 IR and the QAT run's on both paths (fast bias correction, before the "
                "defaults changed): `airnet_m-kd-qat` 90.15 / 90.14 %.",
                "uv run edgecifar bench exported/*/*-int8.xml --isa native,avx2 --threads 1 --no-baseline "
                "--out benchmarks/results/isa_paths_openvino_qat",
                note="the files of that day",
            ),
            Entry(
                ("isa_paths_openvino_defaults",),
                "Every reference INT8 IR with the current defaults (full bias correction, since 2026-11-29) "
                "on both paths: each within 0.01 points of itself (Lite0 90.05 %).",
                "uv run edgecifar bench exported/*/*-int8.xml --isa native,avx2 --threads 1 --no-baseline "
                "--out benchmarks/results/isa_paths_openvino_defaults",
            ),
            Entry(
                ("int8_profile.md", "int8_profile.json"),
                "Where INT8 batch-1 time goes: ONNX Runtime's profiler and OpenVINO's counters per op type, "
                "before and after the exporter's changes (opset 20 GELU, float input normalization).",
                "uv run python benchmarks/int8_profile.py exported/airnet_m exported/edge_tiny "
                "exported/efficientnet_lite0 --runs 200",
            ),
        ),
    ),
    Section(
        "ARM64",
        "The INT8 files on emulated ARM cores against x86: [docs/arm64.md](../../docs/arm64.md).",
        (
            Entry(
                ("arm64",),
                "The 32 committed INT8 ONNX, LiteRT and TFLite Micro files under QEMU's cortex-a72 and "
                "cortex-a76 (2026-12-07), first 50 test images: 100 % top-1 agreement with x86 everywhere, "
                "bit-identical outputs for 28 files on both cores (`airnet_m-int8.tflite` 1 int8 step off, "
                "Lite0's and MobileNetV2's 40 and 64 px ONNX files up to 0.256, 0.055 and 0.266 in logits). Emulated "
                "times are "
                "QEMU's, not a device's.",
                "uv run --extra edge python benchmarks/arm64.py --images 50",
            ),
        ),
    ),
    Section(
        "Microcontrollers",
        "The TFLite Micro files in TFLite Micro's own interpreter: [docs/microcontrollers.md]"
        "(../../docs/microcontrollers.md).",
        (
            Entry(
                ("tflm",),
                "edge_tiny, edge_small, scratch_cnn and airnet_t_relu-kd as full-integer `.micro.tflite` files "
                "(2026-12-07), full test set: top-1 84.26 / 86.55 / 85.35 / 83.54 %, flash 105,288 / 487,296 / "
                "1,176,032 / 95,736 bytes, exact arena 58,560 / 29,520 / 49,992 / 44,336 bytes (`arena_bytes`, "
                "`arena_detail` in bench.json). Latencies are TFLite Micro's reference kernels on the shared, "
                "busy x86 CPU, not a microcontroller's.",
                "uv run --extra edge edgecifar bench exported/*/*-int8.micro.tflite --threads 1 --no-baseline "
                "--runs runs/reference --latency-seconds 1 --latency-trials 1 --out benchmarks/results/tflm",
            ),
        ),
    ),
    Section(
        "ReLU airnets",
        "The airnets with ReLU and a max-pool head, whose ops every edge target takes, against their GELU "
        "originals: [docs/microcontrollers.md](../../docs/microcontrollers.md#scratch-nets-for-every-edge-target).",
        (
            Entry(
                ("relu",),
                "`airnet_m_relu-kd` against `airnet_m-kd` (`relu/airnet_m`) and `airnet_t_relu-kd` against "
                "`airnet_t-kd` (`relu/airnet_t`), INT8 in four runtimes, full test set, 1 thread, 5 latency "
                "trials (2026-12-07; airnet_m with one core free, airnet_t at load 4.2 on 2 cores). Accuracy paired per runtime (`compare.txt`): "
                "airnet_m -0.18 to -0.40 points (p = 0.13-0.51), airnet_t -0.15 to -0.29 (p = 0.39-0.67): tied. "
                "Latency ReLU / GELU: airnet_m 0.82x / 0.78x / 0.93x / 0.93x in ONNX Runtime, OpenVINO, LiteRT, "
                "ExecuTorch (every interval below 1); airnet_t 0.82x and 0.89x in LiteRT and ExecuTorch.",
                "uv run --extra edge edgecifar bench exported/{airnet_m_relu-kd,airnet_m-kd}/*-int8.{onnx,xml,"
                "tflite,pte} --threads 1 --no-baseline --runs runs/reference --data ../shared/data/cifar10-jpeg.tar.gz "
                "--out benchmarks/results/relu/airnet_m",
                note="and likewise for airnet_t; `edgecifar compare --bench` per runtime and benchmarks/latency_ratios.py "
                "for compare.txt",
            ),
        ),
    ),
    Section(
        "Quantization-aware training",
        "QAT against post-training quantization: [docs/export-and-quantization.md]"
        "(../../docs/export-and-quantization.md#quantization-aware-training).",
        (
            Entry(
                ("qat",),
                "One QAT epoch against PTQ and against the same epoch in float (the control), OpenVINO INT8: "
                "`airnet_m-kd` 90.15 % (PTQ then 90.04, control 90.09), `edge_tiny` 84.12 % (84.09, 83.89); "
                "`formats-edge_tiny/`: the QAT run's INT8 files in all four runtimes.",
                "uv run python benchmarks/qat.py runs/reference/edge_tiny runs/reference/airnet_m-kd",
            ),
        ),
    ),
    Section(
        "The pipeline, timed end to end",
        "`edgecifar pipeline` on the 2-core Zen 4 with nothing else running; the history is in "
        "[CHANGELOG.md](../../CHANGELOG.md).",
        (
            Entry(
                ("pipeline",),
                "2026-11-30: 4,290 s (71.5 min) with `airnet_m-kd` distilled from the committed teacher; "
                "steps, verdict (Lite0's INT8 `.pte`, 90.10 %) and bench.",
                "uv run --extra edge edgecifar pipeline --data ../shared/data/cifar10-jpeg.tar.gz",
            ),
            Entry(
                ("pipeline-2026-11-30-early",),
                "82.7 min (4,963 s), `airnet_m` without a teacher, `scratch_cnn` 40 epochs in bf16.",
                "uv run --extra edge edgecifar pipeline --data ../shared/data/cifar10-jpeg.tar.gz",
            ),
            Entry(
                ("pipeline-2026-11-29-night",),
                "83.4 min (5,003 s) with an fp32 `scratch_cnn`, 1-thread bench.",
                "uv run --extra edge edgecifar pipeline --data ../shared/data/cifar10-jpeg.tar.gz",
            ),
            Entry(
                ("pipeline-2026-11-29-evening",),
                "82.9 min with 1- and 2-thread bench rows.",
                "uv run --extra edge edgecifar pipeline --data ../shared/data/cifar10-jpeg.tar.gz --threads 1,2",
            ),
        ),
    ),
    Section(
        "Training: recipes, tiers, distillation",
        "Recipes and the studies behind them: [docs/training.md](../../docs/training.md); the reference runs: "
        "[docs/reference-runs.md](../../docs/reference-runs.md).",
        (
            Entry(
                ("gpu",),
                "Runs on a lent NVIDIA H200 (2026-11-30): every default recipe's GPU time, the tiers' runs at "
                "growing budgets, distillation from `airnet_l`, and Jordan's own airbench94_muon on the JPEG "
                "copy (`airbench_upstream.txt`: 89.59 % single view, 90.74 % with its TTA). Summary: "
                "`gpu_runs.md`.",
                "PYTHONPATH=. python3 benchmarks/gpu_runs.py --jobs tiers|timing|controls --data "
                "cifar10-jpeg.tar.gz --out OUT",
                note="on the GPU machine; gpu_runs.md gives each call",
            ),
            Entry(
                ("learning_curves.md", "learning_curves.png"),
                "The reference runs' learning curves and each tier's budgets: +0.30 (ceiling), +0.42 (small) "
                "points per doubling of epochs; 10, 6 and 11 doublings short of the tiers.",
                "uv run python benchmarks/learning_curves.py",
            ),
            Entry(
                ("tta_gap.md", "tta_gap.json"),
                "Test-time augmentation on `airnet_m` (10 epochs): 89.24 % single view, 90.32 % "
                "flip-averaged, 90.61 % with airbench's level-2 TTA.",
                "uv run python benchmarks/tta_gap.py runs/reference/airnet_m-10ep",
            ),
            Entry(
                ("edge_designs.md", "edge_designs.json"),
                "Candidate edge-net layouts' INT8 batch-1 latency in interleaved rounds (2026-11-28, Zen 3): "
                "how `edge_small`'s layout was chosen (0.257 against `scratch_cnn`'s 0.309 ms, ONNX).",
                "uv run python benchmarks/edge_designs.py --data ../shared/data/cifar10-jpeg.tar.gz",
            ),
            Entry(
                ("ddp_cpu.md",),
                "torchrun with 2 gloo processes against 1 on the 2-core CPU (2026-11-29, loaded machine): "
                "43.02 against 43.06 %, 1.27x the images per second.",
                "torchrun --nproc_per_node 2 -m edgecifar train --model scratch_cnn --epochs 2 "
                "--max-train 10000 --max-test 5000 --data ../shared/data/cifar10-jpeg.tar.gz --out OUT",
                note="and the same in one process: ddp_cpu.md gives all three",
            ),
        ),
    ),
    Section(
        "Data",
        "The data rules and the data path: [docs/data.md](../../docs/data.md).",
        (
            Entry(
                ("data_path.md", "data_path.json"),
                "An epoch through the data path against the same steps on pre-made tensors: 1.03x "
                "(`scratch_cnn`), 1.04x (`edge_tiny`); target <= 1.10.",
                "uv run python benchmarks/data_path.py --data ../shared/data/cifar10-jpeg.tar.gz",
            ),
            Entry(
                ("own_size-digits", "own_size-digits.json"),
                "Data that is not CIFAR-10 at its own size: scikit-learn's 8x8 digits, `edge_tiny` 98.06 %, "
                "exported and benched (OpenVINO INT8 95.28 %).",
                "uv run python benchmarks/own_size.py digits",
            ),
            Entry(
                ("own_size-textures", "own_size-textures.json"),
                "scikit-image's brick/grass/gravel photos as 96x96 crops: `scratch_cnn` 100.00 %, and "
                "`predict` on larger photos.",
                "uv run python benchmarks/own_size.py textures",
            ),
        ),
    ),
)


def listed() -> set[str]:
    return {path for section in SECTIONS for entry in section.entries for path in entry.paths}


def check() -> tuple[list[str], list[str]]:
    """(entries whose files are missing, top-level results that no entry lists)."""
    paths = listed()
    missing = sorted(p for p in paths if not (RESULTS / p).exists())
    unlisted = sorted(
        p.name
        for p in RESULTS.iterdir()
        if p.name != INDEX.name and p.name not in paths and (p.is_file() or any(p.rglob("*")))
    )
    return missing, unlisted


def render() -> str:
    lines = [
        "# Results",
        "",
        (
            "<!-- written by benchmarks/results_index.py from its table of entries: edit there, then run "
            "`uv run python benchmarks/results_index.py` -->"
        ),
        "",
        (
            "Every result in this folder, what it shows and the command that rebuilt it (from the repository root). "
            "Accuracy figures are top-1 on the CIFAR-10 JPEG copy (`../shared/data/cifar10-jpeg.tar.gz`), close to "
            "but not the same as the original test set. Latencies are batch 1 on the 2-core machine each file's "
            "header names; compare latencies within one table only. Each `bench.md` names its machine, versions and "
            "settings."
        ),
        "",
    ]
    for section in SECTIONS:
        lines += [f"## {section.title}", "", section.about, ""]
        for entry in section.entries:
            names = ", ".join(f"[`{p}`]({p})" for p in entry.paths)
            note = f" ({entry.note})" if entry.note else ""
            lines += [f"- {names}: {entry.shows}", f"  `{entry.command}`{note}"]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    missing, unlisted = check()
    for p in missing:
        print(f"error: an entry names benchmarks/results/{p}, which is not there", file=sys.stderr)
    for p in unlisted:
        print(f"error: benchmarks/results/{p} has no entry in benchmarks/results_index.py", file=sys.stderr)
    if "--check" in argv:
        stale = not INDEX.exists() or INDEX.read_text(encoding="utf-8") != render()
        if stale:
            print("error: benchmarks/results/README.md is stale: run benchmarks/results_index.py", file=sys.stderr)
        return int(bool(missing or unlisted or stale))
    if missing or unlisted:
        return 1
    INDEX.write_text(render(), encoding="utf-8")
    print(f"wrote {INDEX.relative_to(RESULTS.parents[1])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
