"""Warm-start replay: every bar selected and rewarded once, regret against the best agent, a span replayed once."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from quantcrew.data import generate_regime_market, to_payload_dict
from quantcrew.ml_server.errors import ConflictError, InvalidInputError, ModelNotFoundError
from quantcrew.ml_server.jobs import JobCancelled, JobContext, JobManager
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.bandit import BanditReplayRequest, BanditReplayResult
from quantcrew.ml_server.schemas.common import OHLCVPayload
from quantcrew.ml_server.schemas.rl import RLSearchGrid, RLTrainRequest, RLTrainResult
from quantcrew.ml_server.services import adapter
from quantcrew.ml_server.services.bandit import replay, service
from quantcrew.ml_server.services.bandit.store import BanditStore
from quantcrew.ml_server.services.bars import Bars, bars_from_payload
from quantcrew.ml_server.services.regime.model import RegimeDetector
from quantcrew.ml_server.services.rl import service as rl
from quantcrew.ml_server.services.rl.evaluation import run_policy
from quantcrew.ml_server.services.rl.features import FeatureScaler
from quantcrew.ml_server.services.rl.market import Market, prepare_market

_ARMS = ["aggressive", "balanced"]
_COST = (1.0, 1.0)  # cost_bps, slippage_bps: the rl evaluation's defaults


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ModelRegistry, RLTrainResult, OHLCVPayload]]:
    """Two tiny policies with a regime model, trained by the rl family's own job."""
    root = tmp_path_factory.mktemp("replay")
    registry = ModelRegistry(root / "registry.db", root / "artifacts")
    jobs = JobManager(root / "registry.db")
    payload = OHLCVPayload(**to_payload_dict(generate_regime_market(500, seed=3).bars))
    req = RLTrainRequest(data=payload, agents=_ARMS, algorithm="a2c", timesteps=256, n_envs=2, seed=7,  # type: ignore[arg-type]
                         symbol="SYN", regime_features=True, seeds=1,
                         grid=RLSearchGrid(reward_scale=[1.0]))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):  # the regime HMM's linear algebra: extra threads only fight on a loaded CPU
        info = rl.train(req, registry, jobs, max_timesteps=10_000, min_rows=100, compute_threads=1)
        done = jobs.wait(info.job_id, timeout_s=600)
    assert done.status == "succeeded", done.error
    yield registry, RLTrainResult.model_validate(done.result), payload
    torch.set_num_threads(threads)
    jobs.shutdown()
    registry.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[BanditStore]:
    s = BanditStore(tmp_path / "bandits.db")
    yield s
    s.close()


@pytest.fixture
def jobs(tmp_path: Path) -> Iterator[JobManager]:
    manager = JobManager(tmp_path / "jobs.db")
    yield manager
    manager.shutdown()


def _ids(result: RLTrainResult) -> list[str]:
    return [p.model_id for p in result.policies]


def _request(payload: OHLCVPayload, ids: list[str], **kw: Any) -> BanditReplayRequest:
    fields: dict[str, Any] = {"bandit": "warm", "symbol": "SYN", "data": payload, "model_ids": ids,
                              "create": {"arms": _ARMS}}
    fields.update(kw)
    return BanditReplayRequest.model_validate(fields)


def _replayed(trained: tuple[ModelRegistry, RLTrainResult, OHLCVPayload], store: BanditStore,
              jobs: JobManager) -> BanditReplayResult:
    registry, result, payload = trained
    info = replay.start(_request(payload, _ids(result)), store, registry, jobs, max_abs_reward=1e6)
    done = jobs.wait(info.job_id, timeout_s=300)
    assert done.status == "succeeded", done.error
    assert done.kind == "bandit_replay" and done.progress.done == done.progress.total
    return BanditReplayResult.model_validate(done.result)


def _first_unseen(bars: Bars, result: RLTrainResult) -> int:
    return int(np.searchsorted(bars.times, np.datetime64(result.train_end, "us"), side="right"))


