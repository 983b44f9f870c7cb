"""The agent side stays light: no ML framework is imported by tools, agents, crew, data or config."""

from __future__ import annotations

from tests.support.light_imports import loaded_after

HEAVY = ("torch", "sklearn", "hmmlearn", "stable_baselines3", "gymnasium", "scipy", "arch")


def _present(names: tuple[str, ...], step: str) -> list[str]:
    return [name for name in names if name in loaded_after()[step]]


def test_agent_side_imports_no_ml_framework() -> None:
    # every agent-side package and module, the fallbacks run on real bars
    assert _present(HEAVY, "agent side") == [], "the agent side imported an ML framework"


def test_schemas_import_without_fastapi_or_ml() -> None:
    assert _present((*HEAVY, "fastapi", "starlette"), "server schemas") == []


def test_importing_the_server_app_does_not_load_torch() -> None:
    # Devices and models are resolved in the lifespan, never at import.
    assert "quantcrew.ml_server.app" in loaded_after()["server app"]
    assert _present(("torch",), "server app") == []


def test_decision_and_schedule_modules_do_not_import_crewai() -> None:
    # the scheduler's store and the decision pipeline are used where crewai's seconds of import would hurt
    assert "quantcrew.crew.schedule" in loaded_after()["decision and schedule"]
    assert _present(("crewai",), "decision and schedule") == []
