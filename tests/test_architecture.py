"""The layer contract, checked on the source: who may import whom inside ``quantcrew``, and no cycles.

The rules:

* the client side (``tools``, ``agents``, ``crew``, ``backtest``, ``cli``) never imports
  ``ml_server`` except ``ml_server.schemas`` (the wire models both sides share); the CLI starts
  the server as a process through its entry point, never by importing it;
* ``ml_server`` imports only ``config``, ``data`` and the numeric package ``quant`` from the
  rest of ``quantcrew``;
* ``data``, ``config`` and ``quant`` import nothing above them;
* no import cycles among ``quantcrew`` modules (a package's ``__init__`` is its own node).

The root package (``quantcrew/__init__.py``) holds only the version and imports nothing, so it
belongs to no layer: any module may read ``quantcrew.__version__``.

Every import statement counts, at module level or inside a function (a lazy import is still a
dependency), ``import x`` as well as ``from x import y``; ``from package import name`` points at
the submodule ``package.name`` when there is one. The same contracts are written for
import-linter in ``.importlinter`` and run by the last test here.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "quantcrew"

CLIENTS = frozenset({"tools", "agents", "crew", "backtest", "cli"})
"""Subpackages on the client side of the HTTP boundary."""
SHARED_WIRE = f"{PACKAGE}.ml_server.schemas"
"""The one part of the server the client side may import."""
ROOT_LAYER = ""
"""Layer of the root package itself, which imports nothing (see :func:`root_breaks`)."""
SERVER_MAY_IMPORT = frozenset({"ml_server", "config", "data", "quant", ROOT_LAYER})
"""Subpackages ``ml_server`` may import (itself included)."""
BASE = frozenset({"data", "config", "quant"})
"""The bottom of the stack: they may import one another, nothing above."""
MAX_CYCLES_LISTED = 50
"""Most simple cycles spelled out per strongly connected group (a big group has very many)."""


@dataclass(frozen=True, order=True)
class Edge:
    """One import statement, resolved to the ``quantcrew`` module it loads."""

    importer: str
    imported: str
    line: int

    def __str__(self) -> str:
        return f"{self.importer} -> {self.imported} (line {self.line})"


# ---------------------------------------------------------------------------------------------
# the import graph


def module_names(package_dir: Path) -> dict[str, Path]:
    """Every module of the package under ``package_dir``, by dotted name (``__init__`` as the package)."""
    out: dict[str, Path] = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _existing(name: str, modules: dict[str, Path]) -> str | None:
    """``name`` if it is a module, else its closest ancestor that is one (``import a.b.attr``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imported(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool,
              modules: dict[str, Path]) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                found = _existing(alias.name, modules)
                if found is not None:
                    yield found
        return
    base = node.module or ""
    if node.level:  # relative: resolve against the importer's package
        anchor = importer.split(".") if is_package else importer.split(".")[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, base]) if base else ".".join(anchor)
    if base != PACKAGE and not base.startswith(PACKAGE + "."):
        return
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        if alias.name != "*" and submodule in modules:
            yield submodule
        else:
            found = _existing(base, modules)
            if found is not None:
                yield found


def import_edges(package_dir: Path) -> list[Edge]:
    """Every import between modules of the package, function-level ones included, sorted."""
    modules = module_names(package_dir)
    edges: set[Edge] = set()
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in _imported(node, name, path.name == "__init__.py", modules):
                    if target != name:
                        edges.add(Edge(name, target, node.lineno))
    return sorted(edges)


