"""Do INT8 files compute the same on CPUs without VNNI? ONNX Runtime (MLAS), LiteRT and ExecuTorch (XNNPACK)
have no ISA switch: they dispatch on CPUID. So the AVX2 path runs under QEMU's user-mode emulator with a Haswell
CPU model (AVX2, no AVX-512, no VNNI) and the logits are compared with this CPU's own path on the same test
images. (OpenVINO has oneDNN's own cap: `edgecifar bench --isa native,avx2`.)

    uv run --extra edge python benchmarks/isa_paths.py FILE.onnx FILE.tflite FILE.pte ... \
        --data ../shared/data/cifar10-jpeg.tar.gz [--images 300] [--out benchmarks/results/isa_paths_emulated.json]

Writes the JSON: per file, the largest |int8 weight| of an ONNX file on MLAS's GEMM path, depthwise convs left
out (<= 64: 7-bit, exact on AVX2 by arithmetic; depthwise weights are exact with 8 bits, edgecifar.isa), the max
|logit difference| between the two paths, their top-1 agreement and accuracies. (isa_paths_onnx.json is the
first, ONNX-only run.)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

RESULT = Path(__file__).parent / "results" / "isa_paths_emulated.json"


def logits(files: list[str], images: Path, out: Path) -> None:
    """Run in this process (on whatever INT8 path it has): every file's logits on the images, into `out`."""
    from edgecifar.runtime import load_artifact

    x = np.load(images)["x"]
    found = {}
    for i, f in enumerate(files):
        artifact = load_artifact(f, threads=1)
        found[f"f{i}"] = np.concatenate([artifact.run(x[j : j + 50]) for j in range(0, len(x), 50)])
    np.savez(out, **found)


def widest_weight(path: str) -> int | None:
    """The largest |int8 weight| of an ONNX file's GEMM-path weights (its depthwise convs' left out)."""
    if not path.endswith(".onnx"):
        return None
    import onnx

    from edgecifar.backends.onnx import depthwise_weights

    proto = onnx.load(path)
    graph, depthwise = proto.graph, set(depthwise_weights(proto))
    return max(
        int(np.abs(onnx.numpy_helper.to_array(t).astype(np.int32)).max())
        for t in graph.initializer
        if t.data_type == onnx.TensorProto.INT8 and t.name not in depthwise
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("files", nargs="+")
    parser.add_argument("--data", required=True)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    from edgecifar.data import load_data
    from edgecifar.isa import CAPS, EMULATOR, read_cpu_isa

    splits = load_data(args.data)
    idx = np.sort(np.random.default_rng(0).permutation(len(splits.test_y))[: args.images])
    y = splits.test_y[idx]
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "x.npz"
        np.savez(images, x=splits.test_x[idx])
        logits(args.files, images, Path(tmp) / "native.npz")
        command = [
            EMULATOR,
            "-cpu",
            CAPS["avx2"].emulator_cpu,
            sys.executable,
            __file__,
            "--logits",
            str(images),
            str(Path(tmp) / "avx2.npz"),
            *args.files,
        ]
        subprocess.run(command, check=True, capture_output=True)
        native, avx2 = np.load(Path(tmp) / "native.npz"), np.load(Path(tmp) / "avx2.npz")
        rows = [
            {
                "file": f,
                "max_abs_int8_weight": widest_weight(f),
                "max_abs_logit_diff": float(np.abs(native[k] - avx2[k]).max()),
                "top1_agreement": float((native[k].argmax(1) == avx2[k].argmax(1)).mean()),
                "accuracy_native": float((native[k].argmax(1) == y).mean()),
                "accuracy_avx2": float((avx2[k].argmax(1) == y).mean()),
            }
            for f, k in zip(args.files, native.files, strict=True)
        ]
    args.out.write_text(
        json.dumps(
            {
                "cpu": read_cpu_isa().record(),
                "avx2_path": " ".join(command[:3]),
                "test_images": len(y),
                "data": args.data,
                "files": rows,
            },
            indent=1,
        )
        + "\n"
    )
    for r in rows:
        print(r)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--logits"]:
        logits(sys.argv[4:], Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        main()
