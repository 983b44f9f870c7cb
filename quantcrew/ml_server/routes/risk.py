"""Risk family: shrunk covariance estimates, portfolio VaR / CVaR, and rolling VaR backtests.

Every endpoint here is stateless (see :mod:`quantcrew.ml_server.services.risk.service`):
nothing is stored and every reply has ``model_id = null``.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from quantcrew.ml_server.deps import ServerDep
from quantcrew.ml_server.limits import check_matrix
from quantcrew.ml_server.metrics import Metrics
from quantcrew.ml_server.routing import ERROR_RESPONSES, ORJSONRoute, model_response
from quantcrew.ml_server.schemas.risk import CovarianceRequest, CovarianceResponse, VarMethod, VarRequest, VarResponse
from quantcrew.ml_server.schemas.risk_backtest import VarBacktestRequest, VarBacktestResponse
from quantcrew.ml_server.services.risk import service

router = APIRouter(prefix="/risk", tags=["risk"], route_class=ORJSONRoute)


@router.post("/covariance", response_model=CovarianceResponse, responses=ERROR_RESPONSES)
def covariance(req: CovarianceRequest, server: ServerDep) -> Response:
    """Estimate the covariance of asset returns (sample, Ledoit-Wolf, OAS or constant correlation)."""
    settings, metrics = server.settings, server.metrics
    check_matrix(req.data, max_rows=settings.server.max_rows, max_columns=settings.server.max_columns)
    reply = service.covariance(req, min_rows=settings.server.min_rows)
    metrics.fits.labels("risk", reply.method_used, "false").inc()
    return model_response(reply)


@router.post("/var", response_model=VarResponse, responses=ERROR_RESPONSES)
def var(req: VarRequest, server: ServerDep) -> Response:
    """Portfolio VaR and CVaR by historical, parametric, Monte Carlo and filtered historical methods."""
    device, settings, metrics = server.device_or_cpu, server.settings, server.metrics
    check_matrix(req.data, max_rows=settings.server.max_rows, max_columns=settings.server.max_columns)
    reply = service.var(req, device=device, min_rows=settings.server.min_rows)
    _count_fits(metrics, "var", req.methods, fell_back=reply.fallback)
    return model_response(reply)


@router.post("/backtest", response_model=VarBacktestResponse, responses=ERROR_RESPONSES)
def backtest(req: VarBacktestRequest, server: ServerDep) -> Response:
    """Rolling out-of-sample one-day VaR per method, with Kupiec and Christoffersen coverage tests.

    A full 18-year daily backtest of all five methods takes 10-50 s on two cores (the GARCH
    refits dominate); the client's timeout must allow for it.
    """
    device, settings, metrics = server.device_or_cpu, server.settings, server.metrics
    check_matrix(req.data, max_rows=settings.server.max_rows, max_columns=settings.server.max_columns)
    reply = service.backtest(req, device=device)
    _count_fits(metrics, "backtest", req.methods, fell_back=reply.fallback)
    return model_response(reply)


def _count_fits(metrics: Metrics, kind: str, methods: list[VarMethod], *, fell_back: bool) -> None:
    for method in methods:  # one label per method keeps the metric's cardinality small
        flag = fell_back and method == "filtered_historical"
        metrics.fits.labels("risk", f"{kind}:{method}", str(flag).lower()).inc()
