"""``run``: earlier decisions are settled before the crew runs, bounded by the run's as-of date, and settling
never fails a run."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantcrew.config.settings import Settings
from quantcrew.crew.decision import DecisionInputs, SymbolInputs, decide
from quantcrew.crew.kickoff import run
from quantcrew.crew.runs import RunsStore
from tests.support.offline import isolate_crewai


@pytest.fixture
def refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    return isolate_crewai(monkeypatch, tmp_path)


def _earlier_run(settings: Settings, as_of: str, decision_id: str | None) -> str:
    s = SymbolInputs(symbol="SP500", as_of=as_of, agent_targets={"aggressive": 1.0}, chosen_agent="aggressive",
                     decision_id=decision_id, size=0.5)
    store = RunsStore(settings.runs_db)
    run_id = store.start_run(kind="full", inputs={"symbols": "SP500"}, llm="planner", server_url=None)
    store.finish_run(run_id, status="succeeded", decision=decide(DecisionInputs(symbols=[s])).model_dump())
    store.close()
    return run_id


def test_a_run_settles_earlier_decisions_up_to_its_own_as_of_date(settings: Settings, refused: list[str]) -> None:
    early = _earlier_run(settings, "2012-06-29", None)
    _earlier_run(settings, "2014-06-30", None)  # its outcome bar lies after this run's date
    outcome = run({"symbol": "SP500", "lookback": 300, "end_date": "2013-01-02"}, settings, kind="regime")
    assert outcome.status == "degraded"  # no server configured: the regime rule answered for the HMM
    assert outcome.settled is not None
    assert (outcome.settled.as_of, outcome.settled.settled, outcome.settled.waiting) == ("2013-01-02", 1, 1)
    store = RunsStore(settings.runs_db)
    assert [o["run_id"] for o in store.outcomes()] == [early]
    stored = store.get_run(outcome.run_id)
    assert stored is not None and stored["settled"]["settled"] == 1 and "outcomes" not in stored["settled"]
    assert refused == []


def test_a_server_down_for_rewards_leaves_them_pending_and_notes_it_without_failing_the_run(
        settings: Settings, refused: list[str]) -> None:
    from quantcrew.crew.server_process import free_port

    _earlier_run(settings, "2012-06-29", "dec-0123456789abcdef")
    settings.client.url, settings.client.retries = f"http://127.0.0.1:{free_port()}", 0
    outcome = run({"symbol": "SP500", "lookback": 300, "end_date": "2013-01-02"}, settings, kind="regime")
    assert outcome.status == "degraded"  # finished, with the reason said: never a silent success
    assert outcome.settled is not None and (outcome.settled.settled, outcome.settled.pending) == (1, 1)
    assert outcome.degraded and outcome.degraded_notes[0].startswith(f"the ML server at {settings.client.url} did "
                                                                     "not answer before the run")
    assert any(n.startswith("outcomes: 1 bandit reward(s) left pending") for n in outcome.degraded_notes)
    store = RunsStore(settings.runs_db)
    assert store.pending_rewards() == 1
    stored = store.get_run(outcome.run_id)
    assert stored is not None and stored["degraded"] is True and stored["status"] == "degraded"
    assert stored["notes"] == outcome.degraded_notes
    assert refused == []
