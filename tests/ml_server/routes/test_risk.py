"""Risk routes over HTTP (TestClient): covariance and VaR happy paths, provenance, every bad input."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from quantcrew.ml_server.schemas.risk import CovarianceResponse, VarResponse


def _returns(n_obs: int, n_assets: int, seed: int = 0) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    market = rng.standard_t(5, n_obs) * 0.008
    beta = rng.normal(1.0, 0.3, n_assets)
    values: list[list[float]] = (market[:, None] * beta + rng.normal(0.0, 0.01, (n_obs, n_assets))).tolist()
    return values


def _payload(n_obs: int, n_assets: int, seed: int = 0) -> dict[str, Any]:
    return {"columns": [f"S{j}" for j in range(n_assets)], "values": _returns(n_obs, n_assets, seed)}


def _all_finite(obj: Any) -> bool:
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(_all_finite(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_all_finite(v) for v in obj)
    return True


def _assert_422(resp: Any, *fragments: str) -> dict[str, Any]:
    assert resp.status_code == 422, resp.text
    error: dict[str, Any] = resp.json()["error"]
    assert error["code"] == "invalid_input"
    for fragment in fragments:
        assert fragment in error["message"], error["message"]
    return error


# ------------------------------------------------------------------ covariance


@pytest.mark.parametrize("method", ["sample", "ledoit_wolf", "oas", "constant_correlation"])
def test_covariance_returns_estimate_with_diagnostics(client: TestClient, method: str) -> None:
    resp = client.post("/v1/risk/covariance", json={"data": _payload(200, 5), "method": method})
    assert resp.status_code == 200, resp.text
    body = CovarianceResponse.model_validate(resp.json())
    assert body.method == method and body.method_used == f"covariance:{method}"
    assert len(body.covariance) == 5 and body.n_observations == 200
    assert body.model_id is None and body.fallback is False and body.data_hash.startswith("sha256:")
    assert (body.shrinkage is None) == (method == "sample")
    assert body.condition_number is not None and body.condition_number >= 1.0
    assert _all_finite(resp.json())


def test_covariance_shrunk_with_more_assets_than_rows(client: TestClient) -> None:
    resp = client.post("/v1/risk/covariance", json={"data": _payload(40, 60)})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["method"] == "ledoit_wolf" and body["min_eigenvalue"] > 0
    assert any("singular" in w for w in body["warnings"])


def test_covariance_sample_more_assets_than_rows_is_422(client: TestClient) -> None:
    resp = client.post("/v1/risk/covariance", json={"data": _payload(40, 60), "method": "sample"})
    _assert_422(resp, "40 observations for 60 assets", "ledoit_wolf")


def test_covariance_sample_near_singular_is_422(client: TestClient) -> None:
    payload = _payload(100, 4)
    for row in payload["values"]:
        row.append(row[0] - 2.0 * row[1])
    payload["columns"].append("combo")
    resp = client.post("/v1/risk/covariance", json={"data": payload, "method": "sample"})
    _assert_422(resp, "near-singular", "ledoit_wolf or oas")


def test_covariance_constant_column_is_422(client: TestClient) -> None:
    payload = _payload(100, 3)
    for row in payload["values"]:
        row[2] = 0.0
    error = _assert_422(client.post("/v1/risk/covariance", json={"data": payload}), "constant column", "'S2'")
    assert error["details"][0]["loc"][:2] == ["body", "data"]


# ------------------------------------------------------------------ VaR


def test_var_all_methods_with_provenance(client: TestClient) -> None:
    req = {"data": _payload(400, 6), "n_paths": 20_000, "seed": 5, "portfolio_value": 1_000_000.0}
    resp = client.post("/v1/risk/var", json=req)
    assert resp.status_code == 200, resp.text
    assert _all_finite(resp.json())
    body = VarResponse.model_validate(resp.json())
    assert body.method_used == "var:historical,parametric_normal,parametric_t,monte_carlo,filtered_historical"
    assert body.seed == 5 and body.model_id is None and body.n_observations == 400
    assert body.weights == pytest.approx([1 / 6] * 6)
    assert {(e.method, e.level) for e in body.estimates} == {
        (m, lv) for m in ("historical", "parametric_normal", "parametric_t", "monte_carlo", "filtered_historical")
        for lv in (0.95, 0.99)}
    for e in body.estimates:
        assert e.cvar >= e.var > 0
        assert e.var_amount == pytest.approx(e.var * 1_000_000.0)
    by = {(e.method, e.level): e for e in body.estimates}
    # MC under the shrunk covariance approximates the parametric normal closed form
    assert by[("monte_carlo", 0.99)].var == pytest.approx(by[("parametric_normal", 0.99)].var, rel=0.05)
    assert body.fallback is (body.fallback_reason is not None)
    assert "df" in body.method_details["parametric_t"]
    assert {"omega", "alpha", "beta", "sigma_forecast", "converged"} <= set(body.method_details["filtered_historical"])


def test_var_monte_carlo_draws_on_cpu_while_the_device_is_not_set(client: TestClient) -> None:
    state = client.app.state  # type: ignore[attr-defined]
    saved, state.device = state.device, None  # as while the server is still starting
    try:
        resp = client.post("/v1/risk/var", json={"data": _payload(100, 3), "methods": ["monte_carlo"],
                                                 "n_paths": 2_000})
    finally:
        state.device = saved
    assert resp.status_code == 200, resp.text
    assert resp.json()["method_details"]["monte_carlo"]["device"] == "cpu"


def test_var_same_seed_same_answer(client: TestClient) -> None:
    req = {"data": _payload(100, 3), "methods": ["monte_carlo"], "n_paths": 5_000, "seed": 1}
    a = client.post("/v1/risk/var", json=req).json()
    b = client.post("/v1/risk/var", json=req).json()
    assert a["estimates"] == b["estimates"] and a["data_hash"] == b["data_hash"]


def test_var_multi_period_horizon_reports_rule(client: TestClient) -> None:
    req = {"data": _payload(300, 3), "horizon_days": 10, "methods": ["historical", "filtered_historical"],
           "n_paths": 2_000}
    body = client.post("/v1/risk/var", json=req).json()
    assert body["method_details"]["historical"]["horizon_rule"] == "overlapping"
    assert body["method_details"]["filtered_historical"]["horizon_rule"] == "bootstrap"
    assert all(e["horizon_days"] == 10 for e in body["estimates"])


def test_var_normalizes_weights_when_asked(client: TestClient) -> None:
    req = {"data": _payload(100, 2), "weights": [3.0, 1.0], "normalize_weights": True, "methods": ["historical"]}
    body = client.post("/v1/risk/var", json=req).json()
    assert body["weights"] == [0.75, 0.25] and body["weights_normalized"] is True


def test_var_weights_not_summing_to_one_is_422_and_says_the_sum(client: TestClient) -> None:
    req = {"data": _payload(100, 2), "weights": [0.7, 0.5]}
    error = _assert_422(client.post("/v1/risk/var", json=req), "sum to 1.2", "normalize_weights=true")
    assert error["details"][0]["loc"] == ["body", "weights"]


def test_var_all_zero_weights_is_422(client: TestClient) -> None:
    req = {"data": _payload(100, 2), "weights": [0.0, 0.0], "normalize_weights": True}
    _assert_422(client.post("/v1/risk/var", json=req), "all zero")


def test_var_weights_length_mismatch_is_422(client: TestClient) -> None:
    req = {"data": _payload(100, 3), "weights": [0.5, 0.5]}
    error = _assert_422(client.post("/v1/risk/var", json=req), "weights has 2 entries", "3 columns")
    assert error["message"].startswith("weights:")


@pytest.mark.parametrize("levels", [[0.95, 1.0], [0.0], [1.2], [-0.5], [0.95, 0.95]])
def test_var_levels_outside_unit_interval_is_422(client: TestClient, levels: list[float]) -> None:
    req = {"data": _payload(100, 2), "levels": levels, "methods": ["historical"]}
    error = _assert_422(client.post("/v1/risk/var", json=req), "levels")
    assert "between 0 and 1" in error["message"] or "unique" in error["message"]


@pytest.mark.parametrize("horizon", [0, -3])
def test_var_horizon_not_positive_is_422(client: TestClient, horizon: int) -> None:
    req = {"data": _payload(100, 2), "horizon_days": horizon}
    error = _assert_422(client.post("/v1/risk/var", json=req), "horizon_days")
    assert error["details"][0]["loc"] == ["body", "horizon_days"]


def test_var_too_few_rows_for_garch_is_422(client: TestClient) -> None:
    req = {"data": _payload(120, 2), "methods": ["historical", "filtered_historical"]}
    _assert_422(client.post("/v1/risk/var", json=req), "too few rows for a GARCH fit")


def test_var_constant_column_is_422(client: TestClient) -> None:
    payload = _payload(100, 3)
    for row in payload["values"]:
        row[0] = 0.001
    _assert_422(client.post("/v1/risk/var", json={"data": payload}), "constant column", "'S0'")


def test_var_sample_covariance_more_assets_than_rows_is_422(client: TestClient) -> None:
    req = {"data": _payload(40, 60), "methods": ["parametric_normal"], "covariance_method": "sample"}
    _assert_422(client.post("/v1/risk/var", json=req), "40 observations for 60 assets", "ledoit_wolf")


def test_var_sample_covariance_near_singular_is_422(client: TestClient) -> None:
    payload = _payload(100, 3)
    for row in payload["values"]:
        row.append(0.5 * row[0] + 0.5 * row[1])
    payload["columns"].append("mix")
    req = {"data": payload, "methods": ["monte_carlo"], "covariance_method": "sample"}
    _assert_422(client.post("/v1/risk/var", json=req), "near-singular")


def test_var_nan_in_returns_is_422(client: TestClient) -> None:
    body = '{"data": {"columns": ["a", "b"], "values": [[0.01, NaN], [0.02, 0.01]]}}'
    resp = client.post("/v1/risk/var", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "invalid_input"


@pytest.mark.parametrize(("path", "value", "fragment"), [
    ("/v1/risk/covariance", 1e13, "too large for a return"),
    ("/v1/risk/var", 1e13, "values[5][0] (column 'S0') is 1e+13: a simple return must lie above -1"),
    ("/v1/risk/var", -1.5, "values[5][0] (column 'S0') is -1.5: a simple return must lie above -1"),
    ("/v1/risk/backtest", -1.0, "values[5][0] (column 'S0') is -1: a simple return must lie above -1"),
])
def test_values_too_large_or_too_negative_for_returns_are_422(client: TestClient, path: str, value: float,
                                                              fragment: str) -> None:
    payload = _payload(100, 2)
    payload["values"][5][0] = value
    _assert_422(client.post(path, json={"data": payload}), fragment)


@pytest.mark.parametrize("path", ["/v1/risk/var", "/v1/risk/covariance"])
def test_values_beyond_the_table_bound_are_422_naming_the_cell(client: TestClient, path: str) -> None:
    payload = _payload(100, 2)
    payload["values"][5][0] = 1e200
    error = _assert_422(client.post(path, json={"data": payload}), "data.values.5.0")
    assert error["details"][0]["loc"] == ["body", "data", "values", 5, 0]


def _garch_payload(n: int = 900, seed: int = 3) -> dict[str, object]:
    from quantcrew.data import generate_garch_series

    series = generate_garch_series(n, seed=seed)
    return {"columns": ["X"], "values": [[float(r)] for r in series.returns]}


def test_backtest_reports_coverage_tests_per_method_and_level(client: TestClient) -> None:
    methods = ["historical", "parametric_normal", "filtered_historical"]
    body = {"data": _garch_payload(), "window": 300, "refit_every": 50, "n_paths": 2000, "methods": methods,
            "include_series": True}
    resp = client.post("/v1/risk/backtest", json=body)
    assert resp.status_code == 200, resp.text
    reply = resp.json()
    assert {(r["method"], r["level"]) for r in reply["results"]} == {
        (m, lv) for m in methods for lv in (0.95, 0.99)}
    for r in reply["results"]:
        assert r["n_observations"] == 600 and len(r["var_series"]) == 600
        assert 0.0 <= r["kupiec_p_value"] <= 1.0 and 0.0 <= r["christoffersen_p_value"] <= 1.0
        assert r["n_breaches"] == round(r["breach_rate"] * 600)
    assert reply["model_id"] is None and reply["data_hash"].startswith("sha256:")


def test_backtest_refuses_a_window_longer_than_the_data(client: TestClient) -> None:
    resp = client.post("/v1/risk/backtest", json={"data": _garch_payload(300), "window": 500})
    assert resp.status_code == 422
    assert "window" in resp.json()["error"]["message"]


def test_backtest_refuses_levels_outside_the_unit_interval(client: TestClient) -> None:
    resp = client.post("/v1/risk/backtest", json={"data": _garch_payload(), "levels": [0.95, 1.0]})
    assert resp.status_code == 422
    assert "between 0 and 1" in resp.json()["error"]["message"]
