"""Rewards of the four RL agents, hand-checked."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantcrew.ml_server.services.rl.rewards import (
    REWARD_SCALE,
    REWARDS,
    DifferentialSharpe,
    DrawdownPenalised,
    LogReturn,
    MeanReversion,
    Reward,
    make_reward,
)


def test_drawdown_penalised_charges_only_bars_that_deepen_the_drawdown() -> None:
    reward = DrawdownPenalised(lam=2.0)
    returns = [0.10, -0.05, -0.05, 0.02, 0.20, -0.01]
    got = [reward.step(r, 1.0, t) for t, r in enumerate(returns)]
    # equity 1.1 (peak), 1.045 (dd 0.05), 0.99275 (dd 0.0975), 1.012605 (dd 0.0794..., recovering),
    # 1.215126 (new peak, dd 0), 1.20297474 (dd 0.01)
    assert got[0] == pytest.approx(100 * 0.10)
    assert got[1] == pytest.approx(100 * (-0.05 - 2 * 0.05))
    assert got[2] == pytest.approx(100 * (-0.05 - 2 * (0.0975 - 0.05)))
    assert got[3] == pytest.approx(100 * 0.02)  # drawdown shrinks: no penalty
    assert got[4] == pytest.approx(100 * 0.20)
    assert got[5] == pytest.approx(100 * (-0.01 - 2 * 0.01))


def test_drawdown_penalised_reset_forgets_the_peak() -> None:
    reward = DrawdownPenalised(lam=1.0)
    reward.step(0.5, 1.0, 0)
    reward.reset()
    assert reward.step(-0.1, 1.0, 0) == pytest.approx(100 * (-0.1 - 0.1))
    assert reward.step(0.0, 0.0, 1) == 0.0


def test_log_return_is_scaled_log1p_and_finite_at_ruin() -> None:
    reward = LogReturn()
    assert reward.step(0.01, 1.0, 0) == pytest.approx(REWARD_SCALE * math.log(1.01))
    assert reward.step(-0.02, -1.0, 1) == pytest.approx(REWARD_SCALE * math.log(0.98))
    assert math.isfinite(reward.step(-1.5, 1.0, 2))


def _direct_differential_sharpe(returns: np.ndarray, eta: float, bias_correction: bool) -> list[float]:
    """D_t from closed-form EMAs: A_{t-1} = eta * sum_{s<t} (1-eta)^(t-1-s) r_s."""
    out = []
    for t, r in enumerate(returns):
        w = eta * (1.0 - eta) ** np.arange(t - 1, -1, -1)  # weights of r_0..r_{t-1}
        a, b = float(np.dot(w, returns[:t])), float(np.dot(w, returns[:t] ** 2))
        if bias_correction and t > 0:
            norm = 1.0 - (1.0 - eta) ** t
            a, b = a / norm, b / norm
        var = b - a * a
        out.append((b * (r - a) - 0.5 * a * (r * r - b)) / var**1.5 if var > 1e-10 else 0.0)
    return out


@pytest.mark.parametrize("bias_correction", [True, False])
def test_differential_sharpe_matches_direct_formula(bias_correction: bool) -> None:
    returns = np.random.default_rng(3).normal(0.0005, 0.01, 300)
    reward = DifferentialSharpe(eta=0.05, bias_correction=bias_correction, clip=1e9)
    got = [reward.step(float(r), 1.0, t) for t, r in enumerate(returns)]
    expected = _direct_differential_sharpe(returns, 0.05, bias_correction)
    assert got[0] == 0.0  # no variance estimate before the first bar
    np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-9)
    # After warm-up D_t is O(1): about (r - mean) / std.
    assert np.median(np.abs(got[50:])) < 3.0


def test_differential_sharpe_is_zero_when_flat_and_bounded_on_a_jump() -> None:
    reward = DifferentialSharpe()
    assert [reward.step(0.0, 0.0, t) for t in range(20)] == [0.0] * 20
    assert reward.step(0.05, 1.0, 20) == 0.0  # variance estimate still 0
    assert reward.step(-0.5, 1.0, 21) == -reward.clip  # a crash far outside the estimate: clipped
    reward.reset()
    assert reward.step(0.3, 1.0, 0) == 0.0


def test_differential_sharpe_rewards_above_average_returns() -> None:
    reward = DifferentialSharpe(eta=0.1)
    for t, r in enumerate(np.random.default_rng(5).normal(0.0, 0.01, 100)):
        reward.step(float(r), 1.0, t)
    twin = copy.deepcopy(reward)
    assert reward.step(0.02, 1.0, 100) > 0.0 > twin.step(-0.02, 1.0, 100)


def test_mean_reversion_amplifies_fading_and_charges_following_trades() -> None:
    z = np.array([2.0, -3.0, 0.5, 2.0, -3.0, 2.0])
    reward = MeanReversion(z, threshold=1.0, k=0.5, penalty=0.1)
    assert reward.step(0.01, -1.0, 0) == pytest.approx(100 * 0.01 * (1 + 0.5 * 2.0))  # short above: fade
    assert reward.step(-0.01, 1.0, 1) == pytest.approx(100 * -0.01 * (1 + 0.5 * 3.0))  # long below: fade, loss too
    assert reward.step(0.01, 1.0, 2) == pytest.approx(100 * 0.01)  # inside the band
    assert reward.step(0.01, 1.0, 3) == pytest.approx(100 * 0.01 - 0.1)  # long above: following
    assert reward.step(0.01, -0.5, 4) == pytest.approx(100 * 0.01 - 0.05)  # half short below: following
    assert reward.step(0.0, 0.0, 5) == 0.0  # flat


def test_mean_reversion_prefers_the_fade_for_the_same_pnl() -> None:
    reward = MeanReversion(np.array([2.5]))
    fade = reward.step(0.01, -1.0, 0)
    follow = reward.step(0.01, 1.0, 0)
    assert fade > 100 * 0.01 > follow


def test_make_reward_builds_every_reward() -> None:
    z = np.zeros(10)
    kinds = {name: type(make_reward(name, price_z=z)) for name in REWARDS}
    assert kinds == {
        "conservative": DrawdownPenalised,
        "aggressive": LogReturn,
        "balanced": DifferentialSharpe,
        "contrarian": MeanReversion,
    }
    for name in REWARDS:
        assert isinstance(make_reward(name, price_z=z), Reward)
    assert make_reward("conservative", lam=5.0).lam == 5.0  # type: ignore[attr-defined]


def test_make_reward_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="conservative, aggressive, balanced, contrarian"):
        make_reward("greedy")


@pytest.mark.parametrize(
    ("name", "params", "needle"),
    [
        ("contrarian", {}, "price_z"),
        ("conservative", {"lam": -1.0}, "lam"),
        ("balanced", {"eta": 1.5}, "eta"),
        ("aggressive", {"gamma": 0.5}, "bad parameters"),
        ("contrarian", {"price_z": np.array([np.nan]), "k": 1.0}, "price_z"),
    ],
)
def test_make_reward_bad_parameters_raise_value_error(name: str, params: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        make_reward(name, **params)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(REWARDS), st.floats(0.01, 50.0),
       st.lists(st.tuples(st.floats(-0.1, 0.1), st.sampled_from([-1.0, 0.0, 1.0])), min_size=1, max_size=40))
def test_a_reward_scale_multiplies_every_reward_and_keeps_its_state(name: str, scale: float,
                                                                   steps: list[tuple[float, float]]) -> None:
    z = np.linspace(-2.0, 2.0, len(steps))
    plain, scaled = make_reward(name, price_z=z), make_reward(name, price_z=z, reward_scale=scale)
    for _episode in range(2):  # a reset forgets the state of both alike
        for t, (r, p) in enumerate(steps):
            assert scaled.step(r, p, t) == pytest.approx(scale * plain.step(r, p, t), rel=1e-12, abs=1e-12)
        plain.reset()
        scaled.reset()
    assert make_reward(name, price_z=z, reward_scale=1.0).__class__ is plain.__class__  # 1: the reward itself


@pytest.mark.parametrize("scale", [0.0, -1.0, math.nan, math.inf])
def test_a_reward_scale_must_be_finite_and_positive(scale: float) -> None:
    with pytest.raises(ValueError, match="reward_scale"):
        make_reward("aggressive", reward_scale=scale)
