"""`edgecifar evaluate RUN_DIR`: test accuracy, per-class accuracy and a confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError
from .utils import atomic_path, data_source, write_json


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    return np.bincount(labels * num_classes + preds, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def evaluate_run(run_dir: Path | str, data: str | None = None, cache_dir: Path | str | None = None) -> dict[str, Any]:
    """Evaluate a run on its data's test split (or `data`); writes confusion.json and confusion.png beside it."""
    import torch

    from .data import load_data
    from .runs import load_run, read_config
    from .train import predict_logits

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    model = load_run(run_dir)
    source = data_source(config, data)
    splits = load_data(source, cache_dir)
    classes = model.meta["classes"]
    if splits.classes != classes:
        raise DataError(f"{source} has classes {splits.classes}, the model was trained on {classes}")
    preds = predict_logits(model, torch.from_numpy(splits.test_x)).argmax(1).numpy()
    matrix = confusion_matrix(splits.test_y, preds, len(classes))
    per_class = {c: float(matrix[i, i] / max(matrix[i].sum(), 1)) for i, c in enumerate(classes)}
    report = {"model": model.meta["model"], "run": str(run_dir), "data": source,
              "test_acc": float(np.trace(matrix) / max(matrix.sum(), 1)), "per_class": per_class,
              "classes": classes, "confusion": matrix.tolist(), "images": int(matrix.sum())}
    report["files"] = {"json": str(run_dir / "confusion.json"), "png": str(run_dir / "confusion.png")}
    write_json(run_dir / "confusion.json", report)
    plot_confusion(matrix, classes, f"{report['model']}: {report['test_acc']:.2%} top-1", run_dir / "confusion.png")
    return report


def plot_confusion(matrix: np.ndarray, classes: list[str], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 6))
    ax.imshow(matrix, cmap="Blues")
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_yticklabels(classes)
    for i, j in np.ndindex(matrix.shape):
        ax.text(j, i, matrix[i, j], ha="center", va="center", fontsize=7,
                color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
