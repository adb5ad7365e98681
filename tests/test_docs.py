"""The documentation against the live code: every fenced `edgecifar` command in README.md and docs/*.md names a
command and options that exist (read from the Typer app as it is now, so commands and options added later are
checked as they land), README.md stays short, every relative link points at a file, and the results index
(benchmarks/results/README.md) is the one benchmarks/results_index.py writes and lists every result there."""

from __future__ import annotations

import importlib.util
import re
import shlex
import sys
import typing
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from edgecifar.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
COMMAND_DOCS = [README, *DOCS]
LINK_DOCS = [README, *DOCS, ROOT / "CHANGELOG.md", ROOT / "benchmarks" / "results" / "README.md"]
README_MAX_LINES = 350

FENCE = re.compile(r"^\s*(```|~~~)\s*([\w+-]*)")
SHELL_FENCES = {"", "bash", "sh", "shell", "console", "zsh"}  # a fence of another language holds no command
COMMAND_START = re.compile(r"^(?:\$ )?(?:[A-Z_]+=\S* )*(?:edgecifar|uv run|torchrun|python3?) |-m edgecifar ")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
SEPARATORS = re.compile(r"\s(?:&&|\|\||;|\|)\s")


@dataclass(frozen=True)
class Command:
    where: str  # "README.md:123"
    text: str  # the command as written (continuation lines joined)
    args: tuple[str, ...]  # what follows the `edgecifar` program token: the subcommand and its arguments
    error: str = ""  # why the line could not be read as a shell command


def fenced_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every line inside a fenced code block, `\\` continuations joined onto their first line."""
    out, inside, shell, pending = [], False, False, None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if fence := FENCE.match(line):
            inside, pending = not inside, None
            shell = inside and fence.group(2).lower() in SHELL_FENCES
            continue
        if not shell:
            continue
        if pending is not None:
            pending = (pending[0], pending[1] + " " + line.strip())
        else:
            pending = (number, line.strip())
        if pending[1].endswith("\\"):
            pending = (pending[0], pending[1][:-1].rstrip())
            continue
        out.append(pending)
        pending = None
    return out


def program_args(tokens: list[str]) -> tuple[str, ...] | None:
    """The arguments after the `edgecifar` program in one shell command, or None when it does not run edgecifar.

    Recognised: `edgecifar ...`, `uv run [uv options] edgecifar ...` and `... -m edgecifar ...` (python, torchrun);
    `pip install edgecifar` or `python -m edgecifar.runtime` are not the CLI."""
    while tokens and (tokens[0] == "$" or re.match(r"^[A-Z_][A-Z0-9_]*=", tokens[0])):
        tokens = tokens[1:]  # a prompt, or environment variables set for the command
    if "edgecifar" not in tokens:
        return None
    at = tokens.index("edgecifar")
    before = tokens[:at]
    if at == 0 or before[-1] == "-m" or before[:2] == ["uv", "run"]:
        return tuple(tokens[at + 1 :])
    return None


def commands(path: Path) -> list[Command]:
    found = []
    for number, line in fenced_lines(path):
        for part in SEPARATORS.split(line):
            where = f"{path.relative_to(ROOT)}:{number}"
            if not COMMAND_START.search(part.strip()):
                continue  # output, a comment, another program
            try:
                tokens = shlex.split(part, comments=True)
            except ValueError as e:  # an unbalanced quote: the command cannot run as written
                if "edgecifar" in part:
                    found.append(Command(where, part.strip(), (), f"not a shell command ({e})"))
                continue
            args = program_args(tokens)
            if args is not None:
                found.append(Command(where, part.strip(), args))
    return found


ALL_COMMANDS = [c for path in COMMAND_DOCS for c in commands(path)]
GROUP = typer.main.get_command(app)
runner = CliRunner()


def choices(param) -> list[str] | None:
    """The values an option accepts when they are a fixed set (an Enum in Typer's annotation), else None."""
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    for candidate in (annotation, *typing.get_args(annotation)):  # Optional[SomeEnum] too
        if isinstance(candidate, type) and issubclass(candidate, Enum):
            return [str(member.value) for member in candidate]
    return None


def problems(command: Command) -> list[str]:
    """What in one documented command the app does not accept: the subcommand, an option, a choice's value."""
    if command.error:
        return [command.error]
    if not command.args or command.args[0].startswith("-"):
        return [] if not command.args or command.args[0] == "--help" else [f"no subcommand before {command.args[0]}"]
    name, *rest = command.args
    sub = GROUP.commands.get(name)
    if sub is None:
        return [f"no command {name!r} (the app has {', '.join(sorted(GROUP.commands))})"]
    params = {opt: p for p in sub.params for opt in (*p.opts, *p.secondary_opts) if opt.startswith("-")}
    found, i = [], 0
    while i < len(rest):
        token = rest[i]
        i += 1
        if not token.startswith("-") or token == "-":
            continue
        option, eq, value = token.partition("=")
        param = params.get(option)
        if option == "--help":
            continue
        if param is None:
            found.append(f"{name} has no option {option}")
            continue
        if getattr(param, "is_flag", False) or getattr(param, "count", False):
            continue
        if not eq:
            if i >= len(rest):
                found.append(f"{name} {option} needs a value")
                continue
            value, i = rest[i], i + 1
        allowed = choices(param)
        if allowed is not None and value not in allowed:
            found.append(f"{name} {option} {value}: not one of {', '.join(allowed)}")
    return found


def test_the_docs_have_edgecifar_commands():
    assert len([c for c in ALL_COMMANDS if c.where.startswith("README.md")]) >= 8


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=lambda c: c.where)
def test_documented_command_exists_with_its_options(command: Command):
    found = problems(command)
    assert not found, f"{command.where}: {'; '.join(found)}\n    {command.text}"
    name = command.args[0] if command.args and not command.args[0].startswith("-") else None
    result = runner.invoke(app, [name, "--help"] if name else ["--help"])
    assert result.exit_code == 0, (
        f"{command.where}: `edgecifar {name or ''} --help` exited {result.exit_code}: {result.output}"
    )


