"""The retraining firing's decisions: triggers, cooldown, gate, promotion, rejection, rollback, failures.

The server is an in-memory stand-in that implements :class:`RetrainServer` (what it is asked and
what it answers is recorded); the real server path is tested in ``tests/e2e/test_retraining.py``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from quantcrew.crew.retraining import RetrainPolicy, RetrainStore, model_name, retrain_symbol
from quantcrew.data.ohlcv import OHLCV
from quantcrew.data.synthetic import generate_regime_market


@dataclass
class FakeServer:
    champion_id: str | None = "v1"
    drifted: bool = False
    quality_value: float | None = 0.6
    quality_n: int = 100
    gate_passes: bool = True
    calls: list[tuple[str, Any]] = field(default_factory=list)
    trained: int = 0

    def champion(self, name: str) -> tuple[str | None, dict[str, Any]]:
        return self.champion_id, {}

    def drift(self, model_id: str, bars: OHLCV) -> tuple[bool, dict[str, Any]]:
        self.calls.append(("drift", len(bars)))
        return self.drifted, {"drifted": self.drifted}

    def quality(self, model_id: str, metric: str) -> tuple[float | None, int, bool]:
        return self.quality_value, self.quality_n, self.quality_n >= 30

    def train(self, symbol: str, name: str, bars: OHLCV, *, trigger: str, fields: Mapping[str, Any]) -> str:
        self.trained += 1
        self.calls.append(("train", (len(bars), trigger)))
        return f"v{self.trained + 1}"

    def compare(self, champion_id: str, challenger_id: str, bars: OHLCV, holdout: int) -> dict[str, Any]:
        self.calls.append(("compare", (champion_id, challenger_id, holdout)))
        return {"passed": self.gate_passes, "reason": "challenger better" if self.gate_passes else "not better"}

    def own_gate(self, model_id: str) -> dict[str, Any]:
        return {"passed": True, "reason": "own gate passed"}

    def promote(self, name: str, model_id: str, reason: str) -> None:
        self.calls.append(("promote", model_id))
        self.champion_id = model_id

    def retire(self, model_id: str, reason: str) -> None:
        self.calls.append(("retire", model_id))

    def rollback(self, name: str, reason: str) -> str | None:
        self.calls.append(("rollback", reason))
        self.champion_id = "v1"
        return "v1"


@pytest.fixture(scope="module")
def bars() -> OHLCV:
    return generate_regime_market(n_bars=400, seed=3).bars


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RetrainStore]:
    s = RetrainStore(tmp_path / "runs.db")
    yield s
    s.close()


NOW = datetime(2026, 12, 5, tzinfo=UTC)
POLICY = RetrainPolicy(symbols=("SYNTH",), quality_limit=0.7, rollback_limit=0.75, holdout_bars=60)


def steps(report: Any) -> list[str]:
    return [e.step for e in report.events]


def test_nothing_triggers_when_the_champion_is_sound_and_undrifted(store: RetrainStore, bars: OHLCV) -> None:
    server = FakeServer()
    report = retrain_symbol(server, store, POLICY, "SYNTH", bars, now=lambda: NOW)
    assert steps(report) == ["checked"]
    assert server.trained == 0
    assert ("drift", POLICY.drift_bars) in server.calls  # the recent bars only


def test_drift_trains_a_challenger_on_bars_before_the_holdout_and_promotes_it_past_the_gate(
        store: RetrainStore, bars: OHLCV) -> None:
    server = FakeServer(drifted=True)
    report = retrain_symbol(server, store, POLICY, "SYNTH", bars, now=lambda: NOW)
    assert steps(report) == ["checked", "triggered", "trained", "gated", "promoted"]
    assert ("train", (len(bars) - 60, "drift")) in server.calls
    assert ("compare", ("v1", "v2", 60)) in server.calls
    assert server.champion_id == "v2"
    assert [e.step for e in store.events(model_name("SYNTH"))] == steps(report)


def test_train_bars_keeps_the_challenger_on_the_most_recent_bars_before_the_holdout(
        store: RetrainStore, bars: OHLCV) -> None:
    server = FakeServer(drifted=True)
    policy = RetrainPolicy(symbols=("SYNTH",), holdout_bars=60, train_bars=150)
    retrain_symbol(server, store, policy, "SYNTH", bars, now=lambda: NOW)
    assert ("train", (150, "drift")) in server.calls
    assert ("compare", ("v1", "v2", 60)) in server.calls


def test_a_challenger_that_fails_the_gate_is_retired_with_the_reason(store: RetrainStore, bars: OHLCV) -> None:
    server = FakeServer(drifted=True, gate_passes=False)
    report = retrain_symbol(server, store, POLICY, "SYNTH", bars, now=lambda: NOW)
    assert report.outcome == "rejected"
    assert report.events[-1].detail["reason"] == "not better"
    assert ("retire", "v2") in server.calls
    assert server.champion_id == "v1"


def test_the_cooldown_keeps_one_cause_from_retraining_again(store: RetrainStore, bars: OHLCV) -> None:
    server = FakeServer(drifted=True, gate_passes=False)
    retrain_symbol(server, store, POLICY, "SYNTH", bars, now=lambda: NOW)
    again = retrain_symbol(server, store, POLICY, "SYNTH", bars, now=lambda: NOW + timedelta(hours=1))
    assert again.outcome == "cooldown"
    assert server.trained == 1
    later = retrain_symbol(server, store, POLICY, "SYNTH", bars, now=lambda: NOW + timedelta(days=8))
    assert later.outcome == "rejected"
    assert server.trained == 2


def test_judged_poor_quality_triggers_but_too_few_samples_do_not(store: RetrainStore, bars: OHLCV) -> None:
    few = FakeServer(quality_value=0.9, quality_n=5)
    assert retrain_symbol(few, store, POLICY, "SYNTH", bars, now=lambda: NOW).outcome == "checked"
    poor = FakeServer(quality_value=0.72)
    report = retrain_symbol(poor, store, POLICY, "SYNTH", bars, now=lambda: NOW)
    assert report.events[1].cause == "quality"
    assert report.outcome == "promoted"


def test_a_promoted_champion_whose_quality_degrades_is_rolled_back(store: RetrainStore, bars: OHLCV) -> None:
    server = FakeServer(drifted=True)
    retrain_symbol(server, store, POLICY, "SYNTH", bars, now=lambda: NOW)
    assert server.champion_id == "v2"
    server.drifted, server.quality_value = False, 0.9
    report = retrain_symbol(server, store, POLICY, "SYNTH", bars, now=lambda: NOW + timedelta(days=1))
    assert steps(report) == ["checked", "rolled_back"]
    assert report.events[-1].champion_id == "v2" and report.events[-1].model_id == "v1"
    assert "rollback limit" in report.events[-1].detail["reason"]


def test_a_champion_not_promoted_by_a_firing_is_never_rolled_back(store: RetrainStore, bars: OHLCV) -> None:
    server = FakeServer(quality_value=0.9)
    report = retrain_symbol(server, store, POLICY, "SYNTH", bars, now=lambda: NOW)
    assert "rolled_back" not in steps(report)
    assert report.events[1].cause == "quality"


def test_without_a_champion_the_challengers_own_gate_decides(store: RetrainStore, bars: OHLCV) -> None:
    server = FakeServer(champion_id=None)
    report = retrain_symbol(server, store, POLICY, "SYNTH", bars, now=lambda: NOW)
    assert steps(report) == ["triggered", "trained", "gated", "promoted"]
    assert report.events[2].detail["reason"] == "own gate passed"


def test_a_server_fault_is_a_failed_step_not_an_exception(store: RetrainStore, bars: OHLCV) -> None:
    class Down(FakeServer):
        def drift(self, model_id: str, bars: OHLCV) -> tuple[bool, dict[str, Any]]:
            raise ConnectionError("server unreachable")

    report = retrain_symbol(Down(), store, POLICY, "SYNTH", bars, now=lambda: NOW)
    assert report.failed and "server unreachable" in report.events[-1].detail["error"]


def test_too_few_bars_for_a_holdout_fail_the_firing_and_say_why(store: RetrainStore, bars: OHLCV) -> None:
    report = retrain_symbol(FakeServer(drifted=True), store, POLICY, "SYNTH", bars.tail(30), now=lambda: NOW)
    assert report.failed and "holdout" in report.events[-1].detail["error"]


@pytest.mark.parametrize(("inputs", "field_name"), [
    ({}, "symbols"),
    ({"symbols": "SP500", "colour": 1}, "colour"),
    ({"symbols": "SP500", "holdout_bars": 3}, "holdout_bars"),
    ({"symbols": "SP500", "cooldown_s": -1}, "cooldown_s"),
    ({"symbols": "SP500", "train_bars": 20}, "train_bars"),
])
def test_bad_schedule_inputs_are_refused_naming_the_field(inputs: dict[str, Any], field_name: str) -> None:
    with pytest.raises(ValueError, match=field_name):
        RetrainPolicy.from_inputs(inputs)


def test_schedule_inputs_build_the_policy() -> None:
    policy = RetrainPolicy.from_inputs({"symbols": "SP500, NASDAQ", "quality_limit": 0.69, "always": True})
    assert policy.symbols == ("SP500", "NASDAQ") and policy.always and policy.quality_limit == 0.69
