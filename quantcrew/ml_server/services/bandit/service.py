"""The bandit family's verbs: create, list, select, reward, state, reset, delete, simulate.

A bandit holds one policy per regime over the same arms (:mod:`~quantcrew.ml_server.services.bandit.store`
keeps them in SQLite); these verbs check what is asked, call the store, and build the replies:
every arm's estimate and a sentence a person reads on why an arm was chosen. A simulation
plays a policy against arms of known means and keeps nothing.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from quantcrew.ml_server.errors import InvalidInputError, NotFoundError
from quantcrew.ml_server.schemas.bandit import (
    DEFAULT_ARMS,
    ArmEstimate,
    BanditDecision,
    BanditDeleted,
    BanditInfo,
    BanditList,
    BanditMode,
    BanditParams,
    BanditRegimeState,
    BanditRewardResponse,
    BanditSimulateRequest,
    BanditSimulateResponse,
    BanditState,
)
from quantcrew.ml_server.schemas.regime import REGIME_LABELS
from quantcrew.ml_server.services.bandit.exploit import exploit_reason
from quantcrew.ml_server.services.bandit.params import ParamError
from quantcrew.ml_server.services.bandit.policies import make_policy
from quantcrew.ml_server.services.bandit.policy import ArmStats
from quantcrew.ml_server.services.bandit.simulation import simulate as run_simulation
from quantcrew.ml_server.services.bandit.store import BanditRecord, BanditStore

__all__ = ["MAX_ABS_REWARD_ENV", "create", "delete", "list_bandits", "reset", "reward", "select", "simulate", "state"]

MAX_ABS_REWARD_ENV = "QUANTCREW_SERVER__MAX_ABS_REWARD"


def _invalid(message: str, *loc: str | int) -> InvalidInputError:
    return InvalidInputError(message, details=[{"loc": [*loc], "msg": message}])


def _labels(values: Sequence[str], what: str, low: int) -> tuple[str, ...]:
    out = tuple(str(v) for v in values)
    if not low <= len(out) <= 32:
        raise _invalid(f"{what} must hold {low} to 32 names, got {len(out)}", what)
    if any(not v.strip() for v in out):
        raise _invalid(f"{what} must not hold an empty name", what)
    if len(set(out)) != len(out):
        raise _invalid(f"{what} must be unique, got {list(out)}", what)
    return out


def _bandit(store: BanditStore, ref: str, *loc: str) -> BanditRecord:
    record = store.find(ref)
    if record is None:
        raise NotFoundError(f"no bandit with id or name '{ref}'", details=[{"loc": list(loc), "msg": "unknown bandit"}])
    return record


def _info(record: BanditRecord, decisions: int, pulls: int) -> BanditInfo:
    return BanditInfo(bandit_id=record.bandit_id, name=record.name, policy=record.policy,  # type: ignore[arg-type]
                      arms=list(record.arms), regimes=list(record.regimes),
                      params=BanditParams.model_validate(record.params), seed=record.seed,
                      created_at=record.created_at, decisions=decisions, pulls=pulls)


def _time(iso: str | None) -> datetime | None:
    return datetime.fromisoformat(iso) if iso else None


# -- bandits ---------------------------------------------------------------------------------------


def create(store: BanditStore, *, name: str, policy: str = "thompson_beta", arms: Sequence[str] = DEFAULT_ARMS,
           regimes: Sequence[str] = REGIME_LABELS, params: Mapping[str, Any] | None = None,
           seed: int = 0) -> BanditInfo:
    """Create a bandit: one ``policy`` per regime over the same arms.

    Raises:
        InvalidInputError: Unknown policy (listing the valid ones), bad params (naming the
            one), too few / repeated arms or regimes.
        ConflictError: The name is taken.
    """
    arm_names, regime_names = _labels(arms, "arms", 2), _labels(regimes, "regimes", 1)
    try:
        resolved = make_policy(policy, len(arm_names), params).params.to_dict()
    except ParamError as exc:
        loc = ("policy",) if exc.param == "policy" else ("params", exc.param)
        raise _invalid(str(exc), *loc) from exc
    record = BanditRecord(bandit_id="bandit-" + uuid.uuid4().hex[:16], name=name, policy=policy,
                          arms=arm_names, regimes=regime_names, params=resolved, seed=int(seed),
                          created_at=datetime.now(UTC))
    store.create(record)
    return _info(record, 0, 0)


def list_bandits(store: BanditStore) -> BanditList:
    """Every bandit, oldest first, with its decision and reward counts."""
    return BanditList(bandits=[_info(record, d, p) for record, d, p in store.usage()])


def state(store: BanditStore, ref: str) -> BanditState:
    """Every regime's arm estimates, counters and estimated regret.

    Raises:
        NotFoundError: No such bandit.
        ConflictError: A regime's saved state is unusable (it names the regime; reset it).
    """
    record = _bandit(store, ref, "path", "bandit")  # the bandit of this verb is named in the URL path
    snapshots = store.snapshot(record)
    regimes = []
    for snap in snapshots:
        view = snap.view
        known = [(s.estimate, i) for i, s in enumerate(view.stats) if s.estimate is not None and s.raw_pulls]
        regimes.append(BanditRegimeState(
            regime=snap.regime, decisions=view.decisions, pulls=view.pulls, pending=snap.pending,
            clipped=view.clipped, best_arm=record.arms[max(known)[1]] if known else None,
            pseudo_regret=view.pseudo_regret, explanation=_estimates(record, view.stats),
            updated_at=datetime.fromisoformat(snap.updated_at) if snap.updated_at else None))
    digests = "\n".join(snap.digest for snap in snapshots)
    last_reward = max(snap.view.last_reward_at or "" for snap in snapshots)
    info = _info(record, sum(r.decisions for r in regimes), sum(r.pulls for r in regimes))
    return BanditState(
        model_id=record.bandit_id, model_version=None, method_used=record.policy, fallback=False,
        data_hash="sha256:" + hashlib.sha256(digests.encode()).hexdigest(), seed=record.seed,
        as_of=_time(last_reward), bandit=info, regimes=regimes, pseudo_regret=sum(r.pseudo_regret for r in regimes),
        pulls=info.pulls)


# -- decisions -------------------------------------------------------------------------------------


def select(store: BanditStore, ref: str, regime: str, *, mode: BanditMode = "explore") -> BanditDecision:
    """Choose an arm for ``regime``, with every arm's estimate and the reason.

    Args:
        store: The bandit store.
        ref: Bandit id or name.
        regime: One of the bandit's regimes.
        mode: 'explore': the policy draws (Thompson sample, UCB index, EXP3 draw), as a bandit
            that learns does. 'exploit': no draw and no change of the policy's state: the arm
            with the highest mean reward in the regime (ties: more rewards, then arm order),
            so the same stored state always gives the same arm. Either way the decision is
            recorded and can be rewarded.

    Raises:
        NotFoundError: No such bandit.
        InvalidInputError: ``regime`` is not one of the bandit's regimes (they are listed).
        ConflictError: The regime's saved state is unusable (reset it).
    """
    record = _bandit(store, ref, "bandit")
    if regime not in record.regimes:
        raise _invalid(f"regime '{regime}' is not one of bandit '{record.name}''s regimes {list(record.regimes)}",
                       "regime")
    choice = store.select(record, regime, explore=mode == "explore")
    view, arm = choice.view, choice.arm
    if mode == "explore":
        reason = _reason(record, regime, arm, view.stats)
    else:
        silent = view.pulls == 0  # then say whether the bandit learned anything at all
        elsewhere = silent and any(snap.view.pulls for snap in store.snapshot(record))
        reason = exploit_reason(record.arms, regime, view.stats, rewarded_elsewhere=elsewhere)
    return BanditDecision(
        model_id=record.bandit_id, model_version=None, method_used=record.policy, fallback=False,
        data_hash=choice.digest, seed=record.seed, as_of=_time(view.last_reward_at),
        decision_id=choice.decision_id, bandit_id=record.bandit_id, bandit_name=record.name, regime=regime,
        arm=record.arms[arm], arm_index=arm, policy=record.policy,  # type: ignore[arg-type]
        propensity=choice.propensity, explanation=_estimates(record, view.stats), reason=reason, mode=mode,
        pseudo_regret=view.pseudo_regret, pulls=view.pulls)


def reward(store: BanditStore, decision_id: str, value: float, *, max_abs_reward: float = 1e6) -> BanditRewardResponse:
    """Learn from what decision ``decision_id`` earned (once per decision).

    Args:
        store: The bandit store.
        decision_id: A decision returned by :func:`select`.
        value: The reward.
        max_abs_reward: Largest |reward| accepted (the server's ``max_abs_reward`` setting).

    Raises:
        NotFoundError: No such decision.
        ConflictError: The decision was rewarded already, or the regime's saved state is unusable.
        InvalidInputError: A non-finite reward, or one beyond +-``max_abs_reward`` (the message names
            the bound and its setting).
    """
    value = float(value)
    if not math.isfinite(value):
        raise _invalid(f"reward must be a finite number, got {value}", "reward")
    if abs(value) > max_abs_reward:
        raise _invalid(f"reward {value:g} is outside the accepted bound +-{max_abs_reward:g} "
                       f"(server setting max_abs_reward, env {MAX_ABS_REWARD_ENV}); rewards are meant to be "
                       "returns or similar figures, far inside it", "reward")
    learned = store.learn(decision_id, value)
    record, view, arm = learned.record, learned.view, learned.arm
    return BanditRewardResponse(
        model_id=record.bandit_id, model_version=None, method_used=record.policy, fallback=False,
        data_hash=learned.digest, seed=record.seed, as_of=_time(learned.rewarded_at), decision_id=decision_id,
        bandit_id=record.bandit_id, regime=learned.regime, arm=record.arms[arm], arm_index=arm, reward=value,
        clipped=learned.clipped, explanation=_estimates(record, view.stats), pseudo_regret=view.pseudo_regret,
        pulls=view.pulls)


# -- reset and delete ------------------------------------------------------------------------------


def reset(store: BanditStore, ref: str, regime: str | None = None) -> BanditState:
    """Forget what the bandit learned in ``regime`` (None: every regime); arms, policy and params stay.

    Each reset regime starts again from its prior and seeded random stream; its decisions still
    waiting for a reward are dropped (a late reward for one is a 404).

    Returns:
        The bandit's state after the reset.

    Raises:
        NotFoundError: No such bandit.
        InvalidInputError: ``regime`` is not one of the bandit's regimes (they are listed).
    """
    record = _bandit(store, ref, "path", "bandit")
    if regime is not None and regime not in record.regimes:
        raise _invalid(f"regime '{regime}' is not one of bandit '{record.name}''s regimes {list(record.regimes)}",
                       "regime")
    store.reset(record, record.regimes if regime is None else (regime,))
    return state(store, record.bandit_id)


def delete(store: BanditStore, ref: str) -> BanditDeleted:
    """Delete a bandit, every regime's state and every decision; its name is free again.

    Raises:
        NotFoundError: No such bandit.
    """
    record = _bandit(store, ref, "path", "bandit")
    regimes, decisions = store.delete(record)
    return BanditDeleted(bandit_id=record.bandit_id, name=record.name, regimes=regimes, decisions=decisions)


# -- simulation ------------------------------------------------------------------------------------


def simulate(req: BanditSimulateRequest) -> BanditSimulateResponse:
    """Run a policy against arms of known means and report its cumulative regret (nothing kept).

    Raises:
        InvalidInputError: a bad policy parameter (naming it) or schedule.
    """
    means = req.means if req.means is not None else [(p.start, p.means) for p in req.schedule or []]
    try:
        result = run_simulation(req.policy, means, req.rounds, req.seed, req.params.model_dump(),
                                distribution=req.distribution, noise_sd=req.noise_sd)
    except ParamError as exc:
        raise _invalid(str(exc), "params", exc.param) from exc
    except ValueError as exc:
        raise _invalid(str(exc)) from exc
    marks = sorted({max(1, round(req.rounds * (k + 1) / req.checkpoints)) for k in range(req.checkpoints)})
    return BanditSimulateResponse(
        model_id=None, model_version=None, method_used=req.policy, fallback=False,
        data_hash="sha256:" + hashlib.sha256(req.model_dump_json().encode()).hexdigest(), seed=req.seed, as_of=None,
        policy=req.policy, rounds=req.rounds, n_arms=len(result.pulls), checkpoints=marks,
        cumulative_regret=[float(result.regret[m - 1]) for m in marks], final_regret=result.final_regret,
        pulls=result.pulls, best_arms=result.best_arms, change_points=result.change_points,
        mean_reward=result.mean_reward)


# -- explanations ----------------------------------------------------------------------------------


def _estimates(record: BanditRecord, stats: list[ArmStats]) -> list[ArmEstimate]:
    return [ArmEstimate(arm=record.arms[i], arm_index=i, estimate=s.estimate, uncertainty=s.uncertainty,
                        pulls=s.pulls, raw_pulls=s.raw_pulls, score=s.score, mean_reward=s.mean_reward)
            for i, s in enumerate(stats)]


def _g(x: float) -> str:
    return f"{x:.3g}"


def _reason(record: BanditRecord, regime: str, arm: int, stats: list[ArmStats]) -> str:
    """One sentence a person reads: why this arm."""
    name, s, policy = record.arms[arm], stats[arm], record.policy
    pulls = f"{s.pulls:.1f} discounted pulls" if policy == "discounted_thompson" else f"{s.pulls:g} pulls"
    if policy in ("ucb1", "sliding_window_ucb"):
        recent = f" in the last {record.params['window']} rewards" if policy == "sliding_window_ucb" else ""
        if s.score is None or s.estimate is None or s.uncertainty is None:
            return (f"{name} has no reward{recent} in regime '{regime}' yet; UCB plays every such arm before "
                    "comparing upper confidence bounds")
        return (f"{name} has the highest upper confidence bound {_g(s.score)} (estimate {_g(s.estimate)} "
                f"± {_g(s.uncertainty)} after {pulls}{recent})")
    if policy == "exp3":
        earned = f"mean reward {_g(s.estimate)} over {s.raw_pulls} pulls" if s.estimate is not None else "no reward yet"
        return f"EXP3 drew {name} with probability {s.score or 0.0:.2f} ({earned})"
    sample = "" if s.score is None else f" {_g(s.score)}"
    return (f"{name} drew the highest posterior sample{sample} (posterior mean {_g(s.estimate or 0.0)} "
            f"± {_g(s.uncertainty or 0.0)} after {pulls})")
