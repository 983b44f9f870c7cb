"""No finite input is a server error: extreme numbers in the payloads of the numeric routes answer 200 or a 4xx
naming the field, never a 5xx (a property over Hypothesis-drawn finite floats, boundary values included)."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantcrew.config.settings import load_settings
from quantcrew.data import generate_regime_market, to_payload_dict
from quantcrew.ml_server.app import create_app
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.services import adapter
from quantcrew.ml_server.services.ensemble.features import FEATURE_NAMES
from quantcrew.ml_server.services.ensemble.model import EnsembleSpec, pack_state
from quantcrew.ml_server.services.ensemble.nets import NetConfig, build_net
from quantcrew.ml_server.services.execution.fit import ExecTrainConfig
from quantcrew.ml_server.services.execution.inputs import EXECUTION_INPUTS
from quantcrew.ml_server.services.execution.model import ExecutionModel
from quantcrew.ml_server.services.execution.net import ExecutionConfig

_EDGES = [0.0, -0.0, 5e-324, -5e-324, 1e-300, 1e-12, 2e-12, 1e12, 1e15, -1e15, 1e154, -1e154, 1e300, -1e300, -1.0,
          -0.999999, 1e3, 1.7976931348623157e308, -1.7976931348623157e308]
"""Boundaries of the wire contract's bounds and the floats that overflow a square or an exponential."""

FINITE = st.one_of(st.sampled_from(_EDGES), st.floats(allow_nan=False, allow_infinity=False),
                   st.floats(min_value=-1e3, max_value=1e3))
PROPERTY = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_PRICES = ("open", "high", "low", "close")


class Served:
    """One app with the models the routes need: a fitted KMeans, an (untrained) ensemble, an execution net."""

    def __init__(self, client: TestClient, bars: dict[str, Any], cluster_id: str, ensemble_id: str,
                 execution_id: str) -> None:
        self.client, self.bars = client, bars
        self.cluster_id, self.ensemble_id, self.execution_id = cluster_id, ensemble_id, execution_id

    def answers(self, path: str, body: dict[str, Any]) -> None:
        resp = self.client.post(path, json=body)
        assert resp.status_code < 500, f"{path}: {resp.status_code} {resp.text[:300]}"
        if resp.status_code >= 400:
            assert resp.json()["error"]["message"]


def _ensemble(registry: ModelRegistry) -> str:
    """An untrained one-architecture ensemble stored as training stores one (its answers are not the point)."""
    f, window = len(FEATURE_NAMES), 8
    configs = {"lstm": NetConfig(arch="lstm", members=2, n_features=f, window=window, hidden=8, heads=2)}
    spec = EnsembleSpec(configs=configs, temperatures={"lstm": 1.0}, mc_temperatures={"lstm": 1.0},
                        weights={"lstm": 1.0}, scaler_mean=(0.0,) * f, scaler_std=(1.0,) * f,
                        feature_names=FEATURE_NAMES, window=window, horizon=5, up_threshold=0.005,
                        down_threshold=0.005, symbol="EXT")
    info = registry.save(family="ensemble", name="ensemble-EXT", method="lstm",
                         obj=pack_state({"lstm": build_net(configs["lstm"], seed=0)}), fmt="torch",
                         metadata=spec.to_metadata())
    return info.model_id


def _execution(registry: ModelRegistry) -> str:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, len(EXECUTION_INPUTS)))
    x[:, 0] = rng.choice([-1.0, 1.0], 200)
    net = ExecutionModel(ExecutionConfig(hidden=(8,)), train=ExecTrainConfig(epochs=2)).fit(
        x, rng.uniform(0, 1, 200), (x[:, 5] > 0).astype(np.int64))
    return adapter.store(registry, net, name="execution-EXT", metadata={"symbol": "EXT"}).model_id


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    settings_ = load_settings(home=tmp_path_factory.mktemp("extreme-home"), server={"preload": False})
    bars = to_payload_dict(generate_regime_market(120, seed=3).bars)
    with TestClient(create_app(settings_), raise_server_exceptions=False) as client:
        registry: ModelRegistry = client.app.state.registry  # type: ignore[attr-defined]
        fitted = client.post("/v1/cluster/fit", json={"data": _table(60, 3), "n_clusters": 2})
        assert fitted.status_code == 200, fitted.text
        yield Served(client, bars, fitted.json()["model_id"], _ensemble(registry), _execution(registry))


def _table(rows: int, cols: int, scale: float = 0.01) -> dict[str, Any]:
    values = np.random.default_rng(1).normal(0.0, scale, (rows, cols))
    return {"columns": [f"A{j}" for j in range(cols)], "values": values.tolist()}


