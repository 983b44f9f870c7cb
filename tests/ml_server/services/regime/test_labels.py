"""State-to-label rule of the regime family (volatility first, drift when it is strong, never bull when falling)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantcrew.ml_server.services.regime.labels import StateStats, label_states


@pytest.mark.parametrize(
    ("mean", "vol", "expected"),
    [
        # the generator's four regimes
        ([0.0, 0.0008, -0.0015, 0.0], [0.005, 0.008, 0.016, 0.03], ["sideways", "bull", "bear", "volatile"]),
        # a bear state whose sample mean came out positive is still bear (volatility first)
        ([0.0, 0.0008, 0.0010, -0.002], [0.005, 0.008, 0.016, 0.03], ["sideways", "bull", "bear", "volatile"]),
        # calm bull whose sample drift came out flat but positive: volatility still tells it from sideways
        ([0.0002, 0.0001, -0.002, 0.002], [0.005, 0.008, 0.014, 0.028], ["sideways", "bull", "bear", "volatile"]),
        # ... but a state whose bars fell on average is never bull: sideways (the 2002 NASDAQ fit's case)
        ([0.0002, -0.0001, -0.002, 0.002], [0.005, 0.008, 0.014, 0.028], ["sideways", "sideways", "bear", "volatile"]),
        ([0.0019, -0.0005, -0.0044], [0.0159, 0.0218, 0.0360], ["sideways", "sideways", "bear"]),
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


_state_stats = st.integers(min_value=1, max_value=6).flatmap(
    lambda k: st.tuples(
        st.lists(st.floats(-0.01, 0.01, allow_nan=False), min_size=k, max_size=k),
        st.lists(st.floats(1e-4, 0.08, allow_nan=False), min_size=k, max_size=k, unique=True),  # ties order states
        st.lists(st.floats(1.0, 5000.0, allow_nan=False), min_size=k, max_size=k),
    )
)


@settings(max_examples=150, deadline=None)
@given(_state_stats)
def test_a_state_whose_mean_is_not_positive_is_never_bull(stats_lists) -> None:
    mean, vol, weight = (np.array(x) for x in stats_lists)
    labels = label_states(StateStats(mean=mean, vol=vol, weight=weight))
    assert len(labels) == len(mean)
    for label, m in zip(labels, mean, strict=True):
        assert label != "bull" or m > 0


@settings(max_examples=80, deadline=None)
@given(_state_stats, st.randoms(use_true_random=False))
def test_state_names_do_not_depend_on_state_order(stats_lists, rnd) -> None:
    mean, vol, weight = (np.array(x) for x in stats_lists)
    order = list(range(len(mean)))
    rnd.shuffle(order)
    labels = label_states(StateStats(mean=mean, vol=vol, weight=weight))
    shuffled = label_states(StateStats(mean=mean[order], vol=vol[order], weight=weight[order]))
    assert shuffled == [labels[i] for i in order]
