"""Bandit family: one multi-armed bandit per regime choosing among the specialised agents."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Response

from quantcrew.ml_server.deps import ServerDep
from quantcrew.ml_server.limits import check_rows
from quantcrew.ml_server.routing import ERROR_RESPONSES, ORJSONRoute, model_response
from quantcrew.ml_server.schemas.bandit import (
    BanditCreateRequest,
    BanditDecision,
    BanditDeleted,
    BanditInfo,
    BanditList,
    BanditReplayRequest,
    BanditResetRequest,
    BanditRewardRequest,
    BanditRewardResponse,
    BanditSelectRequest,
    BanditSimulateRequest,
    BanditSimulateResponse,
    BanditState,
)
from quantcrew.ml_server.schemas.jobs import JobInfo
from quantcrew.ml_server.services.bandit import replay, service

router = APIRouter(prefix="/bandit", tags=["bandit"], route_class=ORJSONRoute)


@router.post("", response_model=BanditInfo, status_code=201, responses=ERROR_RESPONSES)
def create(req: BanditCreateRequest, server: ServerDep) -> Response:
    """Create a bandit (one policy per regime over the same arms); a taken name is a 409."""
    store = server.bandits
    info = service.create(store, name=req.name, policy=req.policy, arms=req.arms, regimes=req.regimes,
                          params=req.params.model_dump(), seed=req.seed)
    return model_response(info, status_code=201)


@router.get("", response_model=BanditList, responses=ERROR_RESPONSES)
def list_bandits(server: ServerDep) -> Response:
    """Every bandit, oldest first, with its decision and reward counts."""
    store = server.bandits
    return model_response(service.list_bandits(store))


@router.post("/select", response_model=BanditDecision, responses=ERROR_RESPONSES)
def select(req: BanditSelectRequest, server: ServerDep) -> Response:
    """Choose an arm for the current regime, with every arm's estimate and the reason.

    Mode 'explore' (default) draws; mode 'exploit' follows the arm with the highest mean reward (no draw,
    no change of state), the same arm for the same stored state.
    """
    store = server.bandits
    return model_response(service.select(store, req.bandit, req.regime, mode=req.mode))


@router.post("/reward", response_model=BanditRewardResponse, responses=ERROR_RESPONSES)
def reward(req: BanditRewardRequest, server: ServerDep) -> Response:
    """Report what a decision earned; the regime's bandit learns from it (once per decision).

    A reward beyond +-``max_abs_reward`` (QUANTCREW_SERVER__MAX_ABS_REWARD, default 1e6) is a 422.
    """
    store, settings, metrics = server.bandits, server.settings, server.metrics
    reply = service.reward(store, req.decision_id, req.reward, max_abs_reward=settings.server.max_abs_reward)
    metrics.fits.labels("bandit", reply.method_used, "false").inc()
    return model_response(reply)


@router.post("/replay", response_model=JobInfo, status_code=202, responses=ERROR_RESPONSES)
def replay_policies(req: BanditReplayRequest, server: ServerDep) -> Response:
    """Warm-start a bandit: replay stored RL policies over bars none was trained on (a job; poll /v1/jobs/{id}).

    Checked before the job starts (policies, arms, span), so bad input is a 4xx here. Replaying the same
    bandit, symbol, policies and span again is a 409 whose details carry the earlier result.
    """
    store, registry, jobs, settings = server.bandits, server.registry, server.jobs, server.settings
    check_rows(req.data, max_rows=settings.server.max_rows)
    info = replay.start(req, store, registry, jobs, max_abs_reward=settings.server.max_abs_reward)
    return model_response(info, status_code=202)


@router.post("/simulate", response_model=BanditSimulateResponse, responses=ERROR_RESPONSES)
def simulate(req: BanditSimulateRequest, server: ServerDep) -> Response:
    """Run a policy against arms of known means and report its cumulative regret (nothing kept)."""
    metrics = server.metrics
    reply = service.simulate(req)
    metrics.fits.labels("bandit", req.policy, "false").inc()
    return model_response(reply)


@router.get("/{bandit}", response_model=BanditState, responses=ERROR_RESPONSES)
def state(bandit: str, server: ServerDep) -> Response:
    """A bandit's state: per regime, every arm's estimate, pulls and the estimated regret."""
    store = server.bandits
    return model_response(service.state(store, bandit))


@router.post("/{bandit}/reset", response_model=BanditState, responses=ERROR_RESPONSES)
def reset(bandit: str, server: ServerDep, req: Annotated[BanditResetRequest | None, Body()] = None) -> Response:
    """Forget what the bandit learned, in one regime or (no body / null regime) all; its definition stays."""
    store = server.bandits
    return model_response(service.reset(store, bandit, req.regime if req is not None else None))


@router.delete("/{bandit}", response_model=BanditDeleted, responses=ERROR_RESPONSES)
def delete(bandit: str, server: ServerDep) -> Response:
    """Delete a bandit with every regime's state and every decision (404 if unknown)."""
    store = server.bandits
    return model_response(service.delete(store, bandit))
