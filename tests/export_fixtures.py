"""Fixtures for the export and predict tests, loaded as a plugin (`pytest_plugins = ["export_fixtures"]`) so
both files share one session: a tiny ImageFolder data set, a briefly trained scratch_cnn run folder made the
way `edgecifar train` makes one (config.json + model.safetensors), and one export of it to every format and
precision (a few seconds each)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

CLASSES = ["alpha", "beta", "gamma"]
TINTS = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]])
from edgecifar.backends import BACKENDS, in_all, unavailable  # noqa: E402
from edgecifar.records import ManifestEntry, RunConfig  # noqa: E402

CALIB_SIZE, VERIFY_SIZE = 32, 200  # 200 test images: one flipped prediction is 0.5 %, between 0.1 % and 1 %


# what `export_run(..., "all", "all")` makes here: every backend whose converter is installed, in its precisions
# (tests of a backend whose extra is missing skip with the reason: see test_edge_backends.py)
EXPORTABLE = [b for b in BACKENDS.values() if in_all(b) and not unavailable(b, export=True)]
ALL_EXPORTS = [(b.name, p) for b in EXPORTABLE for p in b.precisions]
VARIANTS = ["PyTorch"] + [f"{BACKENDS[f].label} {p.upper()}" for f, p in ALL_EXPORTS]


def backend_params(precision: str | None = None) -> list:
    """Every backend `--format all` exports (with `precision`: those that have it) as a pytest param, skipped
    with the reason where its converter or runtime is not installed here."""
    return [
        pytest.param(
            b.name,
            id=b.name,
            marks=pytest.mark.skipif(
                bool(unavailable(b, export=True)), reason=f"{b.name}: {unavailable(b, export=True)}"
            ),
        )
        for b in BACKENDS.values()
        if in_all(b) and (precision is None or precision in b.precisions)
    ]


def tinted_image(c: int, rng: np.random.Generator, size: tuple[int, int] = (32, 32)) -> np.ndarray:
    return np.clip(TINTS[c] + rng.normal(0, 60, (*size, 3)), 0, 255).astype(np.uint8)


def make_image_tree(
    root: Path,
    n_train: int = 20,
    n_test: int = 70,
    seed: int = 0,
    size: tuple[int, int] = (32, 32),
    odd: tuple[int, int] | None = None,
) -> Path:
    """train/<class>/*.png and test/<class>/*.png: noisy images tinted by class (learnable in a few steps), of
    `size` (height, width); every fourth training image of size `odd` instead, when given."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("test", n_test)):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                shape = odd if odd and split == "train" and i % 4 == 0 else size
                Image.fromarray(tinted_image(c, rng, shape)).save(folder / f"{i:03d}.png")
    return root


def make_run(run_dir: Path, data_dir: Path, cache_dir: Path, steps: int = 15) -> Path:
    """A scratch_cnn trained for a few full-batch steps on the tree's train split, saved as a run folder."""
    import torch
    import torch.nn.functional as F

    from edgecifar.data import load_data
    from edgecifar.models import create_model
    from edgecifar.runs import save_weights, write_config

    torch.manual_seed(0)
    splits = load_data(str(data_dir), cache_dir)
    model = create_model("scratch_cnn", len(splits.classes), classes=splits.classes)
    x, y = torch.from_numpy(splits.train_x), torch.from_numpy(splits.train_y)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        loss = F.cross_entropy(model.train()(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    run_dir.mkdir(parents=True)
    save_weights(model.eval(), run_dir)
    write_config(
        run_dir,
        RunConfig(
            model=model.meta, train={"model": "scratch_cnn", "cache_dir": str(cache_dir)}, data=splits.describe()
        ),
    )
    return run_dir


def edit_manifest(folder: Path, edit: Callable[[list[Any]], Any]) -> None:
    """Edit folder/manifest.json's artifact list in place, as a person (or a bad merge) would."""
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest["artifacts"])
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


def listed_path(folder: Path, i: int) -> str:
    """The path of folder/manifest.json's i-th artifact."""
    return json.loads((folder / "manifest.json").read_text())["artifacts"][i]["path"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    data = make_image_tree(root / "data")
    return make_run(root / "runs" / "tiny", data, root / "cache")


@pytest.fixture(scope="session")
def exported(tiny_run, tmp_path_factory) -> tuple[Path, list[ManifestEntry]]:
    """(out folder, manifest entries) of the tiny run exported to every format and precision."""
    from edgecifar.export import export_run

    out = tmp_path_factory.mktemp("exported")
    entries = export_run(tiny_run, "all", "all", out_dir=out, calib_size=CALIB_SIZE, verify_size=VERIFY_SIZE)
    return out, entries
