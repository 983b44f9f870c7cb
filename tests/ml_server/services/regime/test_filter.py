"""Filtering arithmetic of the regime HMM: the compiled forward pass against the reference loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from quantcrew.ml_server.services.regime.filter import forward_filter, forward_filter_numpy


def test_forward_filter_rows_are_normalised_and_zero_transitions_are_safe() -> None:
    log_lik = np.log(np.array([[0.9, 0.1], [1e-300, 1.0], [0.5, 0.5]]))
    probs, total = forward_filter(log_lik, np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([1.0, 0.0]))
    assert np.all(np.isfinite(probs)) and math.isfinite(total)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)


def test_compiled_forward_filter_matches_reference_loop() -> None:
    rng = np.random.default_rng(7)
    k = 4
    transmat = 0.9 * np.eye(k) + 0.1 * rng.dirichlet(np.ones(k), size=k)
    log_lik = rng.normal(scale=3.0, size=(800, k))
    prior = np.array([0.5, 0.5, 0.0, 0.0])
    fast, fast_total = forward_filter(log_lik, transmat, prior)
    slow, slow_total = forward_filter_numpy(log_lik, transmat, prior)
    np.testing.assert_allclose(fast, slow, atol=1e-10)
    assert fast_total == pytest.approx(slow_total, rel=1e-10)
