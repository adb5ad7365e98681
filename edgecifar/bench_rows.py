"""A bench result as other modules read it: the report files' names, loading a bench.json, and how a row's
model and thread setting are shown. Kept apart from report.py (which draws and writes) so that recommend,
compare and frontier read results without importing the report writer, which itself asks recommend for the
Pareto front."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import BenchError

REPORT_FILES = {"json": "bench.json", "csv": "bench.csv", "md": "bench.md", "png": "bench.png"}


def load_result(path: Path | str) -> dict[str, Any]:
    """A bench.json (or a folder holding one) -> {"header", "rows"}."""
    path = Path(path)
    if path.is_dir():
        path = path / REPORT_FILES["json"]
    if not path.is_file():
        raise BenchError(f"no bench result at {path}: run `edgecifar bench` first")
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
            raise ValueError("no 'rows' list")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise BenchError(f"corrupt bench result {path}: {e}") from None
    return data


def threads_shown(row: dict[str, Any]) -> str:
    """ "2", or "16 (ran 2)" where the runtime used fewer threads than asked (OpenVINO caps its pool at the
    cores it sees)."""
    used = row.get("threads_runtime")
    return f"{row['threads']}" if used in (None, row["threads"]) else f"{row['threads']} (ran {used})"


def model_shown(row: dict[str, Any]) -> str:
    """The row's run when it is not named after its architecture ("airnet_m-kd-qat"), else the model: two
    runs of one architecture (a QAT run and its source) stay apart in every table and plot."""
    run = row.get("source_run")
    return run if run and run != row["model"] else row["model"]
