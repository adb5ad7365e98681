"""A bench result as other modules read it: the rows (edgecifar.records.BenchRow) with the header, the report
files' names, loading a bench.json, and how a row's model and thread setting are shown. Kept apart from
report.py (which draws and writes) so that recommend, compare and frontier read results without importing the
report writer, which itself asks recommend for the Pareto front."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from .errors import BenchError
from .records import BenchRow

REPORT_FILES = {"json": "bench.json", "csv": "bench.csv", "md": "bench.md", "png": "bench.png"}


class BenchResult(list[BenchRow]):
    """A bench result: its rows, one BenchRow per artifact and thread setting in the file's order, with
    `header` (the machine, versions, settings and notes), the report `files` written, `reused` (True: an
    earlier, still current result returned without measuring) and `unread` ({position among the file's rows,
    from 0: why}) for entries of a file's "rows" that are not bench rows (a hand edit; recommend lists them)."""

    header: dict[str, Any]
    files: dict[str, Path]
    reused: bool = False
    unread: dict[int, str]

    def __init__(
        self, rows: Iterable[BenchRow] = (), header: dict[str, Any] | None = None, unread: dict[int, str] | None = None
    ):
        super().__init__(rows)
        self.header, self.files, self.unread = header or {}, {}, unread or {}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BenchResult:
        """A decoded bench.json ({"header", "rows"}): each row that reads as a BenchRow, the others in `unread`
        with what is wrong with them (the keys whose values are missing or of the wrong type)."""
        rows, unread = [], {}
        for i, row in enumerate(data.get("rows") or []):
            if not isinstance(row, dict):
                unread[i] = f"not an object ({type(row).__name__})"
            elif bad := BenchRow.bad_keys(row):
                unread[i] = ", ".join(f"{k} {row.get(k)!r}" for k in bad) + " (not what the bench writes there)"
            else:
                rows.append(BenchRow.from_json(row))
        return cls(rows, data.get("header") or {}, unread)

    def to_json(self) -> dict[str, Any]:
        """What bench.json holds."""
        return {"header": self.header, "rows": [r.to_json() for r in self]}


def load_result(path: Path | str) -> BenchResult:
    """A bench.json (or a folder holding one). Raises BenchError when there is none, or it is not JSON or has no
    "rows" list."""
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
    return BenchResult.from_json(data)


def threads_shown(row: BenchRow) -> str:
    """ "2", or "16 (ran 2)" where the runtime used fewer threads than asked (OpenVINO caps its pool at the
    cores it sees)."""
    used = row.threads_runtime
    return f"{row.threads}" if used in (None, row.threads) else f"{row.threads} (ran {used})"


def model_shown(row: BenchRow) -> str:
    """The row's run when it is not named after its architecture ("airnet_m-kd-qat"), else the model: two
    runs of one architecture (a QAT run and its source) stay apart in every table and plot."""
    run = row.source_run
    return run if run and run != row.model else row.model
