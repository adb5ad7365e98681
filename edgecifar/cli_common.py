"""What every `edgecifar` command module shares: the app, the one place errors become a line and an exit code,
the output helpers and the option types.

Errors: any EdgecifarError becomes one red line and its exit code, here and only here. Everything a user
supplies (paths, class and model names, messages that quote them) is printed literally: escaped where it
goes into rich markup, or printed with markup off. "cat [red].jpg" stays "cat [red].jpg".
"""

from __future__ import annotations

import functools
from enum import Enum
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer
from rich.console import Console
from rich.text import Text

from .errors import DiskFullError, EdgecifarError
from .utils import NO_ROOM, checked_thread_variables, no_room, writable_homes

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train, export and benchmark small CIFAR-10 classifiers for edge CPUs.",
)
console = Console()
err_console = Console(stderr=True)


def handle_errors(fn: Callable) -> Callable:
    """Turn library errors into one line and a non-zero exit code; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            writable_homes()  # before any library picks its cache or settings folder under an unwritable HOME
            checked_thread_variables()  # and before torch's OpenMP reads them
            return fn(*args, **kwargs)
        except EdgecifarError as e:
            error_line(str(e))
            raise typer.Exit(e.exit_code)
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM / SIGHUP (utils.Terminated): 128 + the signal
            err_console.print("[yellow]interrupted[/yellow]")
            raise typer.Exit(128 + getattr(e, "signum", 2))
        except PermissionError as e:  # a folder we may not write, where no library call said so itself
            where = f" {e.filename}" if e.filename else ""
            error_line(
                f"permission denied:{where}: run where you can write, or point the option or variable "
                f"that names that folder elsewhere (--out, --cache-dir, TMPDIR, XDG_CACHE_HOME)"
            )
            raise typer.Exit(1)
        except OSError as e:  # a full disk where no library call said so itself
            if (full := no_room(e)) is None:
                raise
            where = f": could not write {full.filename}" if full.filename else ""
            err_console.print(f"error: {NO_ROOM[full.errno]}{where}", highlight=False, markup=False, soft_wrap=True)
            raise typer.Exit(DiskFullError.exit_code)

    return wrapper


def error_line(message: str) -> None:
    """ "error: MESSAGE" on stderr, the message taken literally (no markup, whatever it quotes)."""
    err_console.print(Text.assemble(("error:", "red"), " ", message), highlight=False, soft_wrap=True)


def note(message: str) -> None:
    """A progress or warning line from the library, on stderr, taken literally."""
    style = "yellow" if message.startswith("warning:") else None
    err_console.print(message, style=style, markup=False, highlight=False, soft_wrap=True)


def short_paths(paths: list[str]) -> tuple[list[str], str | None]:
    """File paths as a narrow table shows them: several relative to the folder they all share (returned; None
    when they share none, and for one path, shown as given), so that what tells them apart is what is shown."""
    import os

    if len(paths) < 2:
        return list(paths), None
    folders = [os.path.dirname(os.path.abspath(p)) for p in paths]
    try:
        common = os.path.commonpath(folders) if folders else ""
    except ValueError:  # different drives
        common = ""
    if common in ("", os.sep):
        return list(paths), None
    return [os.path.relpath(os.path.abspath(p), common) for p in paths], common


def say(message: str) -> None:
    """A result line on stdout, taken literally."""
    console.print(message, markup=False, highlight=False, soft_wrap=True)


class Optimizer(str, Enum):
    sgd = "sgd"
    adamw = "adamw"
    muon = "muon"


class Schedule(str, Enum):
    onecycle = "onecycle"
    linear = "linear"


class Flip(str, Enum):
    random = "random"
    alternating = "alternating"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


# shared option aliases
DataOpt = Annotated[
    str,
    typer.Option(
        "--data",
        help="cifar10 (download), a cifar-10-batches-py folder, an "
        "ImageFolder root with train/ and test/, or a .tar.gz of one",
    ),
]
CacheOpt = Annotated[
    Optional[Path],
    typer.Option("--cache-dir", help="where downloads and decoded data are cached [default: ~/.cache/edgecifar]"),
]
RunDir = Annotated[Path, typer.Argument(help="a run folder made by `edgecifar train`")]
ThreadsOpt = Annotated[str, typer.Option(help="comma-separated runtime thread counts; each is its own row")]
BatchOpt = Annotated[int, typer.Option(min=1, help="batch size of the throughput figure")]
