"""Evaluation: bars per year from the data's calendar, the specialty measured in the agent's own regime, and the
batched policy walk equal to asking bar by bar."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from stable_baselines3.common.policies import ActorCriticPolicy

from quantcrew.data import generate_regime_market, to_payload_dict
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.common import OHLCVPayload
from quantcrew.ml_server.schemas.rl import RLEvaluateRequest, RLTrainRequest, RLTrainResult
from quantcrew.ml_server.services.bars import bars_from_payload
from quantcrew.ml_server.services.rl import market
from quantcrew.ml_server.services.rl import service as rl
from quantcrew.ml_server.services.rl import training as rl_training
from quantcrew.ml_server.services.rl.evaluation import (
    SPECIALISM,
    annualisation,
    evaluate_positions,
    gate_positions,
    run_policy,
)
from quantcrew.ml_server.services.rl.market import observation
from quantcrew.ml_server.services.rl.policy import (
    NET_ARCH,
    PolicyModel,
    action_space,
    observation_space,
    policy_state,
)


class _Ctx:
    job_id = "job-test"
    cancelled = False

    def report(self, **_: Any) -> None:
        return None


def _retimed(n: int, step: str, seed: int = 3) -> OHLCVPayload:
    """Synthetic bars re-stamped one ``step`` apart ('W' weekly, 'M' monthly) from 1970."""
    raw = to_payload_dict(generate_regime_market(n, seed=seed).bars)
    stamps = np.arange(n).astype(f"datetime64[{step}]").astype("datetime64[D]")
    raw["timestamps"] = [f"{s}T00:00:00" for s in stamps]
    return OHLCVPayload(**raw)


def _train(payload: OHLCVPayload, tmp_path: Path, **kw: Any) -> tuple[RLTrainResult, ModelRegistry]:
    fields: dict[str, Any] = {"data": payload, "agents": ["aggressive"], "algorithm": "a2c", "timesteps": 256,
                              "regime_features": False, "n_envs": 2, "seeds": 1, "grid": {"reward_scale": [1.0]}}
    fields.update(kw)
    req = RLTrainRequest(**fields)
    bars = bars_from_payload(req.data)
    plan = rl_training.TrainingPlan(req, bars, market.split_index(bars, req.train_end, req.train_fraction))
    registry = ModelRegistry(tmp_path / "registry.db", tmp_path / "artifacts")
    return RLTrainResult.model_validate(rl_training.train_agents(plan, registry, _Ctx())), registry  # type: ignore[arg-type]


@pytest.mark.parametrize(("step", "n", "expected"), [("W", 700, 52), ("M", 420, 12)])
def test_weekly_and_monthly_bars_annualise_with_their_own_calendar(tmp_path: Path, step: str, n: int,
                                                                    expected: int) -> None:
    payload = _retimed(n, step)
    result, registry = _train(payload, tmp_path)
    assert result.periods_per_year == expected
    bh = result.benchmarks["buy_and_hold"]
    assert bh.periods_per_year == expected
    # the annual return compounds the total over the span's years at that many bars a year
    assert bh.annual_return == pytest.approx((1.0 + bh.total_return) ** (expected / bh.n_bars) - 1.0, rel=1e-9)
    [policy] = result.policies
    assert policy.evaluation is not None and policy.evaluation.metrics.periods_per_year == expected
    evaluated = rl.evaluate(RLEvaluateRequest(data=payload, model_ids=[policy.model_id]), registry)
    assert evaluated.periods_per_year == expected
    assert evaluated.evaluations[0].metrics == policy.evaluation.metrics


def test_bars_per_year_are_counted_not_assumed() -> None:
    daily = bars_from_payload(OHLCVPayload(**to_payload_dict(generate_regime_market(800, seed=1).bars)))
    prepared = market.prepare_market(daily, detector=None, train_last=500)
    assert annualisation(prepared) == market.bars_per_year(daily.times)
    assert 240 <= annualisation(prepared) <= 370  # business or calendar days, as the generator stamps them


def _labelled(labels: list[str]) -> market.Market:
    bars = bars_from_payload(OHLCVPayload(**to_payload_dict(generate_regime_market(len(labels), seed=2).bars)))
    prepared = market.prepare_market(bars, detector=None, train_last=len(labels) // 2)
    return dataclasses.replace(prepared, labels=labels)


def test_the_conservative_specialty_is_its_drawdown_over_bear_and_volatile_bars_only() -> None:
    n = 400
    labels = ["bull" if (t // 40) % 2 == 0 else ("bear" if (t // 40) % 4 == 1 else "volatile") for t in range(n)]
    m = _labelled(labels)
    start, end = 60, n - 1
    # flat on the bear and volatile bars, long elsewhere: no drawdown at all where it is judged (no costs: leaving
    # the market would cost on the bar it is left)
    positions = np.array([0.0 if labels[t] in ("bear", "volatile") else 1.0 for t in range(start, end)])
    verdict = gate_positions("conservative", positions, m, start, end, cost_bps=0.0, slippage_bps=0.0)
    special = next(c for c in verdict.checks if c.name == "specialty_above_buy_and_hold")
    in_regime = sum(1 for t in range(start, end) if labels[t] in ("bear", "volatile"))
    assert special.value == 0.0 and special.measure == "max drawdown in bear/volatile regimes"
    assert in_regime >= 100
    assert special.baseline_value is not None and special.baseline_value > 0.0 and special.passed
    evaluation = evaluate_positions("conservative", "m", "ppo", positions, m, start, end, cost_bps=0.0,
                                    slippage_bps=0.0)
    assert evaluation.specialty_regimes == ["bear", "volatile"] and evaluation.specialty_value == 0.0
    assert evaluation.regime_returns["bear"].n_bars + evaluation.regime_returns["volatile"].n_bars == in_regime
    assert evaluation.beats_buy_and_hold
    # long on exactly those bars instead: the same drawdown as buy-and-hold there, and a tie is not better
    flipped = 1.0 - positions
    verdict = gate_positions("conservative", flipped, m, start, end, cost_bps=0.0, slippage_bps=0.0)
    assert not next(c for c in verdict.checks if c.name == "specialty_above_buy_and_hold").passed


@pytest.mark.parametrize("agent", ["aggressive", "contrarian", "conservative"])
def test_a_specialist_whose_regime_never_shows_out_of_sample_fails_its_gate(agent: str) -> None:
    m = _labelled(["sideways" if agent != "contrarian" else "bull"] * 300)
    if agent == "aggressive":
        m = _labelled(["bear"] * 300)
    positions = np.ones(239)
    verdict = gate_positions(agent, positions, m, 60, 299, cost_bps=0.0, slippage_bps=0.0)
    special = next(c for c in verdict.checks if c.name == "specialty_above_buy_and_hold")
    assert special.value is None and not special.passed and not verdict.passed
    assert f"in {'/'.join(SPECIALISM[agent].regimes or ())} regimes not measurable" in verdict.summary
    assert SPECIALISM[agent].regimes is not None


def _random_policy(obs_dim: int, seed: int) -> PolicyModel:
    """A discrete PPO policy with freshly initialised (random) weights: its argmax varies with the observation."""
    torch.manual_seed(seed)
    net = ActorCriticPolicy(observation_space(obs_dim), action_space("discrete"), lambda _: 0.0,
                            net_arch={"pi": list(NET_ARCH), "vf": list(NET_ARCH)})
    model = PolicyModel(algorithm="ppo", action_mode="discrete", obs_dim=obs_dim)
    model._set_state(policy_state(net))
    return model


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_batched_walk_gives_the_positions_of_asking_bar_by_bar(seed: int) -> None:
    bars = bars_from_payload(OHLCVPayload(**to_payload_dict(generate_regime_market(500, seed=4).bars)))
    m = market.prepare_market(bars, detector=None, train_last=300)
    policy = _random_policy(m.scaled.shape[1] + 1, seed)
    for initial in (0.0, 1.0, -1.0, 0.5):
        batched = run_policy(policy, m, 100, 450, initial_position=initial)
        by_hand, position = [], initial
        for t in range(100, 450):
            position = policy.answer(observation(m, t, position)).target_position
            by_hand.append(position)
        assert batched.tolist() == by_hand
    assert len(set(batched.tolist())) > 1  # the walk went through more than one position
