"""Training specialized agents: stored safely, reproducible, evaluated out of sample, cancellable."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from quantcrew.data import generate_regime_market, to_payload_dict
from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.jobs import JobCancelled
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.common import OHLCVPayload
from quantcrew.ml_server.schemas.rl import RLActRequest, RLEvaluateRequest, RLTrainRequest, RLTrainResult
from quantcrew.ml_server.services.bars import bars_from_payload
from quantcrew.ml_server.services.rl import market
from quantcrew.ml_server.services.rl import service as rl
from quantcrew.ml_server.services.rl import training as rl_training


class _Ctx:
    """A job context that records reports and can be cancelled after some of them."""

    job_id = "job-test"

    def __init__(self, cancel_after: int | None = None) -> None:
        self.reports: list[dict[str, Any]] = []
        self._cancel_after = cancel_after

    def report(self, **kw: Any) -> None:
        self.reports.append(kw)

    @property
    def cancelled(self) -> bool:
        return self._cancel_after is not None and len(self.reports) > self._cancel_after


@pytest.fixture(scope="module")
def payload() -> OHLCVPayload:
    return OHLCVPayload(**to_payload_dict(generate_regime_market(700, seed=3).bars))


def _train(payload: OHLCVPayload, registry: ModelRegistry, ctx: Any = None, **kw: Any) -> RLTrainResult:
    fields: dict[str, Any] = {"data": payload, "agents": ["aggressive"], "algorithm": "a2c", "timesteps": 800,
                              "regime_features": False, "n_envs": 2, "seed": 7}
    fields.update(kw)
    req = RLTrainRequest(**fields)
    bars = bars_from_payload(req.data)
    plan = rl_training.TrainingPlan(req, bars, market.split_index(bars, req.train_end, req.train_fraction))
    return RLTrainResult.model_validate(rl_training.train_agents(plan, registry, ctx or _Ctx()))


def _registry(tmp_path: Path, name: str) -> ModelRegistry:
    return ModelRegistry(tmp_path / name / "registry.db", tmp_path / name / "artifacts")


def test_train_same_seed_gives_same_weights_and_evaluation(tmp_path: Path, payload: OHLCVPayload) -> None:
    first, second = _registry(tmp_path, "a"), _registry(tmp_path, "b")
    r1, r2 = _train(payload, first), _train(payload, second)
    p1, p2 = r1.policies[0], r2.policies[0]
    assert p1.sha256 == p2.sha256  # byte-identical state dicts
    assert p1.evaluation is not None and p2.evaluation is not None
    assert p1.evaluation.metrics == p2.evaluation.metrics
    s1, _ = first.load(p1.model_id, family="rl")
    s2, _ = second.load(p2.model_id, family="rl")
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)


def test_train_other_seed_gives_other_weights(tmp_path: Path, payload: OHLCVPayload) -> None:
    r1 = _train(payload, _registry(tmp_path, "a"), seed=1)
    r2 = _train(payload, _registry(tmp_path, "b"), seed=2)
    assert r1.policies[0].sha256 != r2.policies[0].sha256


def test_train_stores_policy_with_provenance(tmp_path: Path, payload: OHLCVPayload) -> None:
    registry = _registry(tmp_path, "r")
    result = _train(payload, registry, agents=["conservative", "contrarian"], name_prefix="spx")
    assert [p.agent for p in result.policies] == ["conservative", "contrarian"]
    for policy in result.policies:
        info = registry.get(policy.model_id)
        assert info.family == "rl" and info.name == f"spx-{policy.agent}-a2c" and info.method == "a2c"
        file = next((tmp_path / "r" / "artifacts").glob(f"{policy.model_id}.*"))
        assert hashlib.sha256(file.read_bytes()).hexdigest() == info.sha256 == policy.sha256
        meta = info.metadata
        assert meta["reward"] == policy.agent and meta["seed"] == 7 and meta["algorithm"] == "a2c"
        assert meta["train_start"] == result.train_start and meta["train_end"] == result.train_end
        assert meta["data_hash"] == result.data_hash
    assert result.test_start is not None and result.test_start > result.train_end


def test_train_never_pays_a_test_price_to_training(tmp_path: Path, payload: OHLCVPayload) -> None:
    # The training env's last step is the bar before the last training bar: its forward return
    # uses the last training close, never a test-span close.
    req = RLTrainRequest(data=payload, timesteps=10, regime_features=False)
    bars = bars_from_payload(req.data)
    last = market.split_index(bars, None, 0.7)
    plan = rl_training.TrainingPlan(req, bars, last)
    prepared = market.prepare_market(bars, detector=None, train_last=last)
    env = rl_training._env_factory(prepared, "aggressive", plan)().unwrapped
    assert env.end == last


def test_train_reports_progress_to_the_job(tmp_path: Path, payload: OHLCVPayload) -> None:
    ctx = _Ctx()
    _train(payload, _registry(tmp_path, "r"), ctx, agents=["aggressive", "balanced"], timesteps=1200)
    dones = [r["done"] for r in ctx.reports]
    assert dones == sorted(dones) and dones[-1] == 2400
    assert {r["total"] for r in ctx.reports} == {2400}
    assert any("episode_reward" in (r.get("metrics") or {}) for r in ctx.reports)


def test_train_cancelled_raises_and_keeps_finished_policies(tmp_path: Path, payload: OHLCVPayload) -> None:
    registry = _registry(tmp_path, "r")
    with pytest.raises(JobCancelled):
        _train(payload, registry, _Ctx(cancel_after=0), timesteps=50_000)
    assert registry.list(family="rl") == []


def test_act_and_evaluate_reproduce_the_training_evaluation(tmp_path: Path, payload: OHLCVPayload) -> None:
    registry = _registry(tmp_path, "r")
    result = _train(payload, registry, regime_features=True, agents=["balanced"])
    policy = result.policies[0]
    assert result.regime_model_id is not None
    evaluated = rl.evaluate(RLEvaluateRequest(data=payload, model_ids=[policy.model_id]), registry)
    assert evaluated.evaluations[0].metrics == policy.evaluation.metrics  # type: ignore[union-attr]
    assert evaluated.benchmarks == result.benchmarks
    acted = rl.act(RLActRequest(data=payload, agents=["balanced"]), registry)
    action = acted.actions[0]
    assert action.model_id == policy.model_id and action.action_label in ("short", "flat", "long")
    assert action.probabilities is not None and sum(action.probabilities.values()) == pytest.approx(1.0)
    assert acted.regime in ("bull", "bear", "sideways", "volatile")


def test_dqn_policy_answers_with_q_values(tmp_path: Path, payload: OHLCVPayload) -> None:
    registry = _registry(tmp_path, "r")
    _train(payload, registry, algorithm="dqn", timesteps=1200, n_envs=1)
    action = rl.act(RLActRequest(data=payload, agents=["aggressive"], algorithm="dqn"), registry).actions[0]
    assert action.q_values is not None and action.probabilities is None
    assert action.action == int(np.argmax([action.q_values[k] for k in ("short", "flat", "long")]))


def test_continuous_policy_answers_a_weight(tmp_path: Path, payload: OHLCVPayload) -> None:
    registry = _registry(tmp_path, "r")
    _train(payload, registry, action_mode="continuous")
    action = rl.act(RLActRequest(data=payload, agents=["aggressive"], position=0.5), registry).actions[0]
    assert action.action_label == "weight" and -1.0 <= action.target_position <= 1.0
    assert action.action_std is not None and action.action_std > 0


def test_timesteps_over_the_cap_name_the_field() -> None:
    with pytest.raises(InvalidInputError, match="timesteps") as err:
        rl.check_timesteps(2_000, 1_000)
    assert err.value.details[0]["loc"] == ["timesteps"]
    rl.check_timesteps(1_000, 1_000)
