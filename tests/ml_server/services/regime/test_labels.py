"""State-to-label rule of the regime family (volatility first, drift when it is strong)."""

from __future__ import annotations

import numpy as np
import pytest

from quantcrew.ml_server.services.regime.labels import StateStats, label_states


@pytest.mark.parametrize(
    ("mean", "vol", "expected"),
    [
        # the generator's four regimes
        ([0.0, 0.0008, -0.0015, 0.0], [0.005, 0.008, 0.016, 0.03], ["sideways", "bull", "bear", "volatile"]),
        # a bear state whose sample mean came out positive is still bear (volatility first)
        ([0.0, 0.0008, 0.0010, -0.002], [0.005, 0.008, 0.016, 0.03], ["sideways", "bull", "bear", "volatile"]),
        # calm bull whose sample drift came out flat: volatility still tells it from sideways
        ([0.0002, -0.0001, -0.002, 0.002], [0.005, 0.008, 0.014, 0.028], ["sideways", "bull", "bear", "volatile"]),
        # an equity index: the calmest state is the strongest rally, the next one is flat
        ([0.0015, 0.0003, 0.0, -0.004], [0.007, 0.011, 0.018, 0.034], ["bull", "sideways", "bear", "volatile"]),
        # two calm rallies
        ([0.001, 0.0008, -0.0002, -0.002], [0.004, 0.007, 0.012, 0.024], ["bull", "bull", "bear", "volatile"]),
        # three states (the crisis regime absent): the most volatile one is an ordinary bear market
        ([0.0004, 0.0004, 0.001], [0.0058, 0.0091, 0.014], ["sideways", "bull", "bear"]),
        # two states: a calm strong rally, and turbulence
        ([0.0012, -0.001], [0.007, 0.025], ["bull", "volatile"]),
        # two states: a lone calm state with a weak drift (t = 1.3 < 2) is sideways
        ([0.0004, -0.001], [0.007, 0.025], ["sideways", "volatile"]),
        # no volatility structure: drift alone decides
        ([0.002, -0.002, 0.0], [0.010, 0.011, 0.0105], ["bull", "bear", "sideways"]),
    ],
)
def test_label_states_follows_volatility_first_rule(mean, vol, expected) -> None:
    stats = StateStats(mean=np.array(mean), vol=np.array(vol), weight=np.full(len(mean), 500.0))
    assert label_states(stats) == expected
