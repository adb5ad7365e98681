"""Is the data path the bottleneck? Time training steps fed by the real data path (uint8 tensors in
memory, batch crop/flip/cutout on the device) against the very same steps on pre-made batches.

    uv run python benchmarks/data_path.py --data ../shared/data/cifar10-jpeg.tar.gz

Writes benchmarks/results/data_path.{json,md}. Target: ratio <= 1.10.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time
from pathlib import Path

import torch

from edgecifar.augment import cutout, random_crop_flip
from edgecifar.data import load_data
from edgecifar.models import create_model
from edgecifar.train import TrainConfig, _train_epoch, make_optimizer, train_step
from edgecifar.utils import library_versions, machine_info, write_json

RESULTS = Path(__file__).parent / "results"


def measure(model_name: str, x: torch.Tensor, y: torch.Tensor, rounds: int) -> dict:
    cfg = TrainConfig(model=model_name, epochs=1).resolved()
    model = create_model(model_name).to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)  # a constant schedule
    gen = torch.Generator().manual_seed(0)
    premade = []  # the same batches, augmented ahead of time: only the steps remain to be timed
    for idx in torch.randperm(len(y), generator=gen).split(cfg.batch_size):
        images = random_crop_flip(x[idx], 4, gen)
        premade.append((cutout(images, cfg.cutout, gen) if cfg.cutout else images, y[idx]))
    full, steps_only = [], []
    for _ in range(rounds):  # interleaved, so drifts in machine load hit both alike
        full.append(_train_epoch(model, None, None, optimizer, scheduler, x, y, cfg, 0, False)["seconds"])
        started = time.perf_counter()
        model.train()
        for images, labels in premade:
            train_step(model, None, optimizer, scheduler, images, labels, cfg)
        steps_only.append(time.perf_counter() - started)
    ratio = statistics.median(full) / statistics.median(steps_only)
    return {
        "model": model_name,
        "images": len(y),
        "batch_size": cfg.batch_size,
        "cutout": cfg.cutout,
        "epoch_seconds_data_path": full,
        "epoch_seconds_premade": steps_only,
        "ratio_median": ratio,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/cifar10-jpeg.tar.gz")
    parser.add_argument("--models", default="scratch_cnn,edge_tiny")
    parser.add_argument("--images", type=int, default=12800, help="images per timed epoch")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    splits = load_data(args.data)
    x = torch.from_numpy(splits.train_x[: args.images])
    y = torch.from_numpy(splits.train_y[: args.images])
    rows = [measure(name, x, y, args.rounds) for name in args.models.split(",")]
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": machine_info(),
        "threads": torch.get_num_threads(),
        "versions": library_versions("torch", "edgecifar"),
        "data": args.data,
        "rows": rows,
    }
    write_json(RESULTS / "data_path.json", result)
    lines = [
        "# Data path vs pre-made tensors",
        "",
        f"{result['date']}, {result['machine']['cpu']}, {result['machine']['cores']} cores, "
        f"{result['threads']} torch threads, torch {result['versions'].get('torch')}",
        "",
        "| model | images/epoch | data path (s, median) | pre-made (s, median) | ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['images']} | {statistics.median(r['epoch_seconds_data_path']):.2f} | "
            f"{statistics.median(r['epoch_seconds_premade']):.2f} | {r['ratio_median']:.3f} |"
        )
    (RESULTS / "data_path.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
