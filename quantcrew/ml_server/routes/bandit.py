"""Bandit family: one multi-armed bandit per regime choosing among the specialised agents."""

from __future__ import annotations

import hashlib

from fastapi import APIRouter, Response

from quantcrew.ml_server.deps import BanditStoreDep, MetricsDep
from quantcrew.ml_server.errors import InvalidInputError
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
from quantcrew.ml_server.services.bandit_policies import ParamError
from quantcrew.ml_server.services.bandit_simulation import simulate as run_simulation

router = APIRouter(prefix="/bandit", tags=["bandit"], route_class=ORJSONRoute)


@router.post("", response_model=BanditInfo, status_code=201, responses=ERROR_RESPONSES)
def create(req: BanditCreateRequest, store: BanditStoreDep) -> Response:
    """Create a bandit (one policy per regime over the same arms); a taken name is a 409."""
    info = store.create(name=req.name, policy=req.policy, arms=req.arms, regimes=req.regimes,
                        params=req.params.model_dump(), seed=req.seed)
    return model_response(info, status_code=201)


@router.get("", response_model=BanditList, responses=ERROR_RESPONSES)
def list_bandits(store: BanditStoreDep) -> Response:
    """Every bandit, oldest first, with its decision and reward counts."""
    return model_response(BanditList(bandits=store.list()))


@router.post("/select", response_model=BanditDecision, responses=ERROR_RESPONSES)
def select(req: BanditSelectRequest, store: BanditStoreDep) -> Response:
    """Choose an arm for the current regime, with every arm's estimate and the reason."""
    return model_response(store.select(req.bandit, req.regime))


@router.post("/reward", response_model=BanditRewardResponse, responses=ERROR_RESPONSES)
def reward(req: BanditRewardRequest, store: BanditStoreDep, metrics: MetricsDep) -> Response:
    """Report what a decision earned; the regime's bandit learns from it (once per decision)."""
    reply = store.reward(req.decision_id, req.reward)
    metrics.fits.labels("bandit", reply.method_used, "false").inc()
    return model_response(reply)


@router.post("/simulate", response_model=BanditSimulateResponse, responses=ERROR_RESPONSES)
def simulate(req: BanditSimulateRequest, metrics: MetricsDep) -> Response:
    """Run a policy against arms of known means and report its cumulative regret (nothing kept)."""
    means = req.means if req.means is not None else [(p.start, p.means) for p in req.schedule or []]
    try:
        result = run_simulation(req.policy, means, req.rounds, req.seed, req.params.model_dump(),
                                distribution=req.distribution, noise_sd=req.noise_sd)
    except ParamError as exc:
        raise InvalidInputError(str(exc), details=[{"loc": ["body", "params", exc.param], "msg": str(exc)}]) from exc
    except ValueError as exc:
        raise InvalidInputError(str(exc), details=[{"loc": ["body"], "msg": str(exc)}]) from exc
    metrics.fits.labels("bandit", req.policy, "false").inc()
    marks = sorted({max(1, round(req.rounds * (k + 1) / req.checkpoints)) for k in range(req.checkpoints)})
    return model_response(BanditSimulateResponse(
        model_id=None, model_version=None, method_used=req.policy, fallback=False,
        data_hash="sha256:" + hashlib.sha256(req.model_dump_json().encode()).hexdigest(), seed=req.seed, as_of=None,
        policy=req.policy, rounds=req.rounds, n_arms=len(result.pulls), checkpoints=marks,
        cumulative_regret=[float(result.regret[m - 1]) for m in marks], final_regret=result.final_regret,
        pulls=result.pulls, best_arms=result.best_arms, change_points=result.change_points,
        mean_reward=result.mean_reward))


@router.get("/{bandit}", response_model=BanditState, responses=ERROR_RESPONSES)
def state(bandit: str, store: BanditStoreDep) -> Response:
    """A bandit's state: per regime, every arm's estimate, pulls and the estimated regret."""
    return model_response(store.state(bandit))
