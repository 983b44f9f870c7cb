"""Anomaly features: each from the bar itself and earlier bars only, finite, capped."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from quantcrew.ml_server.services.anomaly.features import Z_CAP, build_features
from tests.ml_server.services.anomaly.test_service import _bars, calm_market


def test_features_match_hand_computation() -> None:
    payload = calm_market(40)
    bars = _bars(payload)
    names = ("log_return", "abs_return", "range", "gap", "volume_z")
    table = build_features(bars, names, window=5)
    assert table.n_warmup == 5 and table.values.shape == (35, 5)
    t = 12  # bar 12 is row 7 of the table
    row = table.values[t - 5]
    c, o, h, lo, v = (np.asarray(payload[k]) for k in ("close", "open", "high", "low", "volume"))
    assert row[0] == pytest.approx(np.log(c[t] / c[t - 1]))
    assert row[1] == pytest.approx(abs(np.log(c[t] / c[t - 1])))
    assert row[2] == pytest.approx(np.log(h[t] / lo[t]))
    assert row[3] == pytest.approx(np.log(o[t] / c[t - 1]))
    past = v[t - 5:t]
    assert row[4] == pytest.approx((v[t] - past.mean()) / past.std(ddof=1))


def test_volume_z_has_no_look_ahead() -> None:
    payload = calm_market(120)
    base = build_features(_bars(payload), ("volume_z", "log_return", "gap"), window=20).values
    changed = dict(payload)
    changed["volume"] = list(payload["volume"])
    changed["volume"][90] *= 50.0
    changed["close"] = list(payload["close"])
    changed["high"] = list(payload["high"])
    changed["close"][90] = changed["high"][90] = payload["high"][90] * 1.2
    after = build_features(_bars(changed), ("volume_z", "log_return", "gap"), window=20).values
    row = 90 - 20
    np.testing.assert_array_equal(after[:row], base[:row])  # every earlier bar is untouched
    assert after[row, 0] > base[row, 0] + 10  # the changed bar itself moved


def test_constant_volume_window_gives_capped_z_without_nan() -> None:
    payload = calm_market(80)
    payload["volume"] = [1000.0] * 80
    payload["volume"][60] = 5000.0
    values = build_features(_bars(payload), ("volume_z",), window=10).values[:, 0]
    assert np.isfinite(values).all()
    assert values[60 - 10] == Z_CAP
    assert values[0] == 0.0


def test_huge_volumes_do_not_overflow_the_z_score() -> None:
    payload = calm_market(80)
    bars = _bars(payload)
    reference = build_features(bars, ("volume_z",), window=10).values[:, 0]
    # beyond what the wire accepts (1e15), so straight into the features: they stay robust on their own
    assert bars.volume is not None
    huge = build_features(replace(bars, volume=bars.volume * 1e300), ("volume_z",), window=10).values[:, 0]
    np.testing.assert_allclose(huge, reference, rtol=1e-9)
