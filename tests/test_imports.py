"""The package's import graph, read from the source: no circles, and the backends below everything that trains.

Every import counts, the ones inside functions too (a lazy import is still a dependency; only its cost is
deferred), with relative imports resolved. `from pkg import name` is an edge to the submodule pkg.name when
there is one, else to pkg itself. A package's __init__ importing its own submodules (the backends' registry) is
an ordinary edge: a submodule importing its package's __init__ back would close a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "edgecifar"

# modules that train, fine-tune or drive training (and the commands built on them): a backend must never need
# one, so that exporting, loading and running a file stays independent of how the model was made
TRAINING = {
    "train",
    "train_config",
    "qat",
    "runs",
    "resume",
    "optim",
    "distill",
    "seeds",
    "distributed",
    "data",
    "evaluate",
    "pipeline",
    "export",
    "bench",
    "bench_worker",
    "bench_targets",
    "models",
    "nets",
    "catalog",
    "cli",
    "cli_train",
    "cli_ship",
    "cli_frontier",
    "quant_report",
}


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """{module: the package's modules it imports}, for every .py file under `root` (a package folder)."""
    files = sorted(root.rglob("*.py"))
    known = {module_name(root, f) for f in files}
    graph = {}
    for path in files:
        me = module_name(root, path)
        package = me if path.name == "__init__.py" else me.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    up = parts[: len(parts) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                # `from pkg import name`: the submodule pkg.name if there is one, else pkg
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            else:
                continue
            for name in names:
                while name and name not in known:  # `import pkg.mod.attr` -> the longest known prefix
                    name = name.rpartition(".")[0]
                if name and name != me:
                    found.add(name)
        graph[me] = found
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected set of more than one module, as a path a -> b -> ... -> a."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    sets: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            members = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                members.add(w)
                if w == v:
                    break
            if len(members) > 1:
                sets.append(members)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_circle(graph, members) for members in sets]


def _circle(graph: dict[str, set[str]], members: set[str]) -> list[str]:
    """A shortest path from the set's first module back to itself, inside the set (breadth first)."""
    start = min(members)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w not in came_from:
                    came_from[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"no circle through {start}")  # unreachable for a strongly connected set


def reachable(graph: dict[str, set[str]], start: str) -> dict[str, list[str]]:
    """{module: the import chain from `start` to it} for every module `start` needs, directly or not."""
    chains = {start: [start]}
    frontier = [start]
    while frontier:
        v = frontier.pop()
        for w in sorted(graph[v]):
            if w not in chains:
                chains[w] = [*chains[v], w]
                frontier.append(w)
    return chains


def test_the_package_has_no_import_cycle():
    found = cycles(import_graph(PACKAGE))
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def test_the_backends_and_the_device_path_need_no_training_module():
    """Every backend module, and the device side (edgecifar.runtime, which loads and runs a file with only its
    runtime, numpy and Pillow), reach no training module, directly or through another module."""
    graph = import_graph(PACKAGE)
    backends = [m for m in graph if m == "edgecifar.backends" or m.startswith("edgecifar.backends.")]
    assert "edgecifar.backends.onnx" in backends and "edgecifar.backends.base" in backends
    training = {f"edgecifar.{name}" for name in TRAINING}
    assert training <= set(graph), sorted(training - set(graph))  # the list names real modules
    offending = [
        " -> ".join(chain)
        for start in [*backends, "edgecifar.runtime"]
        for module, chain in reachable(graph, start).items()
        if module in training
    ]
    assert not offending, "imports of training code: " + "; ".join(offending)


def test_the_graph_sees_function_level_and_relative_imports(tmp_path):
    """The checker itself, on a package made here: a circle closed only by a relative import inside a function,
    and `from pkg import name` resolved to the submodule or to the package."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("X = 1\n")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("from ..low import X\n")
    (pkg / "sub" / "b.py").write_text("def late():\n    from .. import a\n    return a\n")
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.sub.b"}
    assert graph["pkg.sub"] == {"pkg.low"}
    assert graph["pkg.sub.b"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.a"]]

    (pkg / "sub" / "b.py").write_text("def late():\n    from ..low import X\n    return X\n")
    assert cycles(import_graph(pkg)) == []
    assert reachable(import_graph(pkg), "pkg.a") == {
        "pkg.a": ["pkg.a"],
        "pkg.sub.b": ["pkg.a", "pkg.sub.b"],
        "pkg.low": ["pkg.a", "pkg.sub.b", "pkg.low"],
    }
