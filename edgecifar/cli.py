"""The `edgecifar` command: each command parses options, calls one library function, prints. The commands live
in cli_train (train, evaluate, models) and cli_ship (export, qat, quant-report, predict, bench, recommend,
pipeline, doctor), registered on cli_common's app when imported here; errors become one line and an exit code
in cli_common.handle_errors, and only there."""

from __future__ import annotations

from . import cli_train  # noqa: F401 - importing registers the commands, in the order of the help
from . import cli_ship  # noqa: F401
from . import cli_frontier  # noqa: F401 - frontier
from .cli_common import app
from .cli_ship import ExportFormat  # noqa: F401 - part of this module's interface (tests, scripts)

__all__ = ["app", "main", "ExportFormat"]


def main() -> None:
    app()


if __name__ == "__main__":
    main()
