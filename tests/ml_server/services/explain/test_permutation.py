"""Permutation importance of a model's output: known answers, grouped features, invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from quantcrew.ml_server.services.explain.permutation import permutation_importance

FloatArray = np.ndarray


def _linear(weights: list[float]):  # type: ignore[no-untyped-def]
    w = np.asarray(weights, dtype=np.float64)

    def predict(x: FloatArray) -> FloatArray:
        return np.asarray(x @ w, dtype=np.float64)

    return predict


def test_the_only_feature_the_model_reads_ranks_first_and_the_others_score_exactly_zero() -> None:
    x = np.random.default_rng(0).normal(size=(200, 4))
    out = permutation_importance(_linear([3.0, 0.0, 0.0, 0.0]), x, ["a", "b", "c", "d"], repeats=3, seed=1)
    assert out[0].name == "a" and out[0].importance > 1.0
    assert [f.importance for f in out[1:]] == [0.0, 0.0, 0.0]
    # shuffling x0 moves 3 * x0 by 3 |x0_perm - x0|: for standard normals E|X - Y| = 2 / sqrt(pi)
    assert out[0].importance == pytest.approx(3.0 * 2.0 / np.sqrt(np.pi), rel=0.15)


def test_a_larger_coefficient_ranks_higher() -> None:
    x = np.random.default_rng(1).normal(size=(300, 3))
    out = permutation_importance(_linear([0.5, 2.0, 1.0]), x, ["small", "large", "middle"], repeats=5, seed=0)
    assert [f.name for f in out] == ["large", "middle", "small"]
    assert all(f.std >= 0.0 for f in out)


def test_a_group_of_columns_moves_together_and_is_one_feature() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(150, 6))  # two features, each read at three window positions
    groups = [np.array([0, 2, 4]), np.array([1, 3, 5])]

    def predict(rows: FloatArray) -> FloatArray:
        return np.asarray(rows[:, [0, 2, 4]].sum(axis=1), dtype=np.float64)

    out = permutation_importance(predict, x, ["read", "ignored"], groups=groups, repeats=2, seed=0)
    assert out[0].name == "read" and out[0].importance > 0.5
    assert out[1].importance == 0.0


def test_bad_arguments_are_refused() -> None:
    x = np.zeros((5, 2))
    with pytest.raises(ValueError, match="2 rows"):
        permutation_importance(_linear([1.0, 1.0]), x[:1], ["a", "b"])
    with pytest.raises(ValueError, match="names"):
        permutation_importance(_linear([1.0, 1.0]), x, ["a"])
    with pytest.raises(ValueError, match="repeats"):
        permutation_importance(_linear([1.0, 1.0]), x, ["a", "b"], repeats=0)
    with pytest.raises(ValueError, match="outputs"):
        permutation_importance(lambda rows: rows[:2, 0], x, ["a", "b"])
    with pytest.raises(ValueError, match="not finite"):
        permutation_importance(lambda rows: np.full(len(rows), np.nan), x, ["a", "b"])


_rows = arrays(np.float64, st.tuples(st.integers(3, 40), st.just(3)),
               elements=st.floats(-100, 100, allow_nan=False, width=32))


@settings(max_examples=60, deadline=None)
@given(x=_rows, constant=st.floats(-10, 10, allow_nan=False), seed=st.integers(0, 2**32 - 1))
def test_permuting_a_constant_feature_gives_zero_importance(x: FloatArray, constant: float, seed: int) -> None:
    x = x.copy()
    x[:, 1] = constant

    def predict(rows: FloatArray) -> FloatArray:  # reads every column, nonlinearly
        return np.asarray(np.tanh(rows[:, 0] * rows[:, 1] / 100.0) + rows[:, 2] ** 2 / 1e4 + rows[:, 1],
                          dtype=np.float64)

    out = {f.name: f for f in permutation_importance(predict, x, ["a", "b", "c"], repeats=3, seed=seed)}
    assert out["b"].importance == 0.0 and out["b"].std == 0.0


@settings(max_examples=40, deadline=None)
@given(x=_rows, seed=st.integers(0, 2**32 - 1), repeats=st.integers(1, 4))
def test_the_same_seed_reproduces_the_answer_and_importances_are_non_negative(x: FloatArray, seed: int,
                                                                              repeats: int) -> None:
    predict = _linear([1.0, -2.0, 0.5])
    first = permutation_importance(predict, x, ["a", "b", "c"], repeats=repeats, seed=seed)
    again = permutation_importance(predict, x, ["a", "b", "c"], repeats=repeats, seed=seed)
    assert first == again
    assert all(f.importance >= 0.0 and f.std >= 0.0 for f in first)
    assert [f.importance for f in first] == sorted((f.importance for f in first), reverse=True)


def test_splitting_the_repeats_over_several_calls_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from quantcrew.ml_server.services.explain import permutation

    x = np.random.default_rng(4).normal(size=(50, 3))
    calls: list[int] = []

    def predict(rows: FloatArray) -> FloatArray:
        calls.append(len(rows))
        return np.asarray(np.sin(rows[:, 0]) + rows[:, 1] * rows[:, 2], dtype=np.float64)

    whole = permutation_importance(predict, x, ["a", "b", "c"], repeats=4, seed=9)
    assert calls == [50, 200, 200, 200]
    calls.clear()
    monkeypatch.setattr(permutation, "_MAX_BLOCK", 300)  # two rows of 150 values: 2 repeats per call
    split = permutation_importance(predict, x, ["a", "b", "c"], repeats=4, seed=9)
    assert calls == [50] + [100] * 6
    assert split == whole
