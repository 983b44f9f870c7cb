"""Training specialized agents: stored safely, reproducible, evaluated out of sample, gated, deployed only when the
gate passed, cancellable; act with a symbol answers with the deployed policies and lists the gated ones. (The seeds,
the grid and the validation split: test_search.py.)"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from quantcrew.data import generate_regime_market, to_payload_dict
from quantcrew.ml_server.errors import InvalidInputError, ModelNotReadyError, NotFoundError
from quantcrew.ml_server.jobs import JobCancelled
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.common import OHLCVPayload
from quantcrew.ml_server.schemas.gate import GateVerdict
from quantcrew.ml_server.schemas.rl import RLActRequest, RLEvaluateRequest, RLTrainRequest, RLTrainResult
from quantcrew.ml_server.services import adapter
from quantcrew.ml_server.services.bars import bars_from_payload
from quantcrew.ml_server.services.deployment import DeploymentStore
from quantcrew.ml_server.services.rl import market
from quantcrew.ml_server.services.rl import service as rl
from quantcrew.ml_server.services.rl import training as rl_training
from quantcrew.ml_server.services.rl.features import WARMUP


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


def _train(payload: OHLCVPayload, registry: ModelRegistry, ctx: Any = None,
           deployments: DeploymentStore | None = None, **kw: Any) -> RLTrainResult:
    fields: dict[str, Any] = {"data": payload, "agents": ["aggressive"], "algorithm": "a2c", "timesteps": 512,
                              "regime_features": False, "n_envs": 2, "seed": 7, "seeds": 1,
                              "grid": {"reward_scale": [1.0]}}
    fields.update(kw)
    req = RLTrainRequest(**fields)
    bars = bars_from_payload(req.data)
    plan = rl_training.TrainingPlan(req, bars, market.split_index(bars, req.train_end, req.train_fraction))
    return RLTrainResult.model_validate(rl_training.train_agents(plan, registry, ctx or _Ctx(), deployments))


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


def test_train_never_pays_a_validation_or_test_price_to_training(tmp_path: Path, payload: OHLCVPayload) -> None:
    # The training env's last step is the bar before the last fitting bar: its forward return
    # uses the last fitting close, never a validation or test-span close.
    req = RLTrainRequest(data=payload, timesteps=10, regime_features=False)
    bars = bars_from_payload(req.data)
    last = market.split_index(bars, None, 0.7)
    plan = rl_training.TrainingPlan(req, bars, last)
    prepared = market.prepare_market(bars, detector=None, train_last=plan.fit_last)
    env = rl_training._env_factory(prepared, "aggressive", plan)().unwrapped
    validation = last - plan.fit_last
    assert env.end == plan.fit_last and validation == int(np.ceil((last - WARMUP) * 0.25))


def test_train_reports_progress_to_the_job(tmp_path: Path, payload: OHLCVPayload) -> None:
    ctx = _Ctx()
    _train(payload, _registry(tmp_path, "r"), ctx, agents=["aggressive", "balanced"], timesteps=512)
    dones = [r["done"] for r in ctx.reports]
    assert dones == sorted(dones) and dones[-1] == 1024
    assert {r["total"] for r in ctx.reports} == {1024}
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
    regime = registry.get(result.regime_model_id).metadata  # fitted on the fitting bars: no validation, no test bar
    assert regime["data_end"] == result.validation_start and result.validation_start < result.train_end
    evaluated = rl.evaluate(RLEvaluateRequest(data=payload, model_ids=[policy.model_id]), registry)
    assert evaluated.evaluations[0].metrics == policy.evaluation.metrics  # type: ignore[union-attr]
    assert evaluated.evaluations[0].gate == policy.gate is not None  # the same span judged the same way
    assert evaluated.benchmarks == result.benchmarks
    acted = rl.act(RLActRequest(data=payload, agents=["balanced"]), registry)
    action = acted.actions[0]
    assert action.model_id == policy.model_id and action.action_label in ("short", "flat", "long")
    assert action.probabilities is not None and sum(action.probabilities.values()) == pytest.approx(1.0)
    assert acted.regime in ("bull", "bear", "sideways", "volatile")


def test_dqn_policy_answers_with_q_values(tmp_path: Path, payload: OHLCVPayload) -> None:
    registry = _registry(tmp_path, "r")
    _train(payload, registry, algorithm="dqn", n_envs=1)
    action = rl.act(RLActRequest(data=payload, agents=["aggressive"], algorithm="dqn"), registry).actions[0]
    assert action.q_values is not None and action.probabilities is None
    assert action.action == int(np.argmax([action.q_values[k] for k in ("short", "flat", "long")]))


def test_continuous_policy_answers_a_weight(tmp_path: Path, payload: OHLCVPayload) -> None:
    registry = _registry(tmp_path, "r")
    _train(payload, registry, action_mode="continuous")
    action = rl.act(RLActRequest(data=payload, agents=["aggressive"], position=0.5), registry).actions[0]
    assert action.action_label == "weight" and -1.0 <= action.target_position <= 1.0
    assert action.action_std is not None and action.action_std > 0


# -- the gate, deployment, and acting for a symbol ------------------------------------------------


def _deployments(tmp_path: Path, name: str = "deployments") -> DeploymentStore:
    return DeploymentStore(tmp_path / name / "deployments.db")


def test_every_policy_is_judged_and_its_verdict_stored(tmp_path: Path, payload: OHLCVPayload) -> None:
    registry, deployments = _registry(tmp_path, "r"), _deployments(tmp_path)
    result = _train(payload, registry, deployments=deployments, agents=["aggressive", "contrarian"], symbol="SPX")
    for policy in result.policies:
        gate = policy.gate
        assert gate is not None and gate.gate == "rl_policy" and policy.evaluation is not None
        assert GateVerdict.model_validate(registry.get(policy.model_id).metadata["gate"]) == gate
        assert (gate.span_start, gate.span_end) == (result.test_start, result.test_end)
        assert gate.n == policy.evaluation.metrics.n_bars
        sharpe = next(c for c in gate.checks if c.name == "sharpe_above_buy_and_hold")
        assert sharpe.value == pytest.approx(policy.evaluation.metrics.sharpe)
        assert sharpe.baseline_value == pytest.approx(result.benchmarks["buy_and_hold"].sharpe)
        # deployed exactly when it passed, under rl-<agent>-<symbol lowercased>
        full = [d.model_id for d in deployments.list(f"rl-{policy.agent}-spx") if d.stage == "full"]
        assert policy.deployed == gate.passed and full == ([policy.model_id] if gate.passed else [])
    # without regime labels there is no sideways bar: the contrarian's specialty cannot be measured
    contrarian = result.policies[1].gate
    assert contrarian is not None and not contrarian.passed and not result.policies[1].deployed
    assert "return in sideways regimes not measurable" in contrarian.summary
    assert contrarian.rule == "mean-reversion rule for contrarian"


def test_deploy_if_passed_needs_a_pass_a_symbol_and_a_store(tmp_path: Path, payload: OHLCVPayload) -> None:
    registry, deployments = _registry(tmp_path, "r"), _deployments(tmp_path)
    policy = _train(payload, registry).policies[0]  # no symbol, no store: never deployed
    assert policy.gate is not None and not policy.deployed
    info = registry.get(policy.model_id)
    passed = policy.gate.model_copy(update={"passed": True})
    failed = policy.gate.model_copy(update={"passed": False})
    deploy = rl_training.deploy_if_passed
    assert not deploy(deployments, info, agent="aggressive", symbol="SPX", verdict=failed)
    assert not deploy(deployments, info, agent="aggressive", symbol=None, verdict=passed)
    assert not deploy(None, info, agent="aggressive", symbol="SPX", verdict=passed)
    assert deployments.list() == []
    assert deploy(deployments, info, agent="aggressive", symbol=" SpX ", verdict=passed)
    [d] = deployments.list()
    assert (d.name, d.model_id, d.version, d.stage) == ("rl-aggressive-spx", info.model_id, info.version, "full")


@pytest.fixture(scope="module")
def for_symbol(tmp_path_factory: pytest.TempPathFactory, payload: OHLCVPayload) -> tuple[ModelRegistry, list[str]]:
    """A registry with policies for SPX: aggressive v1, contrarian v1 and v2 (both fail their gate), and a
    conservative policy stored before gates existed (no verdict). Returns it and those ids, oldest first."""
    home = tmp_path_factory.mktemp("for-symbol")
    registry = ModelRegistry(home / "registry.db", home / "artifacts")
    first = _train(payload, registry, agents=["aggressive", "contrarian"], symbol="SPX")
    second = _train(payload, registry, agents=["contrarian"], symbol="SPX", seed=8)
    legacy_of = _train(payload, registry, agents=["conservative"], symbol="SPX").policies[0]
    policy, info = rl.load_policy(registry, legacy_of.model_id)
    old_meta = {k: v for k, v in info.metadata.items() if k != "gate"}
    legacy = adapter.store(registry, policy, name="rl-conservative-a2c", metadata=old_meta)
    ids = [first.policies[0].model_id, first.policies[1].model_id, second.policies[0].model_id, legacy.model_id]
    return registry, ids


def test_act_with_a_symbol_answers_with_the_deployed_policy_and_lists_the_gated(
        tmp_path: Path, payload: OHLCVPayload, for_symbol: tuple[ModelRegistry, list[str]]) -> None:
    registry, (aggressive, contrarian_v1, contrarian_v2, legacy) = for_symbol
    deployments = _deployments(tmp_path)
    info = registry.get(aggressive)
    deployments.set(model_id=aggressive, name="rl-aggressive-spx", version=info.version, stage="full")
    req = RLActRequest(data=payload, agents=["aggressive", "contrarian", "conservative"], symbol="spx")
    acted = rl.act(req, registry, deployments)
    assert [a.model_id for a in acted.actions] == [aggressive] and acted.method_used == "rl_policy"
    by_agent = {g.agent: g for g in acted.gated}
    assert list(by_agent) == ["contrarian", "conservative"]
    gated = by_agent["contrarian"]
    assert gated.model_id == contrarian_v2  # the newest
    assert gated.gate is not None and not gated.gate.passed
    assert gated.reason.startswith("failed its gate: ") and "sideways" in gated.reason
    assert by_agent["conservative"].model_id == legacy and by_agent["conservative"].gate is None
    assert "no gate verdict recorded" in by_agent["conservative"].reason


def test_a_deployed_older_policy_answers_before_a_newer_gated_one(
        tmp_path: Path, payload: OHLCVPayload, for_symbol: tuple[ModelRegistry, list[str]]) -> None:
    registry, (_, contrarian_v1, _, _) = for_symbol
    deployments = _deployments(tmp_path)
    info = registry.get(contrarian_v1)
    deployments.set(model_id=contrarian_v1, name="rl-contrarian-spx", version=info.version, stage="full")
    acted = rl.act(RLActRequest(data=payload, agents=["contrarian"], symbol="SPX"), registry, deployments)
    assert [a.model_id for a in acted.actions] == [contrarian_v1] and acted.gated == []


def test_act_with_every_agent_gated_answers_no_action(
        tmp_path: Path, payload: OHLCVPayload, for_symbol: tuple[ModelRegistry, list[str]]) -> None:
    registry, _ = for_symbol
    acted = rl.act(RLActRequest(data=payload, agents=["contrarian", "aggressive"], symbol="SPX"), registry,
                   _deployments(tmp_path))
    assert acted.actions == [] and [g.agent for g in acted.gated] == ["contrarian", "aggressive"]
    assert acted.regime is None and acted.regime_probabilities is None and acted.method_used == "rl_policy_gated"


def test_act_with_a_symbol_no_policy_was_trained_on_is_404_naming_agent_and_symbol(
        tmp_path: Path, payload: OHLCVPayload, for_symbol: tuple[ModelRegistry, list[str]]) -> None:
    registry, _ = for_symbol
    deployments = _deployments(tmp_path)
    with pytest.raises(NotFoundError, match="no trained policy for agent 'balanced' on symbol 'SPX'") as err:
        rl.act(RLActRequest(data=payload, agents=["aggressive", "balanced"], symbol="SPX"), registry, deployments)
    assert err.value.details["agent"] == "balanced" and err.value.details["symbol"] == "SPX"
    with pytest.raises(NotFoundError) as other:
        rl.act(RLActRequest(data=payload, agents=["aggressive"], symbol="NDX"), registry, deployments)
    assert other.value.details["symbol"] == "NDX"
    with pytest.raises(NotFoundError):  # the policies of another algorithm do not count
        rl.act(RLActRequest(data=payload, agents=["aggressive"], symbol="SPX", algorithm="ppo"), registry,
               deployments)


def test_act_without_a_symbol_still_answers_with_the_newest_policy(
        payload: OHLCVPayload, for_symbol: tuple[ModelRegistry, list[str]]) -> None:
    registry, (_, _, contrarian_v2, _) = for_symbol
    acted = rl.act(RLActRequest(data=payload, agents=["contrarian"]), registry)
    assert [a.model_id for a in acted.actions] == [contrarian_v2] and acted.gated == []
    with pytest.raises(ModelNotReadyError):  # a symbol needs the deployment store
        rl.act(RLActRequest(data=payload, agents=["contrarian"], symbol="SPX"), registry)


def test_timesteps_over_the_cap_name_the_field() -> None:
    with pytest.raises(InvalidInputError, match="timesteps") as err:
        rl.check_timesteps(2_000, 1_000)
    assert err.value.details[0]["loc"] == ["timesteps"]
    rl.check_timesteps(1_000, 1_000)
