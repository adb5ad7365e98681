"""How much of airbench's published 94 % is test-time augmentation? Evaluate reference runs on the CIFAR-10 test
set (the JPEG copy) single view, flip-averaged, and with airbench's level-2 TTA (flip x {no shift, 1 px up-left,
1 px down-right}, weighted as in airbench94_muon.py's `infer_mirror_translate`), in PyTorch.

    uv run python benchmarks/tta_gap.py runs/reference/airnet_m [more runs]

Writes benchmarks/results/tta_gap.{json,md}. edgecifar's published figures are single view: a flip-averaged
model would have to carry both views in its exported graph and pay for them in latency.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import torch
import torch.nn.functional as F

from edgecifar.data import load_data
from edgecifar.runs import load_run
from edgecifar.utils import library_versions, machine_info, write_json

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"


@torch.no_grad()
def tta_logits(model, images: torch.Tensor, level: int) -> torch.Tensor:
    """airbench's infer levels on uint8 NHWC images: 0 single view, 1 mirror average, 2 mirror x translate."""

    def mirror(x):
        return 0.5 * model(x) + 0.5 * model(x.flip(2))

    if level == 0:
        return model(images)
    if level == 1:
        return mirror(images)
    padded = F.pad(images.permute(0, 3, 1, 2).float(), (1,) * 4, mode="reflect").to(torch.uint8).permute(0, 2, 3, 1)
    h, w = images.shape[1:3]
    shifted = [padded[:, 0:h, 0:w], padded[:, 2 : h + 2, 2 : w + 2]]
    return 0.5 * mirror(images) + 0.5 * torch.stack([mirror(s) for s in shifted]).mean(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--data", default=str(DATA))
    args = parser.parse_args()
    splits = load_data(args.data)
    x, y = torch.from_numpy(splits.test_x), torch.from_numpy(splits.test_y)
    rows = []
    for run in args.runs:
        model = load_run(run).eval()
        accs = [
            float(
                torch.cat([tta_logits(model, x[i : i + 500], level).argmax(1) for i in range(0, len(y), 500)])
                .eq(y)
                .float()
                .mean()
            )
            for level in (0, 1, 2)
        ]
        rows.append(
            {
                "run": str(run),
                "model": model.meta.model,
                "single_view": accs[0],
                "flip": accs[1],
                "flip_translate": accs[2],
            }
        )
        print(rows[-1], flush=True)
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": machine_info(),
        "data": "CIFAR-10 (JPEG copy)",
        "versions": library_versions("torch"),
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / "tta_gap.json", result)
    lines = [
        f"# Test-time augmentation on the reference runs ({result['date']}, CIFAR-10 JPEG copy, PyTorch)",
        "",
        "| run | single view % | flip-averaged % | airbench level 2 % |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r['run']} | {r['single_view']:.2%} | {r['flip']:.2%} | {r['flip_translate']:.2%} |".replace("%", "")
        for r in rows
    ]
    (RESULTS / "tta_gap.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
