"""The walk-forward backtest is agent-side code: no ML framework, no server module but the schemas."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "sklearn", "hmmlearn", "stable_baselines3", "gymnasium", "matplotlib")


def test_backtest_modules_import_no_ml_framework_and_only_server_schemas() -> None:
    code = (
        "import sys\n"
        "import quantcrew.backtest.walk_forward, quantcrew.backtest.report, quantcrew.cli.backtest\n"
        "import quantcrew.backtest.book, quantcrew.crew.decision, quantcrew.tools.selection\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
        "print(','.join(m for m in sys.modules if m.startswith('quantcrew.ml_server.')\n"
        "               and not m.startswith('quantcrew.ml_server.schemas')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    heavy, server = (proc.stdout.split("\n") + ["", ""])[:2]
    assert heavy == "", f"backtest imported: {heavy}"
    assert server == "", f"backtest imported server modules: {server}"


def test_cli_module_imports_only_typer_and_rich() -> None:
    code = ("import sys\nimport quantcrew.cli.backtest\n"
            "print(','.join(m for m in ('quantcrew.backtest.walk_forward', 'crewai', 'httpx', 'numpy')"
            " if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() in ("", "numpy")  # numpy may come with rich's dependencies; nothing else
