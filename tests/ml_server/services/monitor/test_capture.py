"""The feature space shared by logged predictions and drift references."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from quantcrew.ml_server.services.monitor.capture import feature_names, feature_row, feature_rows, subject_of
from quantcrew.ml_server.services.monitor.predictions import MAX_FEATURES, feature_json


def test_a_row_keeps_the_first_64_finite_columns_by_name() -> None:
    names = [f"f{i}" for i in range(80)]
    row = np.arange(80, dtype=np.float64)
    row[3] = np.nan
    out = feature_row(names, row)
    assert len(out) == MAX_FEATURES - 1 and "f3" not in out and out["f63"] == 63.0 and "f64" not in out
    assert feature_rows(names[:2], [[1.0, 2.0], [3.0, np.inf]]) == [{"f0": 1.0, "f1": 2.0}, {"f0": 3.0}]


def test_the_writer_stores_a_queued_row_as_the_same_mapping() -> None:
    import orjson

    names = ("a", "b", "c")
    for row in (np.array([1.0, -2.5, 3.0]), np.array([1.0, np.nan, 3.0])):
        assert orjson.loads(feature_json((names, row))) == feature_row(names, row)


def test_feature_names_per_family() -> None:
    assert feature_names("regime", SimpleNamespace(features_=("range",))) == ("range",)
    assert feature_names("ensemble", SimpleNamespace(feature_names=("ret_1", "vol_5"))) == ("ret_1", "vol_5")
    assert feature_names("execution", SimpleNamespace(metadata={"inputs": ["signal", "ret_1"]})) == ("signal", "ret_1")
    assert feature_names("cluster", SimpleNamespace(columns_=["a"])) == ("a",)
    with pytest.raises(ValueError, match="risk"):
        feature_names("risk", object())


def test_the_subject_is_the_symbol_else_the_request_key_else_the_models_symbol() -> None:
    info = SimpleNamespace(metadata={"symbol": "SPY"})
    assert subject_of(SimpleNamespace(symbol="QQQ", request_key="k"), info) == "QQQ"
    assert subject_of(SimpleNamespace(symbol=None, request_key="k"), info) == "k"
    assert subject_of(SimpleNamespace(), info) == "SPY" and subject_of(SimpleNamespace()) is None
