"""ARM64 verification: every committed INT8 ONNX and .tflite file run on emulated ARM cores, logits compared with x86.

    uv run --extra edge python benchmarks/arm64.py [--images 200] [--cores cortex-a72,cortex-a76] [--setup-only]

What runs: Debian bookworm's arm64 python3.11 with the aarch64 manylinux wheels of numpy, onnxruntime and
ai-edge-litert (the versions this checkout's venv has), under QEMU user mode (`qemu-aarch64-static -cpu CORE -L
SYSROOT`), on two named cores: cortex-a72 (ARMv8.0: no dot-product instructions, so ONNX Runtime's and XNNPACK's
INT8 kernels take their widening-multiply path) and cortex-a76 (ARMv8.2 with dot product, the SDOT/UDOT kernels).
Each file gets the same images on x86 (this machine's venv, one thread) and on each core, and the script records
top-1 agreement with x86, the largest output difference and whether the outputs are bit for bit the same.

Set-up (scripted, from Debian's and PyPI's packages only; cached in ~/.cache/edgecifar-arm64 or $EDGECIFAR_ARM64,
never in the repository): qemu-user-static from apt (apt-get update, then install; needs root), the sysroot from
Debian's arm64 .debs (python3.11 and libstdc++6 with their dependencies, fetched by apt-get with a private state
folder, so the host's dpkg gains no foreign architecture, and unpacked with dpkg-deb -x), the wheels by `pip
install --target --platform manylinux_2_17_aarch64 ... --only-binary=:all:`.

Two traps, handled: onnxruntime crashes at import (SIGSEGV) when /proc/cpuinfo is the x86 host's, so the sysroot
carries an ARM core's /proc/cpuinfo (QEMU's -L serves the sysroot's copy), written for the core being emulated;
QEMU's default `-cpu max` gives LiteRT INT8 garbage (0 % top-1), so only named cores are used.

The images: the first --images (default 200) of the test split of the JPEG copy, in its order: a fixed subset, since
emulation costs about 50 ms per image and file for the small nets (seconds for EfficientNet-Lite0), and since
agreement, not accuracy, is the question (200 images: one differing top-1 is 0.5 %). Results go to
benchmarks/results/arm64/arm64.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("EDGECIFAR_ARM64", "~/.cache/edgecifar-arm64")).expanduser()
SYSROOT = CACHE / "sysroot"
SITE = "/opt/edgecifar-site"  # the wheels, inside the sysroot
READY = SYSROOT / ".edgecifar-ready"  # written last: a sysroot without it is incomplete
DEBIAN, PYTHON = "bookworm", "3.11"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3.11", "libstdc++6", "libgcc-s1")  # with their dependencies (the wheels need libstdc++)
RUNTIMES = ("numpy", "onnxruntime", "ai-edge-litert")  # installed at the versions of this venv
GLIBC_TAGS = [f"manylinux_2_{m}_aarch64" for m in range(17, 37)]  # bookworm's glibc is 2.36
CORES = ("cortex-a72", "cortex-a76")
QEMU = "qemu-aarch64-static"
RESULTS = ROOT / "benchmarks" / "results" / "arm64"

# /proc/cpuinfo of each core as Linux prints it (implementer 0x41 = Arm; part 0xd08 = Cortex-A72, 0xd0b = A76)
_FEATURES = {
    "cortex-a72": "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid",
    "cortex-a76": "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp",
}
_PART = {"cortex-a72": ("0x0", "0xd08", "3"), "cortex-a76": ("0x4", "0xd0b", "1")}


def cpuinfo(core: str, cpus: int = 1) -> str:
    variant, part, revision = _PART[core]
    block = (
        f"BogoMIPS\t: 108.00\nFeatures\t: {_FEATURES[core]}\nCPU implementer\t: 0x41\nCPU architecture: 8\n"
        f"CPU variant\t: {variant}\nCPU part\t: {part}\nCPU revision\t: {revision}\n\n"
    )
    return "".join(f"processor\t: {i}\n{block}" for i in range(cpus))


# ---------------------------------------------------------------- set-up


def ensure_qemu() -> str:
    """The path of qemu-aarch64-static, installed from Debian's qemu-user-static where missing (needs root)."""
    found = shutil.which(QEMU)
    if found:
        return found
    if os.geteuid() != 0:
        sys.exit(f"error: {QEMU} not found: install Debian's qemu-user-static (apt-get install qemu-user-static)")
    subprocess.run(["apt-get", "update"], check=True)
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "qemu-user-static"], check=True)
    return shutil.which(QEMU) or sys.exit(f"error: {QEMU} still missing after installing qemu-user-static")


