"""``DailyFlow``: regime -> risk -> strategy -> decision -> outcomes as a crewAI Flow, its state persisted in
``<home>/flows.db``; a degraded flow says so; a stopped flow resumes by its id."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from quantcrew.config.settings import Settings, load_settings
from quantcrew.crew.base import QuantCrew
from quantcrew.crew.budget import RunBudget
from quantcrew.crew.daily_flow import DailyFlow, flows_db, load_state
from quantcrew.crew.decision import Decision, decide
from quantcrew.crew.flow_state import STEPS, DailyState
from quantcrew.crew.runs import RunsStore
from quantcrew.crew.server_process import LocalServer, free_port
from quantcrew.crew.views import decision_inputs
from quantcrew.tools.base import ToolResult
from tests.crew.conftest import FOLLOWED
from tests.support.offline import isolate_crewai

AS_OF = "2013-06-28"


@pytest.fixture
def refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    return isolate_crewai(monkeypatch, tmp_path)


@pytest.fixture(scope="module")
def daily(taught_server: LocalServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Any]]:
    """One flow on the taught server, run once for the module: its settings and what ``kickoff`` returned."""
    folder = tmp_path_factory.mktemp("daily")
    settings = load_settings(home=folder / "home")
    with pytest.MonkeyPatch.context() as mp:
        refused = isolate_crewai(mp, folder)
        returned = DailyFlow(settings, server_url=taught_server.url).kickoff(
            inputs={"symbols": "SP500,NASDAQ", "lookback": 300, "as_of": AS_OF})
        assert refused == []
    yield settings, returned


def _dead(settings: Settings) -> str:
    settings.client.retries = 0
    return f"http://127.0.0.1:{free_port()}"


def _without_ids(decision: Decision) -> str:
    return re.sub(r"dec-[0-9a-f]+", "dec-?", json.dumps(decision.model_dump(mode="json"), sort_keys=True))


def _tool_results(settings: Settings, run_id: str) -> list[ToolResult]:
    run = RunsStore(settings.runs_db).get_run(run_id)
    assert run is not None
    fields = ("tool", "ok", "degraded", "degraded_reason", "gated", "gated_reason", "summary", "arguments", "data")
    return [ToolResult.model_validate({k: c[k] for k in fields}) for c in run["tool_calls"]]


def test_the_flow_runs_every_step_in_order_and_returns_its_state(daily: tuple[Settings, Any]) -> None:
    _, state = daily
    assert isinstance(state, DailyState)
    assert [s.step for s in state.steps] == list(STEPS)
    assert state.regime is not None and [r.symbol for r in state.regime.regimes] == ["SP500", "NASDAQ"]
    assert state.risk is not None and state.risk.var_95 is not None
    assert state.strategy is not None and [s.symbol for s in state.strategy.symbols] == ["SP500", "NASDAQ"]
    assert state.decision is not None and state.decision.as_of == AS_OF
    assert [(d.symbol, d.followed) for d in state.decision.decisions] == [("SP500", FOLLOWED), ("NASDAQ", FOLLOWED)]
    assert state.outcome_ids == [f"{d.decision_id}:{d.symbol}" for d in state.decision.decisions]
    assert all(i.startswith("dec-") for i in state.outcome_ids)


def test_the_flow_decides_as_the_crew_does_and_stores_the_run(daily: tuple[Settings, Any], taught_server: LocalServer,
                                                              tmp_path: Path, refused: list[str]) -> None:
    settings, state = daily
    quant = QuantCrew(load_settings(home=tmp_path / "crew-home"), server_url=taught_server.url)
    quant.crew().kickoff(inputs={"symbols": "SP500,NASDAQ", "lookback": 300, "end_date": AS_OF})
    assert quant.decision is not None and _without_ids(state.decision) == _without_ids(quant.decision)
    stored = RunsStore(settings.runs_db).get_run(state.run_id)
    assert stored is not None and stored["kind"] == "flow" and stored["inputs"]["flow_id"] == state.id
    assert stored["status"] == state.status and stored["decision"] == state.decision.model_dump(mode="json")
    # the decision is the pipeline's on the tool results the run recorded
    recorded = _tool_results(settings, state.run_id)
    assert decide(decision_inputs(recorded, ["SP500", "NASDAQ"]), state.decision.limits) == state.decision
    assert sum(s.tool_calls for s in state.steps) == len(recorded)
    assert refused == []


def test_no_model_trained_makes_the_flow_degraded_with_its_reasons(daily: tuple[Settings, Any]) -> None:
    settings, state = daily
    assert state.status == "degraded" and state.degraded  # no ensemble or RL policy on this home: rules answered
    by_step = {s.step: s for s in state.steps}
    assert by_step["regime"].status == "done" and by_step["risk"].status == "done"
    assert by_step["strategy"].status == "degraded" and by_step["strategy"].notes
    assert any(r.startswith("strategy_signals[SP500]: no trained policy") for r in state.degraded_reasons)
    assert set(state.degraded_reasons) >= set(state.decision.degraded_inputs)
    stored = RunsStore(settings.runs_db).get_run(state.run_id)
    assert stored is not None and stored["degraded"] is True and stored["notes"] == state.degraded_reasons


def test_the_state_is_persisted_after_each_step_and_reloads_by_its_id(daily: tuple[Settings, Any]) -> None:
    settings, state = daily
    assert load_state(settings, state.id) == state
    with sqlite3.connect(flows_db(settings)) as db:
        methods = [m for (m,) in db.execute("SELECT method_name FROM flow_states WHERE flow_uuid = ? ORDER BY id",
                                            (state.id,))]
    assert methods == list(STEPS)
    assert load_state(settings, "no-such-flow") is None


def test_a_flow_with_the_server_down_is_degraded_never_succeeded(settings: Settings, refused: list[str]) -> None:
    url = _dead(settings)
    state = DailyFlow(settings, server_url=url).kickoff(inputs={"symbols": ["SP500"], "lookback": 300})
    assert state.status == "degraded" and state.degraded
    assert state.degraded_reasons[0].startswith(f"the ML server at {url} did not answer before the run")
    assert [s.status for s in state.steps] == ["degraded"] * len(STEPS)
    assert state.decision is not None and state.decision.degraded
    assert "round-robin" in state.decision.decisions[0].why
    assert state.outcome_ids == [f"{state.run_id}:SP500"]  # no bandit decision: the run names the outcome
    assert load_state(settings, state.id) == state
    stored = RunsStore(settings.runs_db).get_run(state.run_id or "")
    assert stored is not None and stored["status"] == "degraded"
    assert refused == []


def test_a_flow_stopped_by_its_budget_resumes_by_id_from_the_failed_step(settings: Settings,
                                                                        refused: list[str]) -> None:
    url = _dead(settings)
    stopped = DailyFlow(settings, server_url=url, budget=RunBudget(max_llm_calls=3)).kickoff(
        inputs={"symbols": "SP500", "lookback": 300, "as_of": "2012-06-29"})
    assert stopped.status == "budget_exceeded" and "LLM-call budget of 3" in (stopped.error or "")
    assert [(s.step, s.status) for s in stopped.steps] == [
        ("regime", "degraded"), ("risk", "failed"), ("strategy", "skipped"), ("decision", "skipped"),
        ("outcomes", "done")]
    assert stopped.decision is None and stopped.outcome_ids == []
    store = RunsStore(settings.runs_db)
    assert (store.get_run(stopped.run_id or "") or {})["status"] == "budget_exceeded"

    resumed = DailyFlow(settings, server_url=url).kickoff(inputs={"id": stopped.id})
    assert resumed.id == stopped.id and resumed.run_id == stopped.run_id
    assert resumed.status == "degraded" and resumed.decision is not None
    assert [(s.step, s.status) for s in resumed.steps[5:]] == [
        ("risk", "degraded"), ("strategy", "degraded"), ("decision", "degraded"), ("outcomes", "degraded")]
    calls = [c["tool"] for c in (store.get_run(resumed.run_id or "") or {})["tool_calls"]]
    assert calls.count("regime_detection") == 1  # the finished step kept its answer: not asked again
    assert resumed.regime == stopped.regime and resumed.decision.decisions[0].regime == resumed.regime.regimes[0].regime
    assert load_state(settings, stopped.id) == resumed
    assert refused == []


def test_a_later_flow_settles_the_earlier_decision_under_its_outcome_ids(settings: Settings,
                                                                        refused: list[str]) -> None:
    url = _dead(settings)
    first = DailyFlow(settings, server_url=url).kickoff(inputs={"symbols": "SP500", "lookback": 300,
                                                              "as_of": "2012-06-29"})
    assert first.settled_outcome_ids == [] and len(first.outcome_ids) == 1
    later = DailyFlow(settings, server_url=url).kickoff(inputs={"symbols": "SP500", "lookback": 300,
                                                              "as_of": "2012-07-03"})
    assert later.settled_outcome_ids == first.outcome_ids  # the bar after 2012-06-29 is known by 2012-07-03
    assert later.settled is not None and later.settled["settled"] == 1
    assert later.status == "degraded"
    [outcome] = RunsStore(settings.runs_db).outcomes(first.run_id)
    assert (outcome["decision_date"], outcome["outcome_date"]) == ("2012-06-29", "2012-07-02")
    assert refused == []


def test_a_refused_api_key_stops_the_flow_as_auth_failed(tmp_path: Path, refused: list[str]) -> None:
    from fastapi.testclient import TestClient
    from pydantic import SecretStr

    from quantcrew.ml_server.app import create_app
    from quantcrew.tools.client import MLClient

    server_settings = load_settings(home=tmp_path / "server-home")
    server_settings.server.api_key = SecretStr("the-servers-key")
    settings = load_settings(home=tmp_path / "home")  # the flow's settings: no key
    with TestClient(create_app(server_settings)) as app:
        state = DailyFlow(settings, client=MLClient(app)).kickoff(  # type: ignore[arg-type]
            inputs={"symbols": "SP500", "lookback": 300})
    assert state.status == "auth_failed" and "refused the API key" in (state.error or "")
    assert [(s.step, s.status) for s in state.steps] == [
        ("regime", "failed"), ("risk", "skipped"), ("strategy", "skipped"), ("decision", "skipped"),
        ("outcomes", "done")]
    assert state.decision is None and state.outcome_ids == []
    stored = RunsStore(settings.runs_db).get_run(state.run_id or "")
    assert stored is not None and stored["status"] == "auth_failed" and stored["tool_calls"] == []
    assert refused == []


@pytest.mark.parametrize(("inputs", "says"), [
    ({"symbols": ""}, "(?m)^symbols$"), ({"as_of": "29/06/2012"}, "(?m)^as_of$"), ({"lookback": 10}, "(?m)^lookback$"),
    ({"symbols": "SP500,NASDAQ", "weights": "0.5"}, "weights has 1 numbers for 2 symbols"),
    ({"drawdown": 2}, "(?m)^drawdown$"),
])
def test_bad_inputs_are_refused_naming_the_field(settings: Settings, inputs: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        DailyFlow(settings).kickoff(inputs=inputs)
    assert not flows_db(settings).exists() and not settings.runs_db.exists()  # refused before anything ran
