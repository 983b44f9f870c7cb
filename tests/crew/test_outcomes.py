"""Outcomes: the realised return of each stored decision, stored once, the bandit rewarded once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from quantcrew.config.settings import Settings
from quantcrew.crew.decision import Decision, DecisionInputs, SymbolInputs, decide
from quantcrew.crew.outcomes import (
    RewardAttempt,
    SettleReport,
    bandit_rewarder,
    monitor_poster,
    outcome_of,
    settle,
)
from quantcrew.crew.runs import RunsStore
from quantcrew.data.ohlcv import OHLCV
from quantcrew.ml_server.app import create_app
from quantcrew.ml_server.schemas.bandit import BanditCreateRequest, BanditSelectRequest
from quantcrew.tools.client import MLClient, make_client

CLOSES = [100.0, 102.0, 99.96, 101.0, 103.02, 100.0]
DAYS = ["2020-01-02", "2020-01-03", "2020-01-06", "2020-01-07", "2020-01-08", "2020-01-09"]


def _bars(symbol: str = "TEST", closes: list[float] = CLOSES, days: list[str] = DAYS) -> OHLCV:
    c = np.asarray(closes, dtype=np.float64)
    return OHLCV(symbol=symbol, timestamps=np.asarray(days, dtype="datetime64[ns]"), open=c, high=c, low=c,
                 close=c, volume=np.zeros_like(c))


BARS = {"TEST": _bars()}


def _bars_for(symbol: str) -> OHLCV:
    return BARS[symbol]


def _decision(as_of: str, *, decision_id: str | None = "dec-x", chosen: str | None = "aggressive",
              aggressive: float = 1.0, size: float = 0.5, symbol: str = "TEST") -> Decision:
    targets = {"aggressive": aggressive, "conservative": 0.0}
    s = SymbolInputs(symbol=symbol, as_of=as_of, agent_targets=targets, chosen_agent=chosen,
                     decision_id=decision_id, size=size)
    return decide(DecisionInputs(as_of=as_of, symbols=[s]))


def _store_run(store: RunsStore, decision: Decision, end_date: str | None = None) -> str:
    run_id = store.start_run(kind="full", inputs={"symbols": "TEST", "end_date": end_date}, llm="planner",
                             server_url=None)
    store.finish_run(run_id, status="succeeded", decision=decision.model_dump(mode="json"))
    return run_id


class _Recorder:
    """Rewards through a real rewarder and records every call (thread-safe)."""

    def __init__(self, inner: Callable[[str, float], RewardAttempt]) -> None:
        self.inner = inner
        self.calls: list[tuple[str, float]] = []
        self._lock = threading.Lock()

    def __call__(self, decision_id: str, value: float) -> RewardAttempt:
        with self._lock:
            self.calls.append((decision_id, value))
            return self.inner(decision_id, value)


@pytest.fixture
def bandit(settings: Settings) -> Iterator[MLClient]:
    """A real ML server app (in process) with a bandit named 'meta'."""
    with TestClient(create_app(settings)) as tc:
        client = MLClient(tc)  # type: ignore[arg-type]
        client.bandit_create(BanditCreateRequest.model_validate(
            {"name": "meta", "policy": "ucb1", "params": {"reward_range": [-0.05, 0.05]}}))
        yield client


def _select(client: MLClient, regime: str = "bull") -> str:
    return client.bandit_select(BanditSelectRequest(bandit="meta", regime=regime)).decision_id


def test_settle_computes_the_returns_by_hand(tmp_path: Path) -> None:
    store = RunsStore(tmp_path / "runs.db")
    run_id = _store_run(store, _decision("2020-01-06", decision_id=None))
    report = settle(store, _bars_for)
    [row] = store.outcomes()
    r = 101.0 / 99.96 - 1.0  # the bar after 2020-01-06 is 2020-01-07
    assert (row["run_id"], row["decision_date"], row["outcome_date"]) == (run_id, "2020-01-06", "2020-01-07")
    assert row["r"] == pytest.approx(r)
    assert row["target"] == pytest.approx(0.5)  # aggressive's +1, sized 0.5
    assert row["decision_return"] == pytest.approx(0.5 * r)
    assert (row["agent"], row["agent_target"], row["agent_return"]) == ("aggressive", 1.0, pytest.approx(r))
    assert row["reward_status"] == "no_decision" and "no bandit decision" in row["reward_error"]
    assert (report.settled, report.rewarded, report.no_decision, report.pending) == (1, 0, 1, 0)


@hsettings(max_examples=50, deadline=None)
@given(closes=st.lists(st.floats(0.5, 2000.0), min_size=2, max_size=6), t=st.integers(0, 4),
       aggressive=st.floats(-1.0, 1.0), size=st.floats(0.0, 1.0))
def test_outcome_is_target_times_the_next_bars_return(closes: list[float], t: int, aggressive: float,
                                                      size: float) -> None:
    bars = _bars(closes=closes, days=DAYS[:len(closes)])
    t = min(t, len(closes) - 2)
    decision = _decision(DAYS[t], aggressive=aggressive, size=size).model_dump(mode="json")
    found = outcome_of(decision, decision["decisions"][0], bars)
    assert isinstance(found, dict)
    r = closes[t + 1] / closes[t] - 1.0
    assert found["r"] == pytest.approx(r)
    assert found["decision_return"] == pytest.approx(decision["decisions"][0]["target_position"] * r)
    assert found["agent_return"] == pytest.approx(aggressive * r)
    assert np.isfinite([found["r"], found["decision_return"], found["agent_return"]]).all()


def test_decision_on_the_last_bar_waits_for_its_outcome_bar(tmp_path: Path) -> None:
    store = RunsStore(tmp_path / "runs.db")
    _store_run(store, _decision("2020-01-09"))
    report = settle(store, _bars_for)
    assert (report.settled, report.waiting) == (0, 1) and store.outcomes() == []
    found = outcome_of(_decision("2020-01-09").model_dump(mode="json"),
                       _decision("2020-01-09").model_dump(mode="json")["decisions"][0], _bars())
    assert found == "pending: outcome bar after 2020-01-09 not in the data yet"


def test_as_of_bound_keeps_later_outcome_bars_out(tmp_path: Path) -> None:
    store = RunsStore(tmp_path / "runs.db")
    early = _store_run(store, _decision("2020-01-02", decision_id=None))
    _store_run(store, _decision("2020-01-07", decision_id=None))
    report = settle(store, _bars_for, as_of="2020-01-07")  # the second decision's bar (01-08) is after it
    assert (report.settled, report.waiting) == (1, 1)
    assert [r["run_id"] for r in store.outcomes()] == [early]
    assert settle(store, _bars_for, as_of="2020-01-08").settled == 1


def test_settle_rewards_the_real_bandit_once_and_a_second_settle_does_nothing(tmp_path: Path,
                                                                               bandit: MLClient) -> None:
    store = RunsStore(tmp_path / "runs.db")
    decision_id = _select(bandit)
    _store_run(store, _decision("2020-01-03", decision_id=decision_id, aggressive=-1.0))
    reward = _Recorder(bandit_rewarder(bandit))
    first = settle(store, _bars_for, reward=reward)
    r = 99.96 / 102.0 - 1.0
    assert (first.settled, first.rewarded, first.pending) == (1, 1, 0)
    [(rewarded_id, value)] = reward.calls
    assert rewarded_id == decision_id and value == pytest.approx(-r)  # following aggressive (short) earned -r
    [row] = store.outcomes()
    assert row["reward_status"] == "rewarded" and row["reward_error"] is None and row["rewarded_at"]
    second = settle(store, _bars_for, reward=reward)
    assert (second.settled, second.rewarded) == (0, 0) and len(reward.calls) == 1
    state = bandit.bandit_state("meta")
    assert {s.regime: s.pulls for s in state.regimes}["bull"] == 1


def test_two_concurrent_settlers_reward_each_decision_once(tmp_path: Path, bandit: MLClient) -> None:
    path = tmp_path / "runs.db"
    store = RunsStore(path)
    ids = [_select(bandit) for _ in range(6)]
    for i, decision_id in enumerate(ids):
        _store_run(store, _decision(DAYS[i % 5], decision_id=decision_id))
    reward = _Recorder(bandit_rewarder(bandit))
    barrier = threading.Barrier(2)
    reports: list[SettleReport] = []

    def settler() -> None:
        own = RunsStore(path)  # a connection of its own, as a second process would have
        barrier.wait()
        reports.append(settle(own, _bars_for, reward=reward))
        own.close()

    threads = [threading.Thread(target=settler) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(d for d, _ in reward.calls) == sorted(ids)  # one reward call per decision, in all
    assert sum(r.settled for r in reports) == 6 and sum(r.rewarded for r in reports) == 6
    assert {row["reward_status"] for row in store.outcomes()} == {"rewarded"}
    assert {s.regime: s.pulls for s in bandit.bandit_state("meta").regimes}["bull"] == 6


def test_server_down_leaves_the_reward_pending_and_the_next_settle_sends_it(tmp_path: Path, settings: Settings,
                                                                            bandit: MLClient) -> None:
    from quantcrew.crew.server_process import free_port

    store = RunsStore(tmp_path / "runs.db")
    decision_id = _select(bandit)
    _store_run(store, _decision("2020-01-02", decision_id=decision_id))
    settings.client.url, settings.client.retries = f"http://127.0.0.1:{free_port()}", 0
    with make_client(settings.client) as dead:
        down = settle(store, _bars_for, reward=bandit_rewarder(dead))
    assert (down.settled, down.rewarded, down.pending) == (1, 0, 1) and down.server_error
    [row] = store.outcomes()
    assert row["reward_status"] == "pending" and row["reward_error"]
    assert store.pending_rewards() == 1
    retried = settle(store, _bars_for, reward=bandit_rewarder(bandit))
    assert (retried.settled, retried.rewarded, retried.pending) == (0, 1, 0)
    assert store.outcomes()[0]["reward_status"] == "rewarded"


def test_a_reward_the_bandit_already_took_counts_as_rewarded(tmp_path: Path, bandit: MLClient) -> None:
    from quantcrew.ml_server.schemas.bandit import BanditRewardRequest

    store = RunsStore(tmp_path / "runs.db")
    decision_id = _select(bandit)
    bandit.bandit_reward(BanditRewardRequest(decision_id=decision_id, reward=0.01))  # e.g. a settler that died
    _store_run(store, _decision("2020-01-02", decision_id=decision_id))
    report = settle(store, _bars_for, reward=bandit_rewarder(bandit))
    [row] = store.outcomes()
    assert report.rewarded == 1 and row["reward_status"] == "rewarded"
    assert row["reward_error"].startswith("already rewarded")


def test_a_decision_the_bandit_does_not_know_is_no_decision(tmp_path: Path, bandit: MLClient) -> None:
    store = RunsStore(tmp_path / "runs.db")
    _store_run(store, _decision("2020-01-02", decision_id="dec-0000000000000000"))
    report = settle(store, _bars_for, reward=bandit_rewarder(bandit))
    [row] = store.outcomes()
    assert report.no_decision == 1 and row["reward_status"] == "no_decision"
    assert "no decision with id" in row["reward_error"]


def test_without_a_rewarder_outcomes_are_stored_and_rewards_wait(tmp_path: Path) -> None:
    store = RunsStore(tmp_path / "runs.db")
    _store_run(store, _decision("2020-01-02", decision_id="dec-1"))
    report = settle(store, _bars_for)
    assert (report.settled, report.pending) == (1, 1)
    assert store.claim_rewards("someone")  # nothing is left claimed by a settle that sends no reward


def test_unreadable_data_is_reported_and_the_decision_waits(tmp_path: Path) -> None:
    store = RunsStore(tmp_path / "runs.db")
    _store_run(store, _decision("2020-01-02", symbol="GONE"))

    def missing(symbol: str) -> OHLCV:
        raise FileNotFoundError(f"no data for {symbol}")

    report = settle(store, missing)
    assert (report.settled, report.waiting) == (0, 1)
    assert report.errors == ["GONE: its data could not be read: FileNotFoundError: no data for GONE"]


def test_a_decision_stored_before_agent_target_existed_uses_its_conviction(tmp_path: Path) -> None:
    store = RunsStore(tmp_path / "runs.db")
    old = _decision("2020-01-02", decision_id=None, aggressive=0.8).model_dump(mode="json")
    for key in ("as_of", "chosen_agent", "agent_target", "consulted"):
        old["decisions"][0].pop(key)
    run_id = store.start_run(kind="full", inputs={}, llm="planner", server_url=None)
    store.finish_run(run_id, status="succeeded", decision=old)
    settle(store, _bars_for)
    [row] = store.outcomes()
    assert row["decision_date"] == "2020-01-02"  # from the decision's own as_of
    assert (row["agent"], row["agent_target"]) == ("aggressive", pytest.approx(0.8))


def test_the_outcomes_module_does_not_import_crewai() -> None:
    import subprocess
    import sys

    code = "import sys\nimport quantcrew.crew.outcomes\nprint('crewai' in sys.modules, 'httpx' in sys.modules)\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "False"


# -- outcomes posted to the server's monitor --------------------------------------------------------


def test_settle_posts_each_outcome_to_the_monitor_once(tmp_path: Path, bandit: MLClient) -> None:
    store = RunsStore(tmp_path / "runs.db")
    decision_id = _select(bandit)
    run_id = _store_run(store, _decision("2020-01-06", decision_id=decision_id))
    first = settle(store, _bars_for, reward=bandit_rewarder(bandit))
    assert (first.settled, first.posted, first.unposted) == (1, 1, 0) and first.server_error is None
    [posted] = bandit.monitor_outcomes_list().outcomes
    assert posted.outcome_id == f"{decision_id}:TEST" and posted.subject == "TEST"
    assert posted.as_of == "2020-01-06"
    assert posted.realised_return == pytest.approx(101.0 / 99.96 - 1.0)
    assert posted.position == pytest.approx(0.5)
    assert store.outcomes(run_id)[0]["monitor_status"] == "posted"
    again = settle(store, _bars_for, reward=bandit_rewarder(bandit))
    assert (again.posted, again.unposted) == (0, 0) and len(bandit.monitor_outcomes_list().outcomes) == 1


def test_server_down_keeps_the_outcome_unposted_and_the_next_settle_posts_it(tmp_path: Path, settings: Settings,
                                                                            bandit: MLClient) -> None:
    from quantcrew.crew.server_process import free_port

    store = RunsStore(tmp_path / "runs.db")
    _store_run(store, _decision("2020-01-02", decision_id=None))  # no reward to send: only the post fails
    settings.client.url, settings.client.retries = f"http://127.0.0.1:{free_port()}", 0
    with make_client(settings.client) as dead:
        down = settle(store, _bars_for, reward=bandit_rewarder(dead))
    assert (down.settled, down.posted, down.unposted) == (1, 0, 1)
    assert down.monitor_error and down.server_error  # reported degraded, as a pending reward is
    assert store.unposted_count() == 1 and bandit.monitor_outcomes_list().outcomes == []
    retried = settle(store, _bars_for, reward=bandit_rewarder(bandit))
    assert (retried.settled, retried.posted, retried.unposted) == (0, 1, 0) and retried.server_error is None
    [posted] = bandit.monitor_outcomes_list().outcomes
    assert posted.outcome_id.endswith(":TEST") and posted.realised_return == pytest.approx(102.0 / 100.0 - 1.0)


def test_an_outcome_the_monitor_refuses_is_marked_refused_and_the_others_are_posted(tmp_path: Path,
                                                                                    bandit: MLClient) -> None:
    from quantcrew.crew.outcomes import outcome_wire, post_outcomes
    from quantcrew.ml_server.schemas.monitor import OutcomeBatch

    store = RunsStore(tmp_path / "runs.db")
    _store_run(store, _decision("2020-01-02", decision_id="dec-a"))
    _store_run(store, _decision("2020-01-03", decision_id="dec-b"))
    settle(store, _bars_for)  # stored, nothing posted (no server)
    first, _ = sorted(store.outcomes(), key=lambda r: r["decision_date"])
    clash = {**outcome_wire(first), "realised_return": 0.5}  # the same id, another value: a 409
    bandit.monitor_outcomes(OutcomeBatch.model_validate({"outcomes": [clash]}))
    report = post_outcomes(store, monitor_poster(bandit))
    assert (report.posted, report.unposted) == (1, 0) and len(report.errors) == 1
    assert "realised_return" in report.errors[0]
    statuses = {r["decision_date"]: (r["monitor_status"], r["monitor_error"]) for r in store.outcomes()}
    assert statuses["2020-01-02"][0] == "refused" and "realised_return" in str(statuses["2020-01-02"][1])
    assert statuses["2020-01-03"] == ("posted", None)