def _apt(*args: str) -> list[str]:
    """apt-get/apt-cache options for a private arm64 view of Debian: its own sources, state and cache folders."""
    apt = CACHE / "apt"
    return [
        *args,
        "-o",
        "APT::Architecture=arm64",
        "-o",
        "APT::Architectures=arm64",
        "-o",
        f"Dir::State={apt / 'state'}",
        "-o",
        f"Dir::State::status={apt / 'status'}",
        "-o",
        f"Dir::Cache={apt / 'cache'}",
        "-o",
        f"Dir::Etc::SourceList={apt / 'sources.list'}",
        "-o",
        "Dir::Etc::SourceParts=/dev/null",
        "-o",
        "Debug::NoLocking=1",
    ]


def ensure_sysroot() -> None:
    """Debian's arm64 python3.11 (and libstdc++) unpacked into SYSROOT, with the aarch64 wheels in SITE."""
    if READY.is_file():
        return
    apt = CACHE / "apt"
    for folder in (apt / "state" / "lists" / "partial", apt / "cache" / "archives" / "partial", apt / "debs"):
        folder.mkdir(parents=True, exist_ok=True)
    (apt / "status").touch()
    (apt / "sources.list").write_text(f"deb [arch=arm64] {MIRROR} {DEBIAN} main\n")
    subprocess.run(_apt("apt-get", "update"), check=True)
    closure = subprocess.run(
        _apt(
            "apt-cache",
            "depends",
            "--recurse",
            "--no-recommends",
            "--no-suggests",
            "--no-conflicts",
            "--no-breaks",
            "--no-replaces",
            "--no-enhances",
            "--no-pre-depends",
            *PACKAGES,
        ),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    names = sorted({ln.strip() for ln in closure.splitlines() if ln and not ln.startswith((" ", "<"))})
    subprocess.run(_apt("apt-get", "download", *names), check=True, cwd=apt / "debs")
    if SYSROOT.exists():
        shutil.rmtree(SYSROOT)
    SYSROOT.mkdir(parents=True)
    for deb in sorted((apt / "debs").glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(SYSROOT)], check=True)
    _install_wheels()
    (SYSROOT / "proc").mkdir(exist_ok=True)
    READY.write_text(json.dumps({"packages": names, "wheels": _versions()}, indent=1))


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in RUNTIMES}


def _install_wheels() -> None:
    pip = [sys.executable, "-m", "pip"]
    if subprocess.run([*pip, "--version"], check=False, capture_output=True).returncode != 0:
        pip = [shutil.which("pip3") or sys.exit("error: pip is needed to fetch the aarch64 wheels")]
    platforms = [arg for tag in GLIBC_TAGS for arg in ("--platform", tag)]
    subprocess.run(
        [
            *pip,
            "install",
            "--quiet",
            "--target",
            f"{SYSROOT}{SITE}",
            *platforms,
            "--only-binary=:all:",
            "--python-version",
            PYTHON,
            "--implementation",
            "cp",
            *(f"{name}=={v}" for name, v in _versions().items()),
        ],
        check=True,
    )


def core_root(core: str) -> Path:
    """The sysroot as `core` sees it: a hard-linked copy of SYSROOT (seconds, no space) with that core's
    /proc/cpuinfo, so that runs on two cores at once never read each other's."""
    root = CACHE / f"sysroot-{core}"
    if not (root / READY.name).is_file():
        if root.exists():
            shutil.rmtree(root)
        subprocess.run(["cp", "-al", str(SYSROOT), str(root)], check=True)
    info = root / "proc" / "cpuinfo"
    info.unlink(missing_ok=True)  # a hard link would write through to SYSROOT's
    info.write_text(cpuinfo(core))
    return root


def qemu_python(core: str) -> list[str]:
    """The command that runs the sysroot's python3.11 on `core`, its /proc/cpuinfo set to that core's."""
    if core == "max":
        raise ValueError("-cpu max corrupts LiteRT INT8 results: name a core")
    root = core_root(core)
    return [QEMU, "-cpu", core, "-L", str(root), str(root / "usr" / "bin" / f"python{PYTHON}")]


