"""Run Keller Jordan's own airbench94_muon.py (github.com/KellerJordan/cifar10-airbench) on the CIFAR-10 JPEG copy:
the reference for what edgecifar's port (`airnet_l`, same net and recipe) should reach on this data.

    python3 benchmarks/airbench_upstream.py --script airbench94_muon.py --data cifar10-jpeg.tar.gz --runs 5

Needs a CUDA GPU (the script is CUDA-only). The upstream file is not part of edgecifar (no internet here: pass
a copy). It runs unchanged except for four textual patches, each checked to apply once:
- its data: train.pt / test.pt in its own format (uint8 NHWC images, labels, classes) are written from the
  given source by edgecifar's decoder, so it never downloads;
- no torch.compile (model and Newton-Schulz): compilation changes the speed, not the arithmetic's accuracy,
  and max-autotune would take minutes of a short lease;
- `--runs` runs instead of 200;
- each run also prints its flip-only (TTA level 1) accuracy next to its single-view and level-2 figures.
Prints the upstream script's own table; `--out` also keeps it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

PATCHES = [
    ("@torch.compile\ndef zeropower_via_newtonschulz5", "def zeropower_via_newtonschulz5"),
    ('    model.compile(mode="max-autotune")\n', ""),
    ("for run in range(200)", "for run in range({runs})"),
    (
        "    tta_val_acc = evaluate(model, test_loader, tta_level=2)\n",
        "    tta_val_acc = evaluate(model, test_loader, tta_level=2)\n"
        '    print("flip-only (TTA level 1) accuracy:", evaluate(model, test_loader, tta_level=1))\n',
    ),
]


def write_data(source: str, folder: Path, cache: Path | None = None) -> None:
    """train.pt / test.pt as airbench's CifarLoader saves them from torchvision (plain tensors and a list of
    names: torch.load's weights_only default reads them)."""
    import torch

    from edgecifar.data import load_data

    data = load_data(source, cache)
    folder.mkdir(parents=True, exist_ok=True)
    for split, (x, y) in {"train": (data.train_x, data.train_y), "test": (data.test_x, data.test_y)}.items():
        torch.save(
            {"images": torch.from_numpy(x), "labels": torch.from_numpy(y).long(), "classes": data.classes},
            folder / f"{split}.pt",
        )


def patched(script: str, runs: int) -> str:
    for old, new in PATCHES:
        if script.count(old) != 1:
            raise SystemExit(f"error: the upstream script has changed: {old.strip()!r} is not there once")
        script = script.replace(old, new.format(runs=runs))
    return script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--script", type=Path, required=True, help="a copy of upstream airbench94_muon.py")
    parser.add_argument("--data", required=True, help="what edgecifar --data takes")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cache", type=Path, help="edgecifar's cache of decoded data")
    parser.add_argument("--out", type=Path, help="also write the output here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="airbench-upstream-"))
    write_data(args.data, work / "cifar10", args.cache)
    (work / "airbench94_muon.py").write_text(patched(args.script.read_text(), args.runs))
    result = subprocess.run([sys.executable, "airbench94_muon.py"], cwd=work, capture_output=True, text=True)
    output = result.stdout + result.stderr
    print(output, flush=True)
    if args.out:
        args.out.write_text(output)
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
