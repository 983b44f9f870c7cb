"""The crewAI-style example project (examples/crewai_project): its ``main.run()`` kicks quantcrew's crew off, as
``crewai run`` would, against a live server with the offline planner."""

from __future__ import annotations

import importlib
import json
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from quantcrew.config.paths import AGENTS_YAML, TASKS_YAML
from quantcrew.config.settings import get_settings
from quantcrew.crew.decision import Decision
from quantcrew.crew.server_process import LocalServer
from tests.support.offline import isolate_crewai

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

PROJECT = Path(__file__).resolve().parents[2] / "examples" / "crewai_project"


@pytest.fixture
def project(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The project's ``main`` module, imported from its ``src`` folder as its installed script would."""
    monkeypatch.syspath_prepend(str(PROJECT / "src"))
    yield importlib.import_module("quant_desk.main")
    for name in [m for m in sys.modules if m == "quant_desk" or m.startswith("quant_desk.")]:
        del sys.modules[name]


def test_the_project_is_laid_out_as_crewai_create_crew_makes_it() -> None:
    meta = tomllib.loads((PROJECT / "pyproject.toml").read_text(encoding="utf-8"))
    assert meta["tool"]["crewai"]["type"] == "crew"
    assert meta["project"]["scripts"]["run_crew"] == "quant_desk.main:run"
    assert (PROJECT / "src" / "quant_desk" / "crew.py").is_file()
    assert not (PROJECT / "src" / "quant_desk" / "config").exists()  # one YAML: quantcrew's


def test_run_kicks_the_crew_off_and_writes_the_decision(project: ModuleType, live_server: LocalServer,
                                                        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    refused = isolate_crewai(monkeypatch, tmp_path)
    monkeypatch.setenv("QUANTCREW_CLIENT__URL", live_server.url)
    monkeypatch.setenv("QUANT_DESK_SYMBOLS", "SP500")
    monkeypatch.setenv("QUANT_DESK_END_DATE", "2012-06-29")
    monkeypatch.setenv("QUANT_DESK_LOOKBACK", "300")
    monkeypatch.setenv("QUANT_DESK_OUTPUT", str(tmp_path / "output"))
    get_settings.cache_clear()
    desk_class = importlib.import_module("quant_desk.crew").QuantDesk
    assert (desk_class.agents_config, desk_class.tasks_config) == (str(AGENTS_YAML), str(TASKS_YAML))

    output = project.run()
    assert isinstance(output.pydantic, Decision)
    [decision] = output.pydantic.decisions
    assert (decision.symbol, decision.as_of) == ("SP500", "2012-06-29") and decision.decision_id is not None
    written = Decision.model_validate(json.loads((tmp_path / "output" / "decision.json").read_text()))
    assert written == output.pydantic  # the project's own hook ran after the crew's
    printed = capsys.readouterr().out
    assert "SP500:" in printed and "DEGRADED: strategy_signals[SP500]" in printed  # nothing trained on this server
    assert refused == []
