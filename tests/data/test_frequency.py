"""guess_frequency: a name for the typical spacing of timestamps."""

from __future__ import annotations

import numpy as np
import pytest

from quantcrew.data.frequency import guess_frequency


@pytest.mark.parametrize(
    ("step", "name"),
    [("1h", "intraday"), ("1D", "daily"), ("7D", "weekly"), ("30D", "monthly"), ("91D", "quarterly"),
     ("60D", "irregular")],
)
def test_guess_frequency_names_the_median_step(step: str, name: str) -> None:
    ts = np.datetime64("2020-01-01T00", "h") + np.arange(20) * np.array(int(step[:-1]), dtype=f"m8[{step[-1]}]")
    assert guess_frequency(ts) == name


def test_guess_frequency_needs_two_timestamps() -> None:
    assert guess_frequency(np.array([], dtype="datetime64[ns]")) == "unknown"
    assert guess_frequency(np.array(["2020-01-01"], dtype="datetime64[D]")) == "unknown"
