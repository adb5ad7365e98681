"""`edgecifar evaluate RUN_DIR`: test accuracy, per-class accuracy and a confusion matrix.

A class with no test images has no accuracy: None in the report and JSON (null), "n/a" for people, never 0 %,
which is the figure of a class that is always wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .contract import model_size
from .errors import DataError
from .runs import CONFUSION_JSON, CONFUSION_PNG
from .utils import atomic_path, data_source, write_json

CELL_TEXT_MAX = 30  # above this many classes the plot has no per-cell numbers: unreadable, and 1,000 classes
# meant 10^6 matplotlib Text objects (over 10 minutes and 9.5 GB); the counts are in confusion.json
TICK_LABELS_MAX = 60  # above this, every k-th class name only


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    return np.bincount(labels * num_classes + preds, minlength=num_classes**2).reshape(num_classes, num_classes)


def evaluate_run(run_dir: Path | str, data: str | None = None, cache_dir: Path | str | None = None) -> dict[str, Any]:
    """Evaluate a run on its data's test split (or `data`); writes confusion.json and confusion.png beside it.

    Returns the report: test_acc, per_class {class: accuracy, or None without test images}, per_class_images,
    confusion (rows: true class), images, files. Raises DataError when the data's classes differ from the model's.
    """
    import torch

    from .data import load_data
    from .runs import load_run, read_config
    from .train import predict_logits

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    model = load_run(run_dir)
    source = data_source(config, data)
    splits = load_data(source, cache_dir, input_size=model_size(model.meta))  # at the run's input size
    classes = model.meta.classes
    if splits.classes != classes:
        raise DataError(f"{source} has classes {splits.classes}, the model was trained on {classes}")
    preds = predict_logits(model, torch.from_numpy(splits.test_x)).argmax(1).numpy()
    matrix = confusion_matrix(splits.test_y, preds, len(classes))
    totals = matrix.sum(axis=1)
    per_class = {c: float(matrix[i, i] / totals[i]) if totals[i] else None for i, c in enumerate(classes)}
    report = {
        "model": model.meta.model,
        "run": str(run_dir),
        "data": source,
        "test_acc": float(np.trace(matrix) / max(matrix.sum(), 1)),
        "per_class": per_class,
        "per_class_images": {c: int(n) for c, n in zip(classes, totals)},
        "classes": classes,
        "confusion": matrix.tolist(),
        "images": int(matrix.sum()),
    }
    report["files"] = {"json": str(run_dir / CONFUSION_JSON), "png": str(run_dir / CONFUSION_PNG)}
    write_json(run_dir / CONFUSION_JSON, report)
    plot_confusion(matrix, classes, f"{report['model']}: {report['test_acc']:.2%} top-1", run_dir / CONFUSION_PNG)
    return report


def plot_confusion(matrix: np.ndarray, classes: list[str], title: str, path: Path) -> None:
    """The matrix as an image, rows normalized to each true class's images (a class without test images stays
    blank). Up to CELL_TEXT_MAX classes each cell also shows its count; above that the figure is a summary:
    colour only, every k-th class named, the counts left to confusion.json. Seconds for 1,000 classes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(classes)
    totals = matrix.sum(axis=1, keepdims=True)
    rates = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    fig, ax = plt.subplots(figsize=(7, 6) if n <= CELL_TEXT_MAX else (9, 8))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class's test images")
    step = max(1, -(-n // TICK_LABELS_MAX))
    ticks = list(range(0, n, step))
    ax.set(
        xticks=ticks,
        yticks=ticks,
        xlabel="predicted",
        ylabel="true",
        title=title if n <= CELL_TEXT_MAX else f"{title}\n({n} classes: counts in confusion.json)",
    )
    ax.set_xticklabels(
        [classes[i] for i in ticks],
        rotation=45 if n <= CELL_TEXT_MAX else 90,
        ha="right",
        fontsize=None if n <= CELL_TEXT_MAX else 6,
    )
    ax.set_yticklabels([classes[i] for i in ticks], fontsize=None if n <= CELL_TEXT_MAX else 6)
    if n <= CELL_TEXT_MAX:
        for i, j in np.ndindex(matrix.shape):
            ax.text(
                j,
                i,
                matrix[i, j],
                ha="center",
                va="center",
                fontsize=7,
                color="white" if rates[i, j] > 0.5 else "black",
            )
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
