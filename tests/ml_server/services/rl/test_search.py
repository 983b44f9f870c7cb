"""Seeds, the grid and the validation split: every run reported, the validation-best one kept, the test bars never
part of the choice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantcrew.data import generate_regime_market, to_payload_dict
from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.common import OHLCVPayload
from quantcrew.ml_server.schemas.gate import GateCheck, GateVerdict
from quantcrew.ml_server.schemas.rl import RLSeedRun, RLTrainRequest, RLTrainResult
from quantcrew.ml_server.services.bars import bars_from_payload
from quantcrew.ml_server.services.rl import market
from quantcrew.ml_server.services.rl import training as rl_training
from quantcrew.ml_server.services.rl.features import WARMUP
from quantcrew.ml_server.services.rl.search import RunSpec, choose, plan_runs, validation_score


class _Ctx:
    job_id = "job-test"
    cancelled = False

    def report(self, **_: Any) -> None:
        return None


_BARS = generate_regime_market(700, seed=3).bars
_TRAIN_END = 489  # the default 70% split of 700 bars


def _payload(shock_after: int | None = None) -> OHLCVPayload:
    """The bars; with ``shock_after``, every bar after it moved by its own random factor (a different future)."""
    raw = to_payload_dict(_BARS)
    if shock_after is not None:
        factor = np.ones(len(_BARS))
        factor[shock_after + 1:] = np.cumprod(1.0 + np.random.default_rng(99).normal(0.0, 0.03, len(_BARS) -
                                                                                      shock_after - 1))
        for key in ("open", "high", "low", "close"):
            raw[key] = (np.asarray(raw[key]) * factor).tolist()
    return OHLCVPayload(**raw)


def _train(payload: OHLCVPayload, tmp_path: Path, name: str, **kw: Any) -> RLTrainResult:
    fields: dict[str, Any] = {"data": payload, "agents": ["aggressive"], "algorithm": "a2c", "timesteps": 256,
                              "regime_features": False, "n_envs": 2, "seed": 7, "seeds": 2,
                              "grid": {"reward_scale": [0.5, 2.0]}, "train_end": _BARS.iso_timestamps()[_TRAIN_END]}
    fields.update(kw)
    req = RLTrainRequest(**fields)
    bars = bars_from_payload(req.data)
    plan = rl_training.TrainingPlan(req, bars, market.split_index(bars, req.train_end, req.train_fraction))
    registry = ModelRegistry(tmp_path / name / "registry.db", tmp_path / name / "artifacts")
    return RLTrainResult.model_validate(rl_training.train_agents(plan, registry, _Ctx()))  # type: ignore[arg-type]


# -- the plan and the choice, by themselves ----------------------------------------------------------


def test_every_seed_runs_every_configuration_in_order() -> None:
    req = RLTrainRequest(data=_payload(), seed=5, seeds=2, grid={"learning_rate": [1e-3, 3e-4],  # type: ignore[arg-type]
                                                                   "reward_scale": [1.0, 4.0]})
    runs = plan_runs(req)
    assert runs[:4] == [RunSpec(5, 1e-3, None, 1.0), RunSpec(5, 1e-3, None, 4.0), RunSpec(5, 3e-4, None, 1.0),
                        RunSpec(5, 3e-4, None, 4.0)]
    assert [r.seed for r in runs] == [5] * 4 + [6] * 4 and req.runs == len(runs) == 8


def test_a_single_learning_rate_fills_the_grid_when_it_lists_none() -> None:
    req = RLTrainRequest(data=_payload(), learning_rate=0.002, seeds=1)
    assert [(r.learning_rate, r.ent_coef, r.reward_scale) for r in plan_runs(req)] == [(0.002, None, 0.5),
                                                                                       (0.002, None, 2.0)]


def _verdict(passed: list[bool], sharpe: float, bh: float) -> GateVerdict:
    checks = [GateCheck(name="sharpe_above_buy_and_hold", measure="Sharpe after costs", value=sharpe,
                        baseline="buy-and-hold", baseline_value=bh, passed=passed[0])]
    checks += [GateCheck(name=f"check_{i}", measure="m", value=0.0, baseline="b", baseline_value=0.0, passed=p)
               for i, p in enumerate(passed[1:])]
    checks.append(GateCheck(name="brier_reported", measure="m", value=9.0, baseline="b", baseline_value=0.0,
                            passed=True))
    return GateVerdict(gate="rl_policy", passed=all(passed), checks=checks, interval=None, p_value=None,
                       span_start=None, span_end=None, n=1, summary="")


_margin = st.integers(-5_000, 5_000).map(lambda k: k / 100)  # Sharpe margins to the hundredth


@settings(max_examples=200, deadline=None)
@given(st.lists(st.booleans(), min_size=4, max_size=4), st.lists(st.booleans(), min_size=4, max_size=4), _margin,
       _margin)
def test_more_checks_passed_on_validation_always_scores_higher(a: list[bool], b: list[bool], ma: float,
                                                               mb: float) -> None:
    sa, sb = validation_score(_verdict(a, ma, 0.0)), validation_score(_verdict(b, mb, 0.0))
    assert int(sa) == sum(a) and int(sb) == sum(b)  # a "_reported" check never counts
    if sum(a) != sum(b):
        assert (sa > sb) == (sum(a) > sum(b))
    elif ma != mb:
        assert (sa > sb) == (ma > mb)  # as many checks: the wider Sharpe margin wins
    else:
        assert sa == sb


@given(st.lists(st.floats(0.0, 5.0, allow_nan=False), min_size=1, max_size=20))
def test_choose_picks_the_first_best_score(scores: list[float]) -> None:
    k = choose(scores)
    assert scores[k] == max(scores) and k == scores.index(max(scores))


def test_choose_with_nothing_to_choose_from_raises() -> None:
    with pytest.raises(ValueError, match="no run"):
        choose([])


# -- a training job ------------------------------------------------------------------------------------


def test_the_run_kept_is_the_validation_best_and_every_run_is_reported(tmp_path: Path) -> None:
    result = _train(_payload(), tmp_path, "r")
    [policy] = result.policies
    assert policy.configurations == len(policy.runs) == 4
    assert [(r.seed, r.reward_scale) for r in policy.runs] == [(7, 0.5), (7, 2.0), (8, 0.5), (8, 2.0)]
    scores = [r.validation_score for r in policy.runs]
    [chosen] = [r for r in policy.runs if r.chosen]
    assert policy.runs.index(chosen) == scores.index(max(scores))
    # the policy stored and judged is that run: its seed, its scale, its test figures
    assert (policy.seed, policy.reward_scale) == (chosen.seed, chosen.reward_scale)
    assert policy.evaluation is not None and policy.evaluation.metrics.sharpe == pytest.approx(chosen.test_sharpe)
    assert policy.train_seconds == pytest.approx(sum(r.train_seconds for r in policy.runs), abs=0.01)
    assert result.train_start < result.validation_start < result.train_end  # type: ignore[operator]


def test_the_registry_keeps_every_runs_figures_with_the_policy(tmp_path: Path) -> None:
    registry_dir = tmp_path / "r"
    result = _train(_payload(), tmp_path, "r", seeds=1)
    [policy] = result.policies
    registry = ModelRegistry(registry_dir / "registry.db", registry_dir / "artifacts")
    meta = registry.get(policy.model_id).metadata
    assert [RLSeedRun.model_validate(r) for r in meta["search"]["runs"]] == policy.runs
    assert meta["search"]["configurations"] == 2 and meta["search"]["validation_start"] == result.validation_start
    assert meta["reward_scale"] == policy.reward_scale and meta["periods_per_year"] == result.periods_per_year


def test_the_test_bars_never_take_part_in_the_choice(tmp_path: Path) -> None:
    # same bars up to train_end, another future after it: the same scores, the same run kept, the same weights;
    # only the test figures differ
    # (the regime model is fitted on the fitting bars alone: test_training.py checks its span)
    first = _train(_payload(), tmp_path, "a").policies[0]
    other = _train(_payload(shock_after=_TRAIN_END), tmp_path, "b").policies[0]
    assert [r.validation_score for r in first.runs] == [r.validation_score for r in other.runs]
    assert [r.chosen for r in first.runs] == [r.chosen for r in other.runs]
    assert first.sha256 == other.sha256
    assert [r.test_sharpe for r in first.runs] != [r.test_sharpe for r in other.runs]


@pytest.mark.parametrize(("steps", "fraction"), [(110, 0.1), (110, 0.5), (99 + 20, 0.2)])
def test_a_fitting_or_validation_span_too_short_is_refused_naming_the_field(steps: int, fraction: float) -> None:
    # 110 steps: 11 validation bars at 10%; 55 fitting steps at 50%; 119 at 20%: 24 validate, 95 fit
    with pytest.raises(InvalidInputError, match="validation_fraction") as err:
        market.validation_index(WARMUP + steps, fraction)
    assert err.value.details[0]["loc"] == ["validation_fraction"]


def test_the_validation_bars_end_the_training_span() -> None:
    fit_last = market.validation_index(WARMUP + 400, 0.25)
    assert fit_last == WARMUP + 300
