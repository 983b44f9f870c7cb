"""The CLI is agent-side code: it reaches the server over HTTP or as a process, never by importing it."""

from __future__ import annotations

import ast
from pathlib import Path

import quantcrew.cli
from tests.support.light_imports import loaded_after

CLI_DIR = Path(quantcrew.cli.__file__).parent
SERVER = "quantcrew.ml_server"
ALLOWED = "quantcrew.ml_server.schemas"


def _imported_names(path: Path) -> set[str]:
    """Every module a file imports, at any level (functions included), also through importlib."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names.add(node.args[0].value)
    return names


def _is_server_module(name: str) -> bool:
    inside = name == SERVER or name.startswith(SERVER + ".")
    return inside and not (name == ALLOWED or name.startswith(ALLOWED + "."))


def test_cli_modules_import_no_server_module_but_the_schemas() -> None:
    modules = sorted(CLI_DIR.rglob("*.py"))
    assert len(modules) >= 8
    offenders = sorted(f"{path.relative_to(CLI_DIR)}: {name}" for path in modules
                       for name in _imported_names(path) if _is_server_module(name))
    assert offenders == []


def test_import_walk_sees_function_level_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from quantcrew.ml_server.__main__ import main\n"
                      "    from quantcrew.ml_server.schemas.rl import RL_AGENTS\n")
    assert {n for n in _imported_names(module) if _is_server_module(n)} == {"quantcrew.ml_server.__main__.main"}


def test_loading_the_cli_loads_no_server_module_but_the_schemas() -> None:
    loaded = loaded_after()["cli"]
    assert "quantcrew.cli.app" in loaded
    assert sorted(m for m in loaded if m.startswith(SERVER + ".") and not m.startswith(ALLOWED)) == []
