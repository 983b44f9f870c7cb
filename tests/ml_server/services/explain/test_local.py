"""Local explanations by feature perturbation: exact answers on linear models, ranking, constant features."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from quantcrew.ml_server.services.explain.local import local_effects, robust_std

FloatArray = np.ndarray


def _linear(weights: list[float]):  # type: ignore[no-untyped-def]
    w = np.asarray(weights, dtype=np.float64)
    return lambda rows: np.asarray(rows @ w, dtype=np.float64)


def test_robust_std_is_the_scaled_mad_and_falls_back_to_the_std_when_the_mad_is_zero() -> None:
    values = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0], [100.0, 5.0]])
    spread = robust_std(values)
    assert spread[0] == pytest.approx(1.4826 * 1.0)  # median 3, |deviations| 2 1 0 1 97: MAD 1
    assert spread[1] == pytest.approx(np.std(values[:, 1]))  # four zeros: MAD 0


def test_a_linear_model_gets_its_exact_slopes_and_contributions_ranked_by_size() -> None:
    reference = np.random.default_rng(0).normal(size=(101, 3))
    row = np.array([2.0, -1.0, 0.5])
    predict = _linear([1.0, 3.0, 0.0])
    base, effects = local_effects(predict, row, reference, ["a", "b", "c"], k=2.0, mode="median")
    assert base == pytest.approx(-1.0)
    by = {e.name: e for e in effects}
    spread, median = robust_std(reference), np.median(reference, axis=0)
    assert by["a"].delta_plus == pytest.approx(2.0 * spread[0])
    assert by["a"].delta_minus == pytest.approx(-2.0 * spread[0])
    assert by["b"].delta_plus == pytest.approx(6.0 * spread[1])
    # -delta_median: what the row's value added against the median
    assert by["a"].effect == pytest.approx(1.0 * (2.0 - median[0]))
    assert by["b"].effect == pytest.approx(3.0 * (-1.0 - median[1]))
    assert by["c"].effect == 0.0 and by["c"].delta_plus == 0.0
    assert [e.name for e in effects] == ["b", "a", "c"]  # |-3 - 3 median_b| > |2 - median_a| > 0
    assert [e.value for e in effects] == [-1.0, 2.0, 0.5]


def test_shift_mode_ranks_by_the_local_slope() -> None:
    reference = np.random.default_rng(1).normal(size=(80, 2))
    _, effects = local_effects(_linear([0.1, -5.0]), np.zeros(2), reference, ["a", "b"], mode="shift")
    assert effects[0].name == "b" and effects[0].effect == pytest.approx(-5.0 * robust_std(reference)[1])


def test_a_feature_constant_over_the_reference_is_not_moved() -> None:
    reference = np.random.default_rng(2).normal(size=(50, 2))
    reference[:, 0] = 7.0
    _, effects = local_effects(_linear([10.0, 1.0]), np.array([9.0, 0.0]), reference, ["const", "x"])
    const = next(e for e in effects if e.name == "const")
    assert (const.delta_plus, const.delta_minus, const.delta_median, const.effect) == (0.0, 0.0, 0.0, 0.0)


def test_a_grouped_feature_moves_in_every_column_and_reports_its_chosen_column() -> None:
    reference = np.random.default_rng(3).normal(size=(60, 4))
    groups = [np.array([0, 2]), np.array([1, 3])]
    row = np.array([1.0, 2.0, 3.0, 4.0])
    _, effects = local_effects(_linear([1.0, 0.0, 1.0, 0.0]), row, reference, ["f", "g"], groups=groups,
                               mode="shift")
    spread = robust_std(reference)
    f = next(e for e in effects if e.name == "f")
    assert f.delta_plus == pytest.approx(spread[0] + spread[2]) and f.value == 3.0
    assert next(e for e in effects if e.name == "g").effect == 0.0


def test_no_reference_row_is_refused() -> None:
    with pytest.raises(ValueError, match="reference"):
        local_effects(_linear([1.0]), np.zeros(1), np.zeros((0, 1)), ["a"])


_reference = arrays(np.float64, st.tuples(st.integers(2, 30), st.just(3)),
                    elements=st.floats(-50, 50, allow_nan=False, width=32))


@settings(max_examples=60, deadline=None)
@given(reference=_reference, row=arrays(np.float64, 3, elements=st.floats(-50, 50, allow_nan=False, width=32)),
       weights=st.lists(st.floats(-3, 3, allow_nan=False), min_size=3, max_size=3))
def test_for_a_linear_model_the_median_effects_add_up_to_the_gap_from_the_median_row(
        reference: FloatArray, row: FloatArray, weights: list[float]) -> None:
    predict = _linear(weights)
    base, effects = local_effects(predict, row, reference, ["a", "b", "c"])
    spread = robust_std(reference)
    anchor = np.where(spread > 0.0, np.median(reference, axis=0), row)
    assert sum(e.effect for e in effects) == pytest.approx(base - float(predict(anchor[None, :])[0]), abs=1e-6)
    assert [abs(e.effect) for e in effects] == sorted((abs(e.effect) for e in effects), reverse=True)
