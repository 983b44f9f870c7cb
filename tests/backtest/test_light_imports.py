"""The walk-forward backtest is agent-side code: no ML framework, no server module but the schemas."""

from __future__ import annotations

from tests.support.light_imports import loaded_after

HEAVY = ("torch", "sklearn", "hmmlearn", "stable_baselines3", "gymnasium", "matplotlib")


def test_backtest_modules_import_no_ml_framework_and_only_server_schemas() -> None:
    loaded = loaded_after()["backtest"]
    assert "quantcrew.backtest.walk_forward" in loaded
    assert [m for m in HEAVY if m in loaded] == [], "the backtest imported an ML framework"
    server = [m for m in loaded
              if m.startswith("quantcrew.ml_server.") and not m.startswith("quantcrew.ml_server.schemas")]
    assert server == [], f"the backtest imported server modules: {server}"


def test_cli_module_imports_only_typer_and_rich() -> None:
    loaded = loaded_after()["backtest command"]
    assert "quantcrew.cli.backtest" in loaded
    # numpy may come with rich's dependencies; nothing else
    assert [m for m in ("quantcrew.backtest.walk_forward", "crewai", "httpx") if m in loaded] == []