def test_the_checker_finds_what_does_not_exist():
    """The checker itself: a wrong subcommand, option or choice is reported; the right ones are not."""
    assert problems(Command("x:1", "", ("train", "--model", "edge_tiny", "--no-bf16", "--epochs=2"))) == []
    assert problems(Command("x:1", "", ("export", "runs/x", "--format", "onnx", "--precision", "int8"))) == []
    assert problems(Command("x:1", "", ("trian",)))[0].startswith("no command 'trian'")
    assert problems(Command("x:1", "", ("train", "--epoch", "2"))) == ["train has no option --epoch"]
    assert "not one of" in problems(Command("x:1", "", ("export", "runs/x", "--format", "onnxx")))[0]
    assert program_args(shlex.split("uv run --extra edge edgecifar bench exported/")) == ("bench", "exported/")
    assert program_args(shlex.split("uv run torchrun --nproc_per_node 2 -m edgecifar train")) == ("train",)
    assert program_args(shlex.split("$ OMP_NUM_THREADS=1 edgecifar doctor")) == ("doctor",)
    assert program_args(shlex.split("pip install --no-deps edgecifar")) is None
    assert program_args(shlex.split("python -m edgecifar.runtime cat.jpg")) is None
    assert COMMAND_START.search("uv run edgecifar models") and COMMAND_START.search("$ edgecifar doctor")
    assert not COMMAND_START.search("training scratch_cnn (1,143,875 params) on 50,000 images, cpu: the recipe's")


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; at most {README_MAX_LINES}: move detail to docs/"


@pytest.mark.parametrize("path", [p for p in LINK_DOCS if p.exists()], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_files(path: Path):
    text = path.read_text(encoding="utf-8")
    broken = []
    for number, line in enumerate(text.splitlines(), 1):
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL or an anchor in the same page
            if not (path.parent / target.split("#")[0]).exists():
                broken.append(f"{path.relative_to(ROOT)}:{number}: {target}")
    assert not broken, "links to nothing:\n" + "\n".join(broken)


def load_results_index():
    spec = importlib.util.spec_from_file_location("results_index", ROOT / "benchmarks" / "results_index.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def test_results_index_is_written_by_its_script_and_lists_every_result():
    index = load_results_index()
    missing, unlisted = index.check()
    assert not missing, f"benchmarks/results_index.py lists results that are not there: {missing}"
    assert not unlisted, (
        f"results not in the index: {unlisted}; add an Entry to SECTIONS in "
        "benchmarks/results_index.py and run `uv run python benchmarks/results_index.py`"
    )
    written = (ROOT / "benchmarks" / "results" / "README.md").read_text(encoding="utf-8")
    assert written == index.render(), (
        "benchmarks/results/README.md differs from what its script writes: run "
        "`uv run python benchmarks/results_index.py`"
    )


def test_the_readme_lists_every_command():
    """The README's command table names every command the app has, so a new command is documented when it lands."""
    text = README.read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `edgecifar ([a-z][a-z0-9-]*)", text, re.MULTILINE))
    missing = sorted(set(GROUP.commands) - listed)
    gone = sorted(listed - set(GROUP.commands))
    assert not missing, f"README.md's command table lacks: {missing} (one line each, under '## Commands')"
    assert not gone, f"README.md's command table lists commands the app does not have: {gone}"


def test_the_code_map_names_every_module():
    """Every module of the package has its line in the README's code map (a backend by its name in `backends/`'s)."""
    text = README.read_text(encoding="utf-8")
    start = text.index("Code map")
    code_map = text[start : text.index("\n## ", start)]
    package = ROOT / "edgecifar"
    modules = [p for p in package.rglob("*.py") if p.stem not in ("__init__", "__main__")]
    missing = [
        str(p.relative_to(package)) for p in modules if f"`{p.stem}`" not in code_map and f"`{p.name}`" not in code_map
    ]
    assert not missing, f"README.md's code map lacks: {sorted(missing)} (one line each, under 'Code map')"


def test_the_docs_index_links_every_page():
    index = (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\(([\w.-]+\.md)", index))
    missing = sorted(p.name for p in DOCS if p.name != "README.md" and p.name not in linked)
    assert not missing, f"docs/README.md does not link: {missing}"
