"""Data that is not CIFAR-10, at its own size, end to end: ImageFolder tree -> train -> export to every format and
precision -> bench -> predict on larger photos, with the input size read from the files at every step.

    uv run python benchmarks/own_size.py digits      # scikit-learn's handwritten digits: 8x8, 10 classes
    uv run python benchmarks/own_size.py textures    # scikit-image's brick/grass/gravel photos, 96x96 crops

Both data sets ship inside packages already installed with edgecifar's dependencies (scikit-learn and
scikit-image come with nncf), so nothing is downloaded. The trees are written to a temporary folder and
deleted afterwards; nothing made from them is committed but the figures, in benchmarks/results/own_size-<name>.*.

- digits: the 1,797 8x8 images of sklearn.datasets.load_digits (16 grey levels, scaled to 0-255), every fifth
  image of the set held out as the test split (1,437 train, 360 test). Trained at its native 8x8.
- textures: the three 512x512 texture photos of skimage.data (brick, grass, gravel). The left 352 columns give
  the training crops, the right 160 the test crops (no pixel in both): seeded 96x96 crops at native resolution
  (not resized). `predict` then classifies held-out 160x160 crops and the whole 512x512 photos, which it
  resizes to the files' 96x96.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TEXTURES = ("brick", "grass", "gravel")
TEXTURE_SPLIT = 352  # columns left of it: training crops; right of it: test crops and the held-out photos


def digits_tree(root: Path) -> list[Path]:
    """root/train|test/<digit>/*.png (8x8 greyscale); returns no extra photos (the digits are all 8x8)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(digits.images * 16, 0, 255).astype(np.uint8)  # 0..16 -> 0..255
    for i, (image, label) in enumerate(zip(images, digits.target)):
        folder = root / ("test" if i % 5 == 0 else "train") / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, "L").save(folder / f"{i:04d}.png")
    return []


def textures_tree(root: Path, side: int = 96, n_train: int = 300, n_test: int = 100) -> list[Path]:
    """root/train|test/<texture>/*.png: seeded side x side crops, train and test from disjoint columns; returns
    the held-out photos predict is run on (160x160 crops and the whole 512x512 photos)."""
    import skimage.data

    rng = np.random.default_rng(0)
    photos = []
    for name in TEXTURES:
        full = np.asarray(getattr(skimage.data, name)(), dtype=np.uint8)
        for split, count, (lo, hi) in (("train", n_train, (0, TEXTURE_SPLIT)), ("test", n_test, (TEXTURE_SPLIT, 512))):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                y, x = rng.integers(0, full.shape[0] - side), rng.integers(lo, hi - side)
                Image.fromarray(full[y : y + side, x : x + side]).save(folder / f"{i:04d}.png")
        photos.append(root / f"{name}-heldout-160.jpg")
        Image.fromarray(full[200:360, TEXTURE_SPLIT:]).save(photos[-1], quality=92)
        photos.append(root / f"{name}-whole-512.png")
        Image.fromarray(full).save(photos[-1])
    return photos


RECIPES = {  # model and the options that fit the data (a few minutes at most on a shared 2-core CPU)
    "digits": {"model": "edge_tiny", "epochs": 30, "batch_size": 64, "lr": 0.1, "translate": 1},
    "textures": {"model": "scratch_cnn", "epochs": 8, "batch_size": 32, "lr": 0.02, "translate": 8},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(RECIPES))
    parser.add_argument("--keep", type=Path, help="write the tree, run and exports here instead of a temp folder")
    args = parser.parse_args()

    from edgecifar.bench import bench
    from edgecifar.export import export_run
    from edgecifar.runtime import format_results, predict
    from edgecifar.train import TrainConfig, train
    from edgecifar.utils import library_versions, machine_info

    work = Path(args.keep or tempfile.mkdtemp(prefix=f"edgecifar-{args.dataset}-"))
    try:
        photos = (digits_tree if args.dataset == "digits" else textures_tree)(work / "data")
        recipe = RECIPES[args.dataset]
        started = time.perf_counter()
        run = train(
            TrainConfig(
                data=str(work / "data"), cache_dir=str(work / "cache"), out=str(work / "runs" / args.dataset), **recipe
            ),
            log=print,
        )  # size: the tree's default
        train_s = time.perf_counter() - started
        entries = export_run(run, "all", "all", out_dir=work / "exported", calib_size=512, verify_size=500, log=print)
        out = RESULTS / f"own_size-{args.dataset}"
        rows = bench([work / "exported"], threads=(1,), batch_size=64, out_dir=out, runs_dir=run.parent, log=print)
        predictions = []
        if photos:
            int8 = next(e.path for e in entries if e.format == "onnx" and e.precision == "int8")
            model = work / "exported" / int8
            predictions = predict(photos, model, topk=1)
            print(format_results(predictions))
        config = json.loads((run / "config.json").read_text())
        summary = {
            "dataset": args.dataset,
            "recipe": recipe,
            "input_size": config["train"]["input_size"],
            "input_size_chosen": config["data"]["input_size_chosen"],
            "images": {k: config["data"][k] for k in ("train", "test")},
            "train_seconds": round(train_s, 1),
            "test_acc": json.loads((run / "metrics.json").read_text())["test_acc"],
            "rows": [
                {
                    k: r[k]
                    for k in (
                        "variant",
                        "accuracy",
                        "size_bytes",
                        "params",
                        "macs",
                        "latency_p50_ms",
                        "throughput_ips",
                        "input_size",
                    )
                    if k in r
                }
                for r in (row.to_json() for row in rows)
            ],
            "predictions": [
                {
                    "image": Path(p["image"]).name,
                    "class": p["predictions"][0]["class"],
                    "probability": round(p["predictions"][0]["probability"], 4),
                }
                for p in predictions
            ],
            "machine": machine_info(),
            "python": platform.python_version(),
            "versions": library_versions("torch", "onnxruntime", "openvino", "scikit-learn", "scikit-image"),
        }
        (RESULTS / f"own_size-{args.dataset}.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
