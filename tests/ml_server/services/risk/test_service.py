"""The risk verbs: covariance, VaR and backtest replies built from their requests."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from quantcrew.data.synthetic_assets import generate_correlated_market, generate_garch_series
from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.schemas.matrix import MatrixPayload
from quantcrew.ml_server.schemas.risk import VAR_METHODS, CovarianceRequest, VarRequest
from quantcrew.ml_server.schemas.risk_backtest import VarBacktestRequest
from quantcrew.ml_server.services.risk import service

FloatArray = npt.NDArray[np.float64]


def _floats(value: Any) -> list[float]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [f for v in value.values() for f in _floats(v)]
    if isinstance(value, list):
        return [f for v in value for f in _floats(v)]
    return []


def _payload(values: FloatArray) -> MatrixPayload:
    return MatrixPayload(columns=[f"A{j}" for j in range(values.shape[1])], values=values.tolist())


def _var_request(values: FloatArray, **fields: Any) -> VarRequest:
    return VarRequest(data=_payload(values), **fields)


def _backtest_request(n: int = 90, k: int = 2, **fields: Any) -> VarBacktestRequest:
    cov = 1e-4 * np.array([[1.0, 0.3], [0.3, 2.0]])[:k, :k]
    market = generate_correlated_market(cov, n, dist="t", df=5.0, seed=11)
    body: dict[str, Any] = {"data": market.to_matrix_payload(), "window": 50, "refit_every": 10,
                            "methods": ["historical", "parametric_normal", "parametric_t", "monte_carlo"],
                            "n_paths": 2_000}
    body.update(fields)
    return VarBacktestRequest.model_validate(body)


# --- covariance --------------------------------------------------------------------------------


def test_covariance_builds_finite_wire_reply() -> None:
    rng = np.random.default_rng(0)
    beta, market = rng.normal(1.0, 0.3, 4), rng.normal(0.0, 0.01, 60)
    x = market[:, None] * beta + rng.normal(0.0, 0.02, (60, 4))
    req = CovarianceRequest(data=MatrixPayload(columns=["A", "B", "C", "D"], values=x.tolist()),
                            method="constant_correlation")
    reply = service.covariance(req)
    assert reply.method == "constant_correlation" and reply.method_used == "covariance:constant_correlation"
    assert reply.n_observations == 60 and reply.columns == ["A", "B", "C", "D"]
    cov = np.array(reply.covariance)
    np.testing.assert_allclose(np.sqrt(np.diag(cov)), reply.volatilities)
    assert all(np.isfinite(v) for row in reply.correlation for v in row)
    assert reply.model_id is None and reply.data_hash.startswith("sha256:")


# --- var -----------------------------------------------------------------------------------------


def test_var_runs_every_method_with_finite_details() -> None:
    rng = np.random.default_rng(18)
    r = generate_garch_series(600, omega=2e-6, mu=0.0003, seed=18).returns
    x = np.column_stack([r + rng.normal(0, 0.004, 600) for _ in range(4)])
    reply = service.var(_var_request(x, n_paths=20_000, seed=2), device="cpu")
    assert len(reply.estimates) == 5 * 2
    assert reply.method_used == "var:historical,parametric_normal,parametric_t,monte_carlo,filtered_historical"
    assert reply.weights == pytest.approx([0.25] * 4) and not reply.weights_normalized
    assert reply.fallback is False and reply.seed == 2
    fhs = reply.method_details["filtered_historical"]
    assert isinstance(fhs["sigma_forecast"], float) and fhs["sigma_forecast"] > 0
    assert reply.method_details["historical"]["horizon_rule"] == "single_period"
    for e in reply.estimates:
        assert math.isfinite(e.var) and math.isfinite(e.cvar) and e.cvar >= e.var
    assert reply.shrinkage is not None and 0 <= reply.shrinkage <= 1


def test_var_normalizes_weights_only_when_asked() -> None:
    x = np.random.default_rng(19).normal(0, 0.01, (100, 2))
    reply = service.var(_var_request(x, weights=[2.0, 2.0], normalize_weights=True, methods=["historical"]),
                        device="cpu")
    assert reply.weights == [0.5, 0.5] and reply.weights_normalized
    assert reply.shrinkage is None and reply.condition_number is None  # no covariance method asked


def test_var_short_weights_allowed() -> None:
    x = np.random.default_rng(20).normal(0, 0.01, (100, 2))
    reply = service.var(_var_request(x, weights=[1.5, -0.5], methods=["parametric_normal"]), device="cpu")
    assert reply.weights == [1.5, -0.5]


def test_var_too_few_rows_for_garch_refused() -> None:
    x = np.random.default_rng(21).normal(0, 0.01, (100, 2))
    with pytest.raises(InvalidInputError, match="too few rows for a GARCH fit"):
        service.var(_var_request(x, methods=["filtered_historical"]), device="cpu")


def test_portfolio_weights_equal_when_none_given() -> None:
    weights, rescaled = service.portfolio_weights(None, 4, normalize=True)
    assert weights.tolist() == [0.25] * 4 and not rescaled


def test_portfolio_weights_zero_sum_cannot_be_rescaled() -> None:
    with pytest.raises(InvalidInputError, match="cannot be rescaled") as info:
        service.portfolio_weights([1.0, -1.0], 2, normalize=True)
    assert info.value.details[0]["loc"] == ["weights"]


# --- backtest ------------------------------------------------------------------------------------


def test_backtest_reply_dates_series_and_breaches() -> None:
    req = _backtest_request(include_series=True, weights=[0.6, 0.4])
    reply = service.backtest(req)
    stamps = req.data.timestamps
    assert stamps is not None
    assert reply.first_forecast == stamps[50].date().isoformat()
    assert reply.last_forecast == stamps[-1].date().isoformat()
    assert reply.n_forecasts == 40 and reply.first_forecast_row == 50
    assert [(r.method, r.level) for r in reply.results] == [(m, a) for m in req.methods for a in req.levels]
    pnl = np.asarray(req.data.values) @ np.array([0.6, 0.4])
    for r in reply.results:
        assert r.var_series is not None and len(r.var_series) == 40
        assert r.breach_dates is not None and len(r.breach_dates) == r.n_breaches
        hits = [stamps[50 + i].date().isoformat() for i in range(40) if -pnl[50 + i] > r.var_series[i]]
        assert r.breach_dates == hits
        assert r.breach_rate == pytest.approx(r.n_breaches / 40)
        assert r.passes_kupiec == (r.kupiec_p_value >= 0.05)
    assert reply.weights == [0.6, 0.4] and reply.fallback is False
    assert reply.method_used == "var_backtest:historical,parametric_normal,parametric_t,monte_carlo"
    assert all(math.isfinite(f) for f in _floats(reply.model_dump(mode="json")))


def test_backtest_reply_all_methods_without_series() -> None:
    req = _backtest_request(n=280, k=1, window=250, refit_every=15, methods=list(VAR_METHODS))
    reply = service.backtest(req)
    assert len(reply.results) == 10
    assert all(r.var_series is None and r.breach_dates is None for r in reply.results)
    assert reply.method_details["filtered_historical"]["n_refits"] == 2
    assert reply.method_details["parametric_t"]["n_refits"] == 2
    assert all(math.isfinite(f) for f in _floats(reply.model_dump(mode="json")))


def test_backtest_reply_undated_rows_are_named_by_index() -> None:
    body = _backtest_request().model_dump()
    body["data"]["timestamps"] = None
    reply = service.backtest(VarBacktestRequest.model_validate(body))
    assert (reply.first_forecast, reply.last_forecast) == ("50", "89")


def test_backtest_window_too_large_for_data_is_refused_naming_window() -> None:
    req = _backtest_request(n=70, window=50)  # 70 rows <= 50 + 20
    with pytest.raises(InvalidInputError, match="window") as info:
        service.backtest(req)
    assert info.value.status_code == 422
    assert info.value.details[0]["loc"] == ["window"]
    service.backtest(_backtest_request(n=71, window=50))  # one more row is enough


def test_backtest_normalizes_weights_when_asked() -> None:
    reply = service.backtest(_backtest_request(weights=[2.0, 2.0], normalize_weights=True, methods=["historical"]))
    assert reply.weights == [0.5, 0.5] and reply.weights_normalized