def _finite(x: float) -> float:
    """``x``, or the largest float of its sign where scaling overflowed (the wire carries no infinity)."""
    return x if math.isfinite(x) else math.copysign(sys.float_info.max, x)


def _bars_with(bars: dict[str, Any], column: str, how: str, value: float) -> dict[str, Any]:
    """``bars`` with ``value`` put in: at the last row, in every row, or as the level prices are scaled to."""
    out = {k: list(v) for k, v in bars.items()}
    n = len(out["close"])
    if how == "scale":
        first = bars["close"][0]
        for c in _PRICES:
            out[c] = [_finite(v / first * value) for v in bars[c]]
    elif how == "all":
        for c in (_PRICES if column != "volume" else ("volume",)):
            out[c] = [value] * n
    else:
        out[column][-1] = value
        if column in ("open", "close"):  # a consistent bar, so that the bound is what is tested
            out["high"][-1] = max(out["high"][-1], value)
            out["low"][-1] = min(out["low"][-1], value)
    return out


def _table_with(table: dict[str, Any], how: str, row: int, col: int, value: float) -> dict[str, Any]:
    values = [list(r) for r in table["values"]]
    row, col = row % len(values), col % len(values[0])
    if how == "scale":
        values = [[_finite(v * value) for v in r] for r in values]
    elif how == "column":
        for r in values:
            r[col] = value
    else:
        values[row][col] = value
    return {**table, "values": values}


BAR_EDITS = st.tuples(st.sampled_from((*_PRICES, "volume")), st.sampled_from(("last", "all", "scale")), FINITE)
TABLE_EDITS = st.tuples(st.sampled_from(("cell", "column", "scale")), st.integers(0, 1000), st.integers(0, 100),
                        FINITE)


@PROPERTY
@given(edit=BAR_EDITS)
def test_regime_label_never_answers_5xx(served: Served, edit: tuple[str, str, float]) -> None:
    served.answers("/v1/regime/label", {"data": _bars_with(served.bars, *edit), "n_states": 2, "n_restarts": 1})


@PROPERTY
@given(edit=TABLE_EDITS)
def test_cluster_predict_never_answers_5xx(served: Served, edit: tuple[str, int, int, float]) -> None:
    served.answers("/v1/cluster/predict", {"data": _table_with(_table(20, 3), *edit), "model_id": served.cluster_id})


@PROPERTY
@given(edit=TABLE_EDITS)
def test_cluster_assets_mode_never_answers_5xx(served: Served, edit: tuple[str, int, int, float]) -> None:
    served.answers("/v1/cluster/analyze", {"data": _table_with(_table(40, 6), *edit), "mode": "assets",
                                           "n_clusters": 2})


@PROPERTY
@given(edit=BAR_EDITS, features=TABLE_EDITS)
def test_ensemble_predict_never_answers_5xx(served: Served, edit: tuple[str, str, float],
                                            features: tuple[str, int, int, float]) -> None:
    served.answers("/v1/ensemble/predict", {"data": _bars_with(served.bars, *edit), "model_id": served.ensemble_id})
    table = _table_with({"columns": list(FEATURE_NAMES), "values": _table(10, len(FEATURE_NAMES), 1.0)["values"]},
                        *features)
    served.answers("/v1/ensemble/predict", {"features": table, "model_id": served.ensemble_id})


_MARKET = {"ret_1": 0.01, "ret_5": 0.02, "vol_10": 0.01, "vol_ratio": 1.0, "range": 0.02, "volume_z": 0.0}


@PROPERTY
@given(edit=BAR_EDITS, field=st.sampled_from(sorted(_MARKET)), value=FINITE)
def test_execution_plan_never_answers_5xx(served: Served, edit: tuple[str, str, float], field: str,
                                          value: float) -> None:
    signals = [{"signal": "up", "confidence": 0.7}]
    served.answers("/v1/execution/plan", {"signals": signals, "data": _bars_with(served.bars, *edit),
                                          "model_id": served.execution_id})
    served.answers("/v1/execution/plan", {"signals": signals, "market": [{**_MARKET, field: value}],
                                          "model_id": served.execution_id})


@PROPERTY
@given(edit=TABLE_EDITS)
def test_var_never_answers_5xx(served: Served, edit: tuple[str, int, int, float]) -> None:
    methods = ["historical", "parametric_normal", "parametric_t", "monte_carlo"]
    served.answers("/v1/risk/var", {"data": _table_with(_table(60, 3), *edit), "methods": methods,
                                    "n_paths": 1000})

