"""Summaries of MC-dropout draws: mean, population std and equal-tailed intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from quantcrew.ml_server.services.execution.summary import summarize


def test_summarize_known_samples() -> None:
    samples = np.array([[1.0, 10.0], [2.0, 10.0], [3.0, 10.0], [4.0, 10.0], [5.0, 10.0]])
    s = summarize(samples, level=0.5)
    np.testing.assert_allclose(s.mean, [3.0, 10.0])
    np.testing.assert_allclose(s.std, [math.sqrt(2.0), 0.0])
    np.testing.assert_allclose(s.lower, [2.0, 10.0])
    np.testing.assert_allclose(s.upper, [4.0, 10.0])
    wide = summarize(np.arange(101.0)[:, None], level=0.9)
    assert wide.lower[0] == pytest.approx(5.0) and wide.upper[0] == pytest.approx(95.0)
    for level in (0.0, 1.0, 1.2):
        with pytest.raises(ValueError, match="level"):
            summarize(samples, level)
