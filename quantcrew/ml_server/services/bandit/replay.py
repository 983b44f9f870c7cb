"""Warm-start replay: stored RL policies replayed over bars none of them was trained on, rewarding a bandit.

:func:`start` checks a :class:`~quantcrew.ml_server.schemas.bandit.BanditReplayRequest` (every
policy an rl policy whose agent is one of the bandit's arms, one per arm; a span after every
policy's training end), finds or creates the bandit, claims the replay's key in the bandit store
and submits the job; :func:`run` is the job. For each bar ``t`` of the span:

* the regime is the policies' regime model's FILTERED label at ``t`` (it sees bars ``<= t``
  only); policies trained without a regime model count every bar as ``sideways``;
* the bandit selects in mode explore, through the same verbs as a live select and reward, so
  its counts are exact;
* the reward is the chosen agent's realised return of bar ``t + 1`` after costs: its position
  at ``t`` times the next bar's return, minus costs on its change of position, the agent's
  positions being those it takes when followed throughout the span (the rl family's
  backtest, :func:`~quantcrew.ml_server.services.rl.backtest.backtest`, on
  :func:`~quantcrew.ml_server.services.rl.evaluation.run_policy`'s path).

Every agent's summed reward is known for every bar, so the result also says which single agent
would have earned most in hindsight and the bandit's regret against it. A key (sha256 of the
bandit id, symbol, sorted policy ids and span) is recorded before the first reward: replaying it
again is a :class:`~quantcrew.ml_server.errors.ConflictError` carrying the earlier result, never
a second reward. A replay that stops part way keeps its key (the rewards given stand); one that
stops before its first reward frees it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from quantcrew.ml_server.errors import ConflictError, InvalidInputError, NotFoundError
from quantcrew.ml_server.jobs import JobCancelled, JobContext, JobManager
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.bandit import (
    BanditPolicyName,
    BanditReplayRegime,
    BanditReplayRequest,
    BanditReplayResult,
)
from quantcrew.ml_server.schemas.common import ModelInfo
from quantcrew.ml_server.schemas.jobs import FINISHED_STATUSES, JobInfo
from quantcrew.ml_server.schemas.regime import REGIME_LABELS
from quantcrew.ml_server.services.bandit import service
from quantcrew.ml_server.services.bandit.exploit import exploit_order, exploit_reason
from quantcrew.ml_server.services.bandit.replay_record import ReplayRecord
from quantcrew.ml_server.services.bandit.store import BanditRecord, BanditStore
from quantcrew.ml_server.services.bars import Bars, bars_from_payload
from quantcrew.ml_server.services.rl.backtest import backtest
from quantcrew.ml_server.services.rl.evaluation import run_policy
from quantcrew.ml_server.services.rl.features import WARMUP
from quantcrew.ml_server.services.rl.market import Market, as_naive_utc
from quantcrew.ml_server.services.rl.service import load_policy, policy_market

__all__ = ["JOB_KIND", "NO_REGIME", "ReplayPlan", "claim", "prepare", "replay_key", "run", "start"]

NO_REGIME = "sideways"
"""The regime of every bar when the policies were trained without a regime model."""

JOB_KIND = "bandit_replay"

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ReplayPlan:
    """A checked replay, ready to run.

    Attributes:
        record: The bandit.
        created: The replay created the bandit.
        symbol: The instrument.
        bars: The bars sent.
        agents: Arm -> its policy's registry entry, in the bandit's arm order.
        start: First bar replayed (index into ``bars``).
        end: One past the last bar replayed; ``end <= len(bars) - 1`` so every bar has a next one.
        key: The replay's key.
        regime_model_id: The regime model whose labels give the regime, or None.
        cost_bps: Commission per unit of turnover.
        slippage_bps: Slippage per unit of turnover.
        max_abs_reward: The server's bound on a reward.
    """

    record: BanditRecord
    created: bool
    symbol: str
    bars: Bars
    agents: dict[str, ModelInfo]
    start: int
    end: int
    key: str
    regime_model_id: str | None
    cost_bps: float
    slippage_bps: float
    max_abs_reward: float

    @property
    def span(self) -> tuple[str, str]:
        """ISO times of the first and the last bar replayed."""
        iso = self.bars.iso()
        return iso[self.start], iso[self.end - 1]


def replay_key(bandit_id: str, symbol: str, model_ids: list[str] | tuple[str, ...], span_start: str,
               span_end: str) -> str:
    """sha256 of (bandit id, symbol, sorted model ids, span start, span end), as hex."""
    text = json.dumps([bandit_id, symbol, sorted(model_ids), span_start, span_end], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# -- checking and starting -------------------------------------------------------------------------


def _invalid(message: str, *loc: str | int) -> InvalidInputError:
    return InvalidInputError(message, details=[{"loc": [*loc], "msg": message}])


def _policies(req: BanditReplayRequest, registry: ModelRegistry, arms: tuple[str, ...]) -> dict[str, ModelInfo]:
    """Arm -> policy entry, one per arm, in arm order."""
    by_arm: dict[str, ModelInfo] = {}
    for i, model_id in enumerate(req.model_ids):
        info = registry.get(model_id)  # an unknown id is a 404
        if info.family != "rl":
            raise _invalid(f"model '{model_id}' is a {info.family} model, not an rl policy", "model_ids", i)
        agent = info.metadata.get("agent")
        if agent not in arms:
            raise _invalid(f"policy '{model_id}' is of agent '{agent}', which is not an arm of the bandit "
                           f"({', '.join(arms)})", "model_ids", i)
        if agent in by_arm:
            raise _invalid(f"policies '{by_arm[agent].model_id}' and '{model_id}' are both of agent '{agent}'; give "
                           "one policy per arm", "model_ids", i)
        if not info.metadata.get("train_end"):
            raise _invalid(f"policy '{model_id}' has no recorded training end, so the bars it was trained on are "
                           "unknown", "model_ids", i)
        trained_on = info.metadata.get("symbol")
        if trained_on and str(trained_on).upper() != req.symbol.upper():
            raise _invalid(f"policy '{model_id}' was trained on {trained_on}, not {req.symbol}", "model_ids", i)
        by_arm[str(agent)] = info
    missing = [a for a in arms if a not in by_arm]
    if missing:
        raise _invalid(f"no policy for arm(s) {', '.join(missing)}: the bandit may choose any of its arms "
                       f"({', '.join(arms)}), so each needs one policy in model_ids", "model_ids")
    return {a: by_arm[a] for a in arms}


def _train_end(info: ModelInfo) -> np.datetime64:
    return np.datetime64(str(info.metadata["train_end"]), "us")


def _span(req: BanditReplayRequest, bars: Bars, agents: dict[str, ModelInfo]) -> tuple[int, int]:
    """(first bar replayed, one past the last), checked to hold bars no policy was trained on."""
    latest = max(agents.values(), key=_train_end)
    first_unseen = max(int(np.searchsorted(bars.times, _train_end(latest), side="right")), WARMUP)
    iso = bars.iso()
    start = first_unseen
    if req.start is not None:
        start = max(int(np.searchsorted(bars.times, as_naive_utc(req.start), side="left")), WARMUP)
        if start < first_unseen:
            raise _invalid(
                f"start {req.start.date().isoformat()} is not after the training end "
                f"{latest.metadata['train_end']} of policy '{latest.model_id}' ({latest.metadata.get('agent')}): "
                "replayed bars must be ones no policy was trained on; omit start to begin at the first such bar",
                "start")
    last = len(bars) - 1  # the bar whose close enters the last reward
    if req.end is not None:
        last = min(last, int(np.searchsorted(bars.times, as_naive_utc(req.end), side="right")) - 1)
    if last - start < 1:
        after = iso[start] if start < len(iso) else "after the last bar sent"
        raise _invalid(
            f"no bar to replay: the span would start at {after} (after the latest training end "
            f"{latest.metadata['train_end']}, policy '{latest.model_id}') and needs a later bar for its reward; "
            "send bars after the policies' training span", "data")
    return start, last


def _regime_model(agents: dict[str, ModelInfo]) -> str | None:
    """The regime model of the most recently trained policy that has one (ties: arm order)."""
    with_model = [info for info in agents.values() if info.metadata.get("regime_model_id")]
    if not with_model:
        return None
    newest = max(with_model, key=_train_end)  # max keeps the first of equal ends
    return str(newest.metadata["regime_model_id"])


def _bandit(req: BanditReplayRequest, store: BanditStore) -> tuple[BanditRecord | None, tuple[str, ...],
                                                                   tuple[str, ...]]:
    record = store.find(req.bandit)
    if record is not None:
        return record, record.arms, record.regimes
    return None, tuple(req.create.arms), tuple(req.create.regimes)


def prepare(req: BanditReplayRequest, store: BanditStore, registry: ModelRegistry, *,
            max_abs_reward: float) -> ReplayPlan:
    """Check a replay and find or create its bandit (nothing else is written).

    Raises:
        ModelNotFoundError: A model id is unknown (404).
        InvalidInputError: A model is no rl policy, an agent is no arm (or has two policies, or
            an arm none), a policy was trained on another symbol, the start lies in a training
            span, no bar is left to replay, or the bandit lacks a regime the labels use.
    """
    bars = bars_from_payload(req.data, min_rows=WARMUP + 2)
    record, arms, regimes = _bandit(req, store)
    agents = _policies(req, registry, arms)
    first, end = _span(req, bars, agents)
    regime_model_id = _regime_model(agents)
    needed = list(REGIME_LABELS) if regime_model_id is not None else [NO_REGIME]
    lacking = [r for r in needed if r not in regimes]
    if lacking:
        where = "the policies' regime model labels bars" if regime_model_id else "without a regime model every bar is"
        raise _invalid(f"the bandit has no regime {', '.join(lacking)}, but {where} so; its regimes are "
                       f"{', '.join(regimes)}", "bandit")
    created = False
    if record is None:
        try:
            service.create(store, name=req.bandit, policy=req.create.policy, arms=arms, regimes=regimes,
                           params=req.create.params.model_dump(), seed=req.create.seed)
            created = True
        except ConflictError:
            pass  # created by another caller a moment ago: use it as it is
        record = store.find(req.bandit)
        if record is None or record.arms != arms:
            raise ConflictError(f"bandit '{req.bandit}' changed while the replay was being prepared; send it again")
    iso = bars.iso()
    key = replay_key(record.bandit_id, req.symbol, req.model_ids, iso[first], iso[end - 1])
    return ReplayPlan(record=record, created=created, symbol=req.symbol, bars=bars, agents=agents, start=first,
                      end=end, key=key, regime_model_id=regime_model_id, cost_bps=req.cost_bps,
                      slippage_bps=req.slippage_bps, max_abs_reward=max_abs_reward)


def claim(plan: ReplayPlan, store: BanditStore, jobs: JobManager) -> None:
    """Record the replay's key as running.

    A key left running by a job that has ended (cancelled before it ran, or its server stopped)
    is released when that job rewarded nothing, and recorded as stopped otherwise.

    Raises:
        ConflictError: The key was replayed, or is being replayed; the details say how far, with
            the earlier result.
    """
    span_start, span_end = plan.span
    model_ids = tuple(info.model_id for info in plan.agents.values())
    for _ in range(2):
        earlier = store.claim_replay(plan.record, plan.key, symbol=plan.symbol, model_ids=model_ids,
                                     span_start=span_start, span_end=span_end, bars=plan.end - plan.start)
        if earlier is None:
            return
        if earlier.status != "running" or _job_alive(earlier.job_id, jobs):
            raise _replayed(earlier, plan.record)
        store.stop_replay(plan.key, earlier.bars_done, "its job ended before the replay finished")
        if earlier.bars_done > 0:
            stopped = store.replay(plan.key)
            raise _replayed(stopped or earlier, plan.record)
    raise ConflictError(f"replay {plan.key} is being claimed by another request; send it again")


def _job_alive(job_id: str | None, jobs: JobManager) -> bool:
    if job_id is None:
        return True  # claimed a moment ago; its job is being submitted
    try:
        return jobs.get(job_id).status not in FINISHED_STATUSES
    except NotFoundError:
        return False


def start(req: BanditReplayRequest, store: BanditStore, registry: ModelRegistry, jobs: JobManager, *,
          max_abs_reward: float) -> JobInfo:
    """Check a replay (:func:`prepare`), claim its key (:func:`claim`) and start the job (:func:`run`).

    Raises:
        ModelNotFoundError: A model id is unknown (404).
        InvalidInputError: See :func:`prepare`.
        ConflictError: This replay's key was replayed (or is being replayed) already; the
            details carry the earlier result.
    """
    plan = prepare(req, store, registry, max_abs_reward=max_abs_reward)
    claim(plan, store, jobs)
    span_start, span_end = plan.span
    params = {"bandit": plan.record.name, "bandit_id": plan.record.bandit_id, "symbol": plan.symbol,
              "model_ids": sorted(info.model_id for info in plan.agents.values()), "span_start": span_start,
              "span_end": span_end, "bars": plan.end - plan.start, "replay_key": plan.key, "created": plan.created}
    try:
        info = jobs.submit(JOB_KIND, lambda ctx: run(plan, store, registry, ctx), params=params)
    except BaseException:
        store.stop_replay(plan.key, 0, "the job could not start")
        raise
    store.attach_replay_job(plan.key, info.job_id)
    return info


def _replayed(earlier: ReplayRecord, record: BanditRecord) -> ConflictError:
    """The 409 for a key recorded before, saying what became of that replay."""
    status, note = earlier.status, earlier.note
    what = f"{earlier.symbol} over {earlier.span_start}..{earlier.span_end} ({earlier.bars} bars)"
    again = (f"to warm-start it afresh, reset the bandit (POST /v1/bandit/{record.name}/reset) and replay again, "
             "or replay a later span")
    if status == "done":
        message = (f"bandit '{record.name}' was already replayed on {what} with these policies (job "
                   f"{earlier.job_id}, finished {earlier.finished_at}); nothing was rewarded twice. The earlier "
                   f"result is in the details; {again}")
    elif status == "running":
        message = (f"bandit '{record.name}' is being replayed on {what} with these policies now (job "
                   f"{earlier.job_id}); follow it with GET /v1/jobs/{earlier.job_id}")
    else:
        message = (f"a replay of bandit '{record.name}' on {what} with these policies stopped after "
                   f"{earlier.bars_done} bars ({note}); the rewards of those bars stand, so the span is not "
                   f"replayed again; {again}")
    return ConflictError(message, details={
        "replay_key": earlier.replay_key, "status": status, "job_id": earlier.job_id, "bars": earlier.bars,
        "bars_done": earlier.bars_done, "span_start": earlier.span_start, "span_end": earlier.span_end,
        "note": note, "result": earlier.result})


# -- the job ---------------------------------------------------------------------------------------


def _agent_rewards(plan: ReplayPlan, registry: ModelRegistry, ctx: JobContext) -> tuple[dict[str, FloatArray],
                                                                                        list[str]]:
    """Every agent's reward at every bar of the span, and each bar's regime."""
    n = plan.end - plan.start
    rewards: dict[str, FloatArray] = {}
    markets: dict[tuple[str | None, str], Market] = {}
    labels: list[str] | None = None
    for k, (arm, info) in enumerate(plan.agents.items()):
        if ctx.cancelled:
            raise JobCancelled
        ctx.report(done=0, total=n, message=f"running policy {k + 1} of {len(plan.agents)} ({arm}) over {n} bars")
        policy, _ = load_policy(registry, info.model_id)
        market = policy_market(registry, plan.bars, info.metadata, markets)
        positions = run_policy(policy, market, plan.start, plan.end)
        _, net = backtest(positions, market.forward_returns[plan.start:plan.end], cost_bps=plan.cost_bps,
                          slippage_bps=plan.slippage_bps)
        rewards[arm] = net
        if plan.regime_model_id is not None and info.metadata.get("regime_model_id") == plan.regime_model_id:
            labels = labels or market.labels[plan.start:plan.end]
    regimes = labels if labels is not None else [NO_REGIME] * n
    return rewards, regimes


def run(plan: ReplayPlan, store: BanditStore, registry: ModelRegistry, ctx: JobContext) -> dict[str, Any]:
    """The replay job: select (explore) and reward once per bar of the span; returns the result as JSON.

    Raises:
        JobCancelled: Cancelled; the bars rewarded so far stand and keep the key taken.
    """
    n = plan.end - plan.start
    done = 0
    try:
        rewards, regimes = _agent_rewards(plan, registry, ctx)
        arms = plan.record.arms
        pulls: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(arms, 0))
        earned: list[float] = []
        for i in range(n):
            if ctx.cancelled:
                raise JobCancelled
            regime = regimes[i]
            decision = service.select(store, plan.record.bandit_id, regime, mode="explore")
            value = float(rewards[decision.arm][i])
            service.reward(store, decision.decision_id, value, max_abs_reward=plan.max_abs_reward)
            done += 1
            pulls[regime][decision.arm] += 1
            earned.append(value)
            store.progress_replay(plan.key, done)
            ctx.report(done=done, total=n, message=f"replayed {done} of {n} bars",
                       metrics={"bandit_reward": math.fsum(earned)})
        result = _result(plan, store, rewards, regimes, pulls, earned).model_dump(mode="json")
        store.finish_replay(plan.key, done, result)
        return result
    except JobCancelled:
        store.stop_replay(plan.key, done, f"cancelled after {done} of {n} bars")
        kept = f"; the rewards of those {done} bars stand" if done else "; nothing was rewarded"
        raise JobCancelled(f"replay cancelled after {done} of {n} bars{kept}") from None
    except BaseException as exc:
        store.stop_replay(plan.key, done, f"failed after {done} of {n} bars: {type(exc).__name__}: {exc}")
        raise


def _result(plan: ReplayPlan, store: BanditStore, rewards: dict[str, FloatArray], regimes: list[str],
            pulls: dict[str, dict[str, int]], earned: list[float]) -> BanditReplayResult:
    record = plan.record
    arms = record.arms
    n = plan.end - plan.start
    totals = {arm: math.fsum(rewards[arm].tolist()) for arm in arms}
    best = max(arms, key=lambda a: totals[a])  # the first of equal totals, in arm order
    bandit_reward = math.fsum(earned)
    regret = totals[best] - bandit_reward
    by_regime: list[BanditReplayRegime] = []
    choices = []
    snapshots = store.snapshot(record)
    learned = any(snap.view.pulls for snap in snapshots)
    for snap in snapshots:
        stats = snap.view.stats
        top = exploit_order(stats)[0]
        mask = [r == snap.regime for r in regimes]
        by_regime.append(BanditReplayRegime(
            regime=snap.regime, bars=sum(mask), pulls=dict(pulls.get(snap.regime, dict.fromkeys(arms, 0))),
            agent_rewards={a: math.fsum(float(x) for x, m in zip(rewards[a], mask, strict=True) if m) for a in arms},
            exploit_arm=arms[top], exploit_mean_reward=stats[top].mean_reward, exploit_rewards=stats[top].raw_pulls,
            reason=exploit_reason(arms, snap.regime, stats, rewarded_elsewhere=learned and not snap.view.pulls)))
        choices.append(f"{snap.regime} -> {arms[top]}")
    span_start, span_end = plan.span
    source = (f"filtered labels of regime model {plan.regime_model_id} (each bar's label sees bars up to it only)"
              if plan.regime_model_id is not None else
              f"the policies were trained without a regime model: every bar counted as '{NO_REGIME}'")
    total_pulls = {a: sum(p[a] for p in pulls.values()) for a in arms}
    summary = (f"Replayed {n} bars of {plan.symbol} ({span_start}..{span_end}) into bandit '{record.name}': it earned "
               f"{bandit_reward:+.4f} in summed rewards against {totals[best]:+.4f} for {best}, the best single "
               f"agent in hindsight (regret {regret:.4f}, {regret / n:.2e} per bar). Chosen now in mode exploit: "
               f"{', '.join(choices)}.")
    policy: BanditPolicyName = record.policy  # type: ignore[assignment]
    return BanditReplayResult(
        replay_key=plan.key, bandit_id=record.bandit_id, bandit_name=record.name, created=plan.created,
        policy=policy, symbol=plan.symbol, agents={a: info.model_id for a, info in plan.agents.items()},
        span_start=span_start, span_end=span_end, bars=n, regime_model_id=plan.regime_model_id, regime_source=source,
        cost_bps=plan.cost_bps, slippage_bps=plan.slippage_bps, agent_rewards=totals, bandit_reward=bandit_reward,
        best_agent=best, best_agent_reward=totals[best], regret=regret, regret_per_bar=regret / n,
        pulls=total_pulls, regimes=by_regime, summary=summary)
