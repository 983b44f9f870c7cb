"""The surrogate tree: fidelity on the last rows, readable rules, refusals."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantcrew.ml_server.services.explain.surrogate import MIN_HOLDOUT, MIN_TRAIN, fit_surrogate


def test_a_model_a_depth_1_tree_explains_is_mimicked_with_fidelity_near_1() -> None:
    x = np.random.default_rng(0).uniform(-1, 1, size=(400, 3))
    y = np.where(x[:, 0] > 0.3, 1.5, -2.0)
    tree = fit_surrogate(x, y, ["a", "b", "c"], max_depth=3)
    assert tree.kind == "regression" and tree.fidelity_metric == "r2"
    assert tree.fidelity > 0.95 and tree.baseline == 0.0
    assert tree.n_train + tree.n_holdout == 400 and tree.n_holdout == 100
    assert tree.depth == 1  # the tree stops where the output is pure
    assert sorted(r.conditions[0].split(" ")[:2] == ["a", "<="] for r in tree.rules) == [False, True]
    assert sorted(r.output for r in tree.rules if r.output is not None) == pytest.approx([-2.0, 1.5])
    assert "a <= 0.3" in tree.text or "a <= 0.29" in tree.text or "a <= 0.30" in tree.text


def test_a_class_output_is_judged_by_agreement_beside_the_majority_share() -> None:
    x = np.random.default_rng(1).normal(size=(300, 2))
    codes = (x[:, 1] > 0.0).astype(int) + (x[:, 1] > 1.0).astype(int)  # 0, 1, 2
    tree = fit_surrogate(x, codes, ["p", "q"], labels=["down", "flat", "up"], max_depth=2)
    assert tree.kind == "classification" and tree.fidelity_metric == "agreement"
    assert tree.fidelity > 0.95 and tree.baseline < tree.fidelity
    assert {r.label for r in tree.rules} == {"down", "flat", "up"}
    assert all(r.output is None and r.conditions[0].startswith("q ") for r in tree.rules)


def test_a_model_with_a_constant_output_has_perfect_fidelity() -> None:
    x = np.random.default_rng(2).normal(size=(40, 2))
    tree = fit_surrogate(x, np.full(40, 0.25), ["a", "b"])
    assert tree.fidelity == 1.0 and tree.rules[0].conditions == [] and tree.rules[0].output == 0.25


def test_the_holdout_is_the_last_rows_so_a_model_that_changes_late_is_caught() -> None:
    x = np.random.default_rng(3).normal(size=(200, 1))
    y = x[:, 0].copy()
    y[150:] = -y[150:]  # the model's behaviour flips on the held-out rows
    assert fit_surrogate(x, y, ["a"], max_depth=4).fidelity < 0.0


def test_too_few_rows_a_bad_depth_or_names_are_refused() -> None:
    x = np.zeros((MIN_TRAIN + MIN_HOLDOUT - 1, 2))
    with pytest.raises(ValueError, match="at least"):
        fit_surrogate(x, np.zeros(len(x)), ["a", "b"])
    with pytest.raises(ValueError, match="1 to 4"):
        fit_surrogate(np.zeros((40, 2)), np.zeros(40), ["a", "b"], max_depth=5)
    with pytest.raises(ValueError, match="names"):
        fit_surrogate(np.zeros((40, 2)), np.zeros(40), ["a"])


@settings(max_examples=40, deadline=None)
@given(n=st.integers(MIN_TRAIN + MIN_HOLDOUT, 120), depth=st.integers(1, 4), seed=st.integers(0, 1000),
       fraction=st.floats(0.1, 0.5))
def test_rules_cover_every_training_row_once_and_are_no_deeper_than_the_tree(n: int, depth: int, seed: int,
                                                                           fraction: float) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = np.sin(x[:, 0]) + x[:, 1] * x[:, 2]
    tree = fit_surrogate(x, y, ["a", "b", "c"], max_depth=depth, holdout_fraction=fraction, seed=seed)
    assert sum(r.samples for r in tree.rules) == tree.n_train
    assert tree.n_holdout >= MIN_HOLDOUT and tree.n_train + tree.n_holdout == n
    assert all(len(r.conditions) <= tree.depth <= depth for r in tree.rules)
    assert tree.fidelity <= 1.0