def _by_hand(registry: ModelRegistry, bars: Bars, model_id: str, start: int, end: int) -> tuple[np.ndarray, Market]:
    """An agent's net return per bar: p_t * r_{t+1} - (cost + slippage) * |p_t - p_{t-1}|, from a flat start."""
    policy, info = rl.load_policy(registry, model_id)
    detector = adapter.rebuild(registry, info.metadata["regime_model_id"], RegimeDetector)[0]
    market = prepare_market(bars, detector=detector, scaler=FeatureScaler.from_dict(info.metadata["scaler"]))
    p = run_policy(policy, market, start, end)
    fwd = bars.close[start + 1:end + 1] / bars.close[start:end] - 1.0
    turnover = np.abs(np.diff(p, prepend=0.0))
    return p * fwd - sum(_COST) * 1e-4 * turnover, market


def _decisions(path: Path) -> list[tuple[str, int, float | None]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT regime, arm, reward FROM bandit_decisions ORDER BY rowid").fetchall()


def test_replay_rewards_every_bar_once_and_measures_regret_against_the_best_agent(
        trained: tuple[ModelRegistry, RLTrainResult, OHLCVPayload], store: BanditStore, jobs: JobManager,
        tmp_path: Path) -> None:
    registry, train, payload = trained
    result = _replayed(trained, store, jobs)
    bars = bars_from_payload(payload)
    first, end = _first_unseen(bars, train), len(bars) - 1
    n = end - first
    assert result.bars == n and result.span_start == bars.iso()[first] and result.span_end == bars.iso()[end - 1]
    assert result.created and result.policy == "discounted_thompson" and result.symbol == "SYN"
    assert result.agents == {p.agent: p.model_id for p in train.policies}
    state = service.state(store, "warm")
    assert state.pulls == state.bandit.decisions == n and all(r.pending == 0 for r in state.regimes)
    rows = _decisions(tmp_path / "bandits.db")
    assert len(rows) == n and all(reward is not None for _, _, reward in rows)

    hand = {}
    for arm in _ARMS:
        net, market = _by_hand(registry, bars, result.agents[arm], first, end)
        hand[arm] = net
        assert result.agent_rewards[arm] == pytest.approx(float(net.sum()), abs=1e-12)
    # each decision earned its agent's return at its own bar, in the regime the filtered labels gave
    assert [r for r, _, _ in rows] == market.labels[first:end]
    assert [reward for _, _, reward in rows] == pytest.approx([hand[_ARMS[a]][i] for i, (_, a, _) in enumerate(rows)],
                                                              abs=1e-15)
    bandit = sum(reward or 0.0 for _, _, reward in rows)
    best = max(_ARMS, key=lambda a: float(hand[a].sum()))
    assert result.bandit_reward == pytest.approx(bandit, abs=1e-12)
    assert result.best_agent == best and result.best_agent_reward == pytest.approx(float(hand[best].sum()))
    assert result.regret == pytest.approx(float(hand[best].sum()) - bandit, abs=1e-12)
    assert result.regret_per_bar == pytest.approx(result.regret / n)
    assert result.pulls == {arm: sum(1 for _, a, _ in rows if _ARMS[a] == arm) for arm in _ARMS}
    assert result.regime_model_id == train.regime_model_id and "filtered labels" in result.regime_source

    assert sum(r.bars for r in result.regimes) == n
    for regime in result.regimes:
        assert sum(regime.pulls.values()) == regime.bars
        chosen = service.select(store, "warm", regime.regime, mode="exploit")
        assert chosen.arm == regime.exploit_arm and chosen.reason == regime.reason
    assert f"Replayed {n} bars of SYN" in result.summary


def test_the_same_span_again_is_409_with_the_earlier_result_and_rewards_nothing(
        trained: tuple[ModelRegistry, RLTrainResult, OHLCVPayload], store: BanditStore, jobs: JobManager) -> None:
    registry, train, payload = trained
    first = _replayed(trained, store, jobs)
    before = service.state(store, "warm")
    with pytest.raises(ConflictError, match="was already replayed") as info:
        replay.start(_request(payload, list(reversed(_ids(train)))), store, registry, jobs, max_abs_reward=1e6)
    details = info.value.details
    assert details["status"] == "done" and details["replay_key"] == first.replay_key
    assert BanditReplayResult.model_validate(details["result"]) == first
    after = service.state(store, "warm")
    assert after.data_hash == before.data_hash and after.pulls == before.pulls == first.bars
    assert after.bandit.decisions == before.bandit.decisions


def test_a_replay_cancelled_part_way_keeps_its_rewards_and_its_key(
        trained: tuple[ModelRegistry, RLTrainResult, OHLCVPayload], store: BanditStore, jobs: JobManager) -> None:
    registry, train, payload = trained
    plan = replay.prepare(_request(payload, _ids(train)), store, registry, max_abs_reward=1e6)
    replay.claim(plan, store, jobs)

    def stop_after_five(ctx: JobContext) -> None:
        if ctx.progress.done >= 5:
            ctx.request_cancel()

    with pytest.raises(JobCancelled, match="after 5 of"):
        replay.run(plan, store, registry, JobContext("job-test", on_persist=stop_after_five, interval_s=0.0))
    stopped = store.replay(plan.key)
    assert stopped is not None and stopped.status == "stopped" and stopped.bars_done == 5
    assert service.state(store, "warm").pulls == 5
    with pytest.raises(ConflictError, match="stopped after 5 bars"):
        replay.start(_request(payload, _ids(train)), store, registry, jobs, max_abs_reward=1e6)
    assert service.state(store, "warm").pulls == 5


def test_a_replay_whose_job_was_cancelled_before_it_ran_can_run_again(
        trained: tuple[ModelRegistry, RLTrainResult, OHLCVPayload], store: BanditStore, jobs: JobManager) -> None:
    registry, train, payload = trained
    release = threading.Event()
    jobs.submit("blocker", lambda ctx: {"released": release.wait(60)}, params={})  # the one worker is busy
    queued = replay.start(_request(payload, _ids(train)), store, registry, jobs, max_abs_reward=1e6)
    assert jobs.cancel(queued.job_id).status == "cancelled"
    release.set()
    again = replay.start(_request(payload, _ids(train)), store, registry, jobs, max_abs_reward=1e6)
    done = jobs.wait(again.job_id, timeout_s=300)
    assert done.status == "succeeded", done.error
    assert service.state(store, "warm").pulls == BanditReplayResult.model_validate(done.result).bars


def test_bad_replays_are_refused_before_anything_is_written(
        trained: tuple[ModelRegistry, RLTrainResult, OHLCVPayload], store: BanditStore, jobs: JobManager) -> None:
    registry, train, payload = trained
    ids = _ids(train)
    cases: list[tuple[BanditReplayRequest, str]] = [
        (_request(payload, ids, start=train.train_end), "is not after the training end"),
        (_request(payload, ids, create={}), "no policy for arm\\(s\\) conservative, contrarian"),
        (_request(payload, ids, symbol="OTHER"), "was trained on SYN, not OTHER"),
        (_request(payload, ids, create={"arms": _ARMS, "regimes": ["calm"]}), "has no regime bull, bear"),
        (_request(OHLCVPayload(**{k: v[:351] for k, v in payload.model_dump().items() if v is not None}), ids),
         "no bar to replay"),
    ]
    for req, needle in cases:
        with pytest.raises(InvalidInputError, match=needle):
            replay.start(req, store, registry, jobs, max_abs_reward=1e6)
    with pytest.raises(ModelNotFoundError):
        replay.start(_request(payload, [ids[0], "rl-000000000000"]), store, registry, jobs, max_abs_reward=1e6)
    assert store.find("warm") is None and jobs.list() == []