def _layer(module: str) -> str:
    """The first-level subpackage of a module (:data:`ROOT_LAYER` for the root package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT_LAYER


# ---------------------------------------------------------------------------------------------
# the rules


def client_breaks(edges: Iterable[Edge]) -> list[Edge]:
    """Client-side imports of the server other than its schemas."""
    return [e for e in edges if _layer(e.importer) in CLIENTS and _layer(e.imported) == "ml_server"
            and e.imported != SHARED_WIRE and not e.imported.startswith(SHARED_WIRE + ".")]


def server_breaks(edges: Iterable[Edge]) -> list[Edge]:
    """Server imports of anything in the package but itself, config, data and quant."""
    return [e for e in edges if _layer(e.importer) == "ml_server" and _layer(e.imported) not in SERVER_MAY_IMPORT]


def base_breaks(edges: Iterable[Edge]) -> list[Edge]:
    """Imports from data, config or quant of anything above them."""
    return [e for e in edges if _layer(e.importer) in BASE and _layer(e.imported) not in BASE | {ROOT_LAYER}]


def root_breaks(edges: Iterable[Edge]) -> list[Edge]:
    """Imports made by the root package, which every layer may import."""
    return [e for e in edges if e.importer == PACKAGE]


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(root: str) -> None:
        # iterative depth-first search: the recursion would be as deep as the longest import chain
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def _simple_cycles(graph: dict[str, set[str]], group: list[str], limit: int) -> list[list[str]]:
    """Up to ``limit`` simple cycles inside one group, each starting at its smallest module."""
    members = set(group)
    cycles: list[list[str]] = []
    for start in group:  # sorted: each cycle is found once, from its smallest module
        allowed = {m for m in members if m >= start}
        path = [start]
        todo = [iter(sorted(graph[start] & allowed))]
        while todo and len(cycles) < limit:
            nxt = next(todo[-1], None)
            if nxt is None:
                todo.pop()
                path.pop()
            elif nxt == start:
                cycles.append([*path, start])
            elif nxt not in path:
                path.append(nxt)
                todo.append(iter(sorted(graph[nxt] & allowed)))
    return cycles


def import_cycles(edges: Iterable[Edge], limit: int = MAX_CYCLES_LISTED) -> list[tuple[list[str], list[list[str]]]]:
    """Each group of mutually importing modules, with the simple cycles that run through it."""
    graph: dict[str, set[str]] = defaultdict(set)
    for e in edges:
        graph[e.importer].add(e.imported)
        graph[e.imported]  # noqa: B018 - every module is a node, even one that imports nothing
    return [(group, _simple_cycles(graph, group, limit)) for group in _strongly_connected(graph)]


def _describe_cycles(found: list[tuple[list[str], list[list[str]]]]) -> str:
    lines = []
    for group, cycles in found:
        lines.append(f"modules importing one another: {', '.join(group)}")
        lines.extend("    " + " -> ".join(cycle) for cycle in cycles)
        if len(cycles) >= MAX_CYCLES_LISTED:
            lines.append(f"    ... (first {MAX_CYCLES_LISTED} cycles shown)")
    return "\n".join(lines)


RULES = {
    "tools, agents, crew, backtest and cli import only ml_server.schemas from the server": client_breaks,
    "ml_server imports only config, data and quant from the rest of quantcrew": server_breaks,
    "data, config and quant import nothing above them": base_breaks,
    "the root package imports nothing (every layer may import it)": root_breaks,
}


def contract_report(edges: list[Edge]) -> str:
    """Every break of every rule and every cycle, as one text; empty when the contract holds."""
    sections = []
    for rule, check in RULES.items():
        breaks = check(edges)
        if breaks:
            sections.append(f"{len(breaks)} import(s) break the rule '{rule}':\n"
                            + "\n".join(f"    {e}" for e in breaks))
    cycles = import_cycles(edges)
    if cycles:
        sections.append(f"{len(cycles)} group(s) of modules import one another (rule 'no import cycles'):\n"
                        + _describe_cycles(cycles))
    return "\n\n".join(sections)


# ---------------------------------------------------------------------------------------------
# the contract on quantcrew


def test_quantcrew_keeps_the_layer_contract() -> None:
    report = contract_report(import_edges(ROOT / PACKAGE))
    assert not report, "\n" + report


def test_import_linter_contracts_pass() -> None:
    if importlib.util.find_spec("importlinter") is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]'); the AST tests above check the same")
    done = subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()",
         "--no-cache", "--no-logo", str(ROOT / ".importlinter")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


# ---------------------------------------------------------------------------------------------
# the walker itself, on a throwaway package


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / PACKAGE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tmp_path / PACKAGE


def test_import_edges_include_function_level_and_resolve_submodules(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "__init__.py": "",
        "tools/__init__.py": "",
        "tools/a.py": "def f():\n    from quantcrew.ml_server import app\n    import quantcrew.data.x\n",
        "tools/b.py": "from quantcrew.ml_server.schemas import Thing\nfrom . import a\n",
        "ml_server/__init__.py": "",
        "ml_server/app.py": "from quantcrew.tools.a import f\n",
        "ml_server/schemas.py": "from quantcrew import __version__\n",
        "data/__init__.py": "",
        "data/x.py": "",
    })
    found = {(e.importer, e.imported) for e in import_edges(root)}
    assert found == {("quantcrew.tools.a", "quantcrew.ml_server.app"), ("quantcrew.tools.a", "quantcrew.data.x"),
                     ("quantcrew.tools.b", "quantcrew.ml_server.schemas"), ("quantcrew.tools.b", "quantcrew.tools.a"),
                     ("quantcrew.ml_server.app", "quantcrew.tools.a"), ("quantcrew.ml_server.schemas", "quantcrew")}
    edges = import_edges(root)
    assert [(e.importer, e.imported) for e in client_breaks(edges)] == [("quantcrew.tools.a",
                                                                         "quantcrew.ml_server.app")]
    assert [(e.importer, e.imported) for e in server_breaks(edges)] == [("quantcrew.ml_server.app",
                                                                         "quantcrew.tools.a")]
    assert import_cycles(edges) == [(["quantcrew.ml_server.app", "quantcrew.tools.a"],
                                     [["quantcrew.ml_server.app", "quantcrew.tools.a", "quantcrew.ml_server.app"]])]
    report = contract_report(edges)  # every break at once, each with its line
    assert "quantcrew.tools.a -> quantcrew.ml_server.app (line 2)" in report
    assert "quantcrew.ml_server.app -> quantcrew.tools.a (line 1)" in report
    assert "quantcrew.ml_server.app -> quantcrew.tools.a -> quantcrew.ml_server.app" in report
    assert "quantcrew.ml_server.schemas -> quantcrew " not in report


def test_import_cycles_counts_a_package_init_as_its_own_module(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "__init__.py": "",
        "data/__init__.py": "from quantcrew.data.loaders import load\n",
        "data/loaders.py": "def load():\n    from quantcrew.data import samples\n",
        "data/samples.py": "import quantcrew.data\n",
    })
    [(group, cycles)] = import_cycles(import_edges(root))
    assert group == ["quantcrew.data", "quantcrew.data.loaders", "quantcrew.data.samples"]
    assert cycles == [["quantcrew.data", "quantcrew.data.loaders", "quantcrew.data.samples", "quantcrew.data"]]
