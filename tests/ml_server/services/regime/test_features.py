"""Regime features: causal columns, built once per set of bars whatever the fit asks for."""

from __future__ import annotations

import numpy as np
import pytest

from quantcrew.data.loaders import to_payload_dict
from quantcrew.data.synthetic import generate_regime_market
from quantcrew.ml_server.schemas.common import OHLCVPayload
from quantcrew.ml_server.services.bars import Bars, bars_from_payload
from quantcrew.ml_server.services.regime.features import FeatureSource, build_features, usable_features

ALL = ("log_return", "realized_vol", "range")


@pytest.fixture(scope="module")
def bars() -> Bars:
    return bars_from_payload(OHLCVPayload.model_validate(to_payload_dict(generate_regime_market(300, seed=3).bars)))


@pytest.mark.parametrize("transform", ["log", "sqrt"])
def test_source_matrix_equals_build_features(bars: Bars, transform: str) -> None:
    source = FeatureSource(bars, ALL, vol_window=5)
    got, floors = source.matrix(ALL, vol_transform=transform)
    want, want_floors = build_features(bars, ALL, vol_window=5, vol_transform=transform)
    np.testing.assert_array_equal(got.values, want.values)
    np.testing.assert_array_equal(got.log_jacobian, want.log_jacobian)
    assert floors == want_floors


def test_source_builds_each_transformed_column_once(bars: Bars) -> None:
    source = FeatureSource(bars, ALL, vol_window=5)
    first, _ = source.matrix(("range",), vol_transform="log")
    again, _ = source.matrix(ALL, vol_transform="log")
    np.testing.assert_array_equal(first.values[:, 0], again.values[:, 2])
    assert len(source._columns) == 2  # range and realized_vol under log: each computed once


def test_source_uses_given_floors_at_predict(bars: Bars) -> None:
    source = FeatureSource(bars, ("range",), vol_window=5)
    _, floors = source.matrix(("range",), vol_transform="log", floors={"range": 5.0})
    assert floors == {"range": 5.0}


def test_usable_features_drops_a_flat_range_and_stands_in_log_return(bars: Bars) -> None:
    flat = Bars(bars.timestamps, bars.times, bars.close, bars.close, bars.close, bars.close, None, bars.data_hash)
    used, notes = usable_features(FeatureSource(flat, ("range",), vol_window=5), ("range",))
    assert used == ("log_return",)
    assert any("log_return" in n for n in notes)