def qemu_env() -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": SITE,
        "PYTHONNOUSERSITE": "1",
        "LC_ALL": "C.UTF-8",
        "OMP_NUM_THREADS": "1",
        "HOME": "/tmp",
    }


# ---------------------------------------------------------------- the worker (numpy and a runtime only)


def run_files(files: list[str], images_path: str, out_path: str) -> None:
    """Each file's raw outputs on the images (one thread; .tflite image by image, as the file holds batch 1),
    saved to `out_path` (.npz, one array per file, plus the seconds each took under the key 'seconds')."""
    import numpy as np

    images = np.load(images_path)["images"]
    outputs, seconds = {}, {}
    for i, path in enumerate(files):
        started = time.perf_counter()
        if path.endswith(".onnx"):
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = 1
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            found = np.concatenate(
                [session.run(None, {name: images[k : k + 50]})[0] for k in range(0, len(images), 50)]
            )
        else:
            from ai_edge_litert.interpreter import Interpreter

            interpreter = Interpreter(model_path=path, num_threads=1)
            interpreter.allocate_tensors()
            (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
            if inp["dtype"] == np.int8:  # a TFLite Micro file: int8 = uint8 - 128
                batch = (images ^ np.uint8(0x80)).view(np.int8)
            else:
                batch = images
            rows = []
            for image in batch:
                interpreter.set_tensor(inp["index"], image[None])
                interpreter.invoke()
                rows.append(interpreter.get_tensor(out["index"])[0].copy())
            found = np.stack(rows)
        outputs[f"f{i}"] = found
        seconds[f"f{i}"] = time.perf_counter() - started
    np.savez(out_path, seconds=json.dumps(seconds), **outputs)


# ---------------------------------------------------------------- the benchmark (host side)


def committed_files() -> list[dict]:
    """Manifest entries of the committed INT8 ONNX and .tflite files (LiteRT and TFLite Micro), smallest first."""
    manifest = json.loads((ROOT / "exported" / "manifest.json").read_text())["artifacts"]
    found = [
        e
        for e in manifest
        if e["precision"] == "int8"
        and e["path"].endswith((".onnx", ".tflite"))
        and (ROOT / "exported" / e["path"]).is_file()
    ]
    return sorted(found, key=lambda e: e["bytes"])


def test_images(data: str, count: int, size: tuple[int, int] = (32, 32)):
    """The first `count` test images of `data` (uint8 [N, H, W, 3]) and their labels."""
    sys.path.insert(0, str(ROOT))
    from edgecifar.data import load_data

    splits = load_data(data, None, input_size=size)
    return splits.test_x[:count], splits.test_y[:count]


def run(
    files: list[Path], images_path: Path, command: list[str], env: dict[str, str] | None, out: Path, timeout: float
) -> dict:
    """The worker over `files` under `command` (a python); {"outputs": [...], "seconds": [...]} or {"error"}."""
    import numpy as np

    worker = [
        *command,
        str(Path(__file__).resolve()),
        "--worker",
        "--images-file",
        str(images_path),
        "--out-file",
        str(out),
        *map(str, files),
    ]
    proc = subprocess.run(worker, check=False, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {(proc.stderr.strip().splitlines() or ['?'])[-1][:300]}"}
    data = np.load(out)
    seconds = json.loads(str(data["seconds"]))
    return {
        "outputs": [data[f"f{i}"] for i in range(len(files))],
        "seconds": [seconds[f"f{i}"] for i in range(len(files))],
    }


def compare(reference, found, labels) -> dict:
    import numpy as np

    ref, got = np.asarray(reference, np.float64), np.asarray(found, np.float64)
    return {
        "identical": bool(np.array_equal(reference, found)),
        "max_abs_diff": float(np.abs(ref - got).max()),
        "top1_agreement": float((ref.argmax(1) == got.argmax(1)).mean()),
        "top1": float((got.argmax(1) == labels).mean()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        default=str(ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"),
        help="the data set whose test split is used (default: the JPEG copy)",
    )
    parser.add_argument("--images", type=int, default=200, help="first N test images (default 200)")
    parser.add_argument("--cores", default=",".join(CORES), help="named QEMU cores (never 'max')")
    parser.add_argument("--setup-only", action="store_true", help="prepare qemu and the sysroot, run nothing")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--images-file", help=argparse.SUPPRESS)
    parser.add_argument("--out-file", help=argparse.SUPPRESS)
    parser.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_files(args.files, args.images_file, args.out_file)
        return 0
    import numpy as np

    cores = [c for c in args.cores.split(",") if c]
    if "max" in cores:
        parser.error("-cpu max corrupts LiteRT INT8 results (0 % top-1): name cores, e.g. cortex-a72,cortex-a76")
    ensure_qemu()
    ensure_sysroot()
    if args.setup_only:
        print(f"ready: {SYSROOT}")
        return 0
    entries = committed_files()
    images, labels = test_images(args.data, args.images)
    work = CACHE / "work"
    work.mkdir(exist_ok=True)
    images_path = work / "images.npz"
    np.savez(images_path, images=images)
    files = [ROOT / "exported" / e["path"] for e in entries]
    print(f"{len(files)} files, {len(images)} images; x86 reference ...", flush=True)
    x86 = run(files, images_path, [sys.executable], None, work / "x86.npz", 3600)
    if "error" in x86:
        sys.exit(f"error: the x86 reference run failed: {x86['error']}")
    results = []
    for core in cores:
        done = work / f"rows-{core}.jsonl"  # each row as it is measured: an interrupted run resumes
        known = (
            {(r["file"], r["sha256"], r["images"]): r for r in map(json.loads, done.read_text().splitlines())}
            if done.is_file()
            else {}
        )
        for i, (entry, file) in enumerate(zip(entries, files)):
            if (row := known.get((entry["path"], entry["sha256"], len(images)))) is not None:
                results.append(row)
                continue
            print(f"{core}: {entry['path']} ...", flush=True)
            arm = run([file], images_path, qemu_python(core), qemu_env(), work / f"{core}.npz", 3600)
            row = {
                "file": entry["path"],
                "sha256": entry["sha256"],
                "format": entry["format"],
                "bytes": entry["bytes"],
                "core": core,
                "images": len(images),
                "x86_top1": float((x86["outputs"][i].argmax(1) == labels).mean()),
            }
            if "error" in arm:
                row["error"] = arm["error"]
            else:
                row.update(compare(x86["outputs"][i], arm["outputs"][0], labels))
                row["emulated_ms_per_image"] = round(1000 * arm["seconds"][0] / len(images), 1)
            results.append(row)
            print(f"  {json.dumps(row)}", flush=True)
            if "error" not in row:
                with open(done, "a") as f:
                    f.write(json.dumps(row) + "\n")
    write_results(args.out, results, len(images), cores)
    return 0


def write_results(out: Path, rows: list[dict], images: int, cores: list[str]) -> None:
    import platform

    out.mkdir(parents=True, exist_ok=True)
    setup = json.loads(READY.read_text())
    qemu = subprocess.run([QEMU, "--version"], check=True, capture_output=True, text=True).stdout.splitlines()[0]
    header = {
        "images": f"the first {images} test images of the JPEG copy, in order",
        "cores": cores,
        "qemu": qemu,
        "sysroot": f"Debian {DEBIAN} arm64, python{PYTHON}",
        "wheels": setup["wheels"],
        "x86": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "threads": 1,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out / "arm64.json").write_text(json.dumps({"header": header, "rows": rows}, indent=1) + "\n")
    lines = [
        "# INT8 files on emulated ARM64 cores against x86",
        "",
        f"{header['images']}; {qemu}; {header['sysroot']}; wheels "
        + ", ".join(f"{k} {v}" for k, v in header["wheels"].items())
        + "; one thread. "
        "`identical`: every output value bit for bit the x86 one. `max abs diff`: in the file's own output units (float "
        "logits for ONNX, int8 steps for .tflite files, whose outputs are int8). Emulated time (QEMU's, not a "
        "device's) includes starting the interpreter and loading the file.",
        "",
        "| file | core | identical | top-1 agreement | max abs diff | top-1 (ARM) | top-1 (x86) | emulated ms/image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['file']} | {r['core']} | error: {r['error']} | | | | | |")
            continue
        lines.append(
            f"| {r['file']} | {r['core']} | {'yes' if r['identical'] else 'no'} | "
            f"{r['top1_agreement']:.1%} | {r['max_abs_diff']:.3g} | {r['top1']:.1%} | {r['x86_top1']:.1%} | "
            f"{r['emulated_ms_per_image']} |"
        )
    (out / "arm64.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
