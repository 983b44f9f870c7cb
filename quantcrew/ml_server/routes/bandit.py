"""Bandit family: one multi-armed bandit per regime choosing among the specialised agents."""

from __future__ import annotations

from fastapi import APIRouter, Response

from quantcrew.ml_server.deps import BanditStoreDep, MetricsDep
from quantcrew.ml_server.routing import ERROR_RESPONSES, ORJSONRoute, model_response
from quantcrew.ml_server.schemas.bandit import (
    BanditCreateRequest,
    BanditDecision,
    BanditInfo,
    BanditList,
    BanditRewardRequest,
    BanditRewardResponse,
    BanditSelectRequest,
    BanditSimulateRequest,
    BanditSimulateResponse,
    BanditState,
)
from quantcrew.ml_server.services.bandit import service

router = APIRouter(prefix="/bandit", tags=["bandit"], route_class=ORJSONRoute)


@router.post("", response_model=BanditInfo, status_code=201, responses=ERROR_RESPONSES)
def create(req: BanditCreateRequest, store: BanditStoreDep) -> Response:
    """Create a bandit (one policy per regime over the same arms); a taken name is a 409."""
    info = service.create(store, name=req.name, policy=req.policy, arms=req.arms, regimes=req.regimes,
                          params=req.params.model_dump(), seed=req.seed)
    return model_response(info, status_code=201)


@router.get("", response_model=BanditList, responses=ERROR_RESPONSES)
def list_bandits(store: BanditStoreDep) -> Response:
    """Every bandit, oldest first, with its decision and reward counts."""
    return model_response(service.list_bandits(store))


@router.post("/select", response_model=BanditDecision, responses=ERROR_RESPONSES)
def select(req: BanditSelectRequest, store: BanditStoreDep) -> Response:
    """Choose an arm for the current regime, with every arm's estimate and the reason."""
    return model_response(service.select(store, req.bandit, req.regime))


@router.post("/reward", response_model=BanditRewardResponse, responses=ERROR_RESPONSES)
def reward(req: BanditRewardRequest, store: BanditStoreDep, metrics: MetricsDep) -> Response:
    """Report what a decision earned; the regime's bandit learns from it (once per decision)."""
    reply = service.reward(store, req.decision_id, req.reward)
    metrics.fits.labels("bandit", reply.method_used, "false").inc()
    return model_response(reply)


@router.post("/simulate", response_model=BanditSimulateResponse, responses=ERROR_RESPONSES)
def simulate(req: BanditSimulateRequest, metrics: MetricsDep) -> Response:
    """Run a policy against arms of known means and report its cumulative regret (nothing kept)."""
    reply = service.simulate(req)
    metrics.fits.labels("bandit", req.policy, "false").inc()
    return model_response(reply)


@router.get("/{bandit}", response_model=BanditState, responses=ERROR_RESPONSES)
def state(bandit: str, store: BanditStoreDep) -> Response:
    """A bandit's state: per regime, every arm's estimate, pulls and the estimated regret."""
    return model_response(service.state(store, bandit))
