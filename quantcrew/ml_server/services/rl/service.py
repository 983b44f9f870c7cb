"""The rl family's verbs: train specialised policies (a job), ask them, backtest them out of sample.

Policies observe a :class:`~quantcrew.ml_server.services.rl.market.Market` built from the bars
sent, through the scaler (and regime detector) stored with them; stored policies are rebuilt
through the registry's one cache. Asked for a symbol, each agent's policy deployed for it (the
one that passed its quality gate, see :mod:`quantcrew.ml_server.services.rl.training`)
answers. torch and stable-baselines3 load with the first policy (or the first training job),
not with this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ValidationError

from quantcrew.ml_server.errors import ArtifactIntegrityError, InvalidInputError, ModelNotReadyError, NotFoundError
from quantcrew.ml_server.fanout import TaskPool
from quantcrew.ml_server.jobs import JobManager
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.common import ModelInfo
from quantcrew.ml_server.schemas.gate import GateVerdict
from quantcrew.ml_server.schemas.jobs import JobInfo
from quantcrew.ml_server.schemas.rl import (
    GatedPolicy,
    RegimeSlice,
    RLAction,
    RLActRequest,
    RLActResponse,
    RLEvaluateRequest,
    RLEvaluateResponse,
    RLEvaluation,
    RLTrainRequest,
    rl_deployment_name,
)
from quantcrew.ml_server.services import adapter
from quantcrew.ml_server.services.bars import Bars, bars_from_payload
from quantcrew.ml_server.services.deployment import DeploymentStore
from quantcrew.ml_server.services.gate import failed_checks_text
from quantcrew.ml_server.services.monitor import capture
from quantcrew.ml_server.services.monitor.predictions import PredictionLog
from quantcrew.ml_server.services.regime.model import RegimeDetector
from quantcrew.ml_server.services.rl.backtest import BacktestMetrics
from quantcrew.ml_server.services.rl.evaluation import (
    backtest_report,
    benchmark_reports,
    evaluate_positions,
    gate_positions,
    run_policy,
)
from quantcrew.ml_server.services.rl.features import WARMUP, FeatureScaler
from quantcrew.ml_server.services.rl.market import (
    MIN_TEST_BARS,
    Market,
    as_naive_utc,
    bars_per_year,
    observation,
    prepare_market,
    split_index,
    validation_index,
)

if TYPE_CHECKING:
    from quantcrew.ml_server.services.rl.policy import PolicyModel

__all__ = [
    "act",
    "check_timesteps",
    "evaluate",
    "load_policy",
    "policy_market",
    "resolve_policies",
    "select_deployed",
    "train",
]


# -- training --------------------------------------------------------------------------------------


def check_timesteps(timesteps: int, cap: int, runs: int = 1) -> None:
    """Refuse an agent's steps (``timesteps`` per run x ``runs``) over the server's cap (an
    :class:`InvalidInputError` naming the field)."""
    if timesteps * runs > cap:
        total = "" if runs == 1 else f" x {runs} runs (seeds x configurations) = {timesteps * runs}"
        raise InvalidInputError(
            f"timesteps {timesteps}{total} is over this server's cap of {cap} steps per agent (server.max_timesteps)",
            details=[{"loc": ["timesteps"], "msg": f"timesteps x runs must be <= {cap}"}],
        )


def train(req: RLTrainRequest, registry: ModelRegistry, jobs: JobManager, *, max_timesteps: int, min_rows: int,
          compute_threads: int, deployments: DeploymentStore | None = None, pool: TaskPool | None = None) -> JobInfo:
    """Start a training job (one policy kept per agent; each that passes its gate is deployed in ``deployments``).

    The request is checked before the job starts (timesteps cap over every run, enough
    training, validation and test bars, a calendar with a meaning per year), so bad input is an
    :class:`InvalidInputError` now, not a failed job later.
    """
    check_timesteps(req.timesteps, max_timesteps, req.runs)
    bars = bars_from_payload(req.data, min_rows=min_rows)
    last = split_index(bars, req.train_end, req.train_fraction)
    validation_index(last, req.validation_fraction)
    _calendar(bars)
    # torch and stable-baselines3 load with the first job (about 3 s), not when the server starts
    from quantcrew.ml_server.services.rl import training

    plan = training.TrainingPlan(req, bars, last, compute_threads=compute_threads, pool=pool or TaskPool())
    iso = bars.iso()
    params = {
        "agents": list(req.agents), "algorithm": req.algorithm, "timesteps": req.timesteps, "seed": req.seed,
        "seeds": req.seeds, "configurations": len(req.configurations()),
        "validation_fraction": req.validation_fraction,
        "action_mode": req.action_mode, "symbol": req.symbol, "train_start": iso[0], "train_end": iso[last],
        "test_end": iso[-1], "n_bars": len(bars), "data_hash": bars.data_hash, "name_prefix": req.name_prefix,
    }
    return jobs.submit("rl_train", lambda ctx: training.train_agents(plan, registry, ctx, deployments),
                       params=params)


# -- stored policies -------------------------------------------------------------------------------


def load_policy(registry: ModelRegistry, model_id: str) -> tuple[PolicyModel, ModelInfo]:
    """The stored policy ``model_id``, from the registry's cache or rebuilt.

    Raises:
        ModelNotFoundError: unknown id or not an rl model (404).
        ArtifactIntegrityError: the file changed, or its tensors do not fit the recorded architecture (409).
    """
    from quantcrew.ml_server.services.rl.policy import PolicyModel  # torch + SB3 load on first use

    return adapter.rebuild(registry, model_id, PolicyModel)


def resolve_policies(registry: ModelRegistry, *, model_ids: Sequence[str] | None, agents: Sequence[str] | None,
                     algorithm: str | None) -> list[str]:
    """Registry ids of the policies asked for: the ids themselves, or each agent's newest policy.

    Raises:
        NotFoundError: an agent has no trained policy (of that algorithm).
    """
    if model_ids is not None:
        return list(dict.fromkeys(model_ids))
    stored = registry.list(family="rl")
    out: list[str] = []
    for agent in agents or ():
        match = next((m for m in stored if m.metadata.get("agent") == agent
                      and (algorithm is None or m.metadata.get("algorithm") == algorithm)), None)
        if match is None:
            which = f"agent '{agent}'" + (f" with algorithm '{algorithm}'" if algorithm else "")
            raise NotFoundError(f"no trained policy for {which}; train one with POST /v1/rl/train",
                                details={"agent": agent, "algorithm": algorithm})
        out.append(match.model_id)
    return out


def _stored_gate(meta: dict[str, Any]) -> GateVerdict | None:
    raw = meta.get("gate")
    if raw is None:
        return None
    try:
        return GateVerdict.model_validate(raw)
    except ValidationError:
        return None


def _gated(agent: str, info: ModelInfo) -> GatedPolicy:
    gate = _stored_gate(info.metadata)
    if gate is None:
        reason = "no gate verdict recorded: the policy was trained before quality gates (retrain it to be judged)"
    elif gate.passed:
        reason = "passed its gate but is not deployed for this symbol"
    else:
        reason = f"failed its gate: {failed_checks_text(gate)}"
    return GatedPolicy(agent=agent, model_id=info.model_id, gate=gate, reason=reason)  # type: ignore[arg-type]


def select_deployed(registry: ModelRegistry, deployments: DeploymentStore, *, agents: Sequence[str],
                    algorithm: str | None, symbol: str) -> tuple[list[str], list[GatedPolicy]]:
    """Each agent's policy deployed for ``symbol``, and the agents whose policies are gated.

    An agent answers with the ``full`` version of ``rl-<agent>-<symbol>`` when that version is
    one of its policies for the symbol (``symbol`` matched without case, and of ``algorithm``
    when given). When it has policies for the symbol but none deployed, it is gated: listed
    with its newest policy and that policy's verdict.

    Raises:
        NotFoundError: an agent has no policy for the symbol (details name the agent and symbol).
    """
    stored = registry.list(family="rl")  # newest first
    wanted = symbol.strip().lower()
    ids: list[str] = []
    gated: list[GatedPolicy] = []
    for agent in agents:
        mine = [m for m in stored if m.metadata.get("agent") == agent
                and str(m.metadata.get("symbol") or "").strip().lower() == wanted
                and (algorithm is None or m.metadata.get("algorithm") == algorithm)]
        if not mine:
            which = f"agent '{agent}' on symbol '{symbol}'" + (f" with algorithm '{algorithm}'" if algorithm else "")
            raise NotFoundError(f"no trained policy for {which}; train one with POST /v1/rl/train",
                                details={"agent": agent, "symbol": symbol, "algorithm": algorithm})
        full = next((d for d in deployments.list(rl_deployment_name(agent, symbol)) if d.stage == "full"), None)
        if full is not None and full.model_id in {m.model_id for m in mine}:
            ids.append(full.model_id)
        else:
            gated.append(_gated(agent, mine[0]))
    return ids, gated


def policy_market(registry: ModelRegistry, bars: Bars, meta: dict[str, Any],
                  cache: dict[tuple[str | None, str], Market]) -> Market:
    """The market a stored policy observes on ``bars``: its regime model's filtered probabilities and its
    stored scaler (``cache`` shares one per regime model and scaler).

    Raises:
        ArtifactIntegrityError: the stored scaler is unusable, or the features differ from the policy's.
    """
    key = (meta.get("regime_model_id"), repr(meta.get("scaler")))
    market = cache.get(key)
    if market is None:
        regime_id = meta.get("regime_model_id")
        # the detector the policy observes through; a policy trained without one has no id
        detector = None if regime_id is None else adapter.rebuild(registry, regime_id, RegimeDetector)[0]
        try:
            scaler = FeatureScaler.from_dict(meta["scaler"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactIntegrityError(f"rl policy metadata has no usable scaler: {exc}") from exc
        market = prepare_market(bars, detector=detector, scaler=scaler)
        if list(market.feature_names) != list(meta.get("feature_names", [])):
            raise ArtifactIntegrityError(
                "the policy was trained on other features than this server computes",
                details={"expected": meta.get("feature_names"), "actual": list(market.feature_names)},
            )
        cache[key] = market
    return market


def _calendar(bars: Bars) -> int:
    """Bars per year of the bars' calendar (what every annualised figure uses).

    Raises:
        InvalidInputError: a spacing with no meaning per year (naming ``data.timestamps``).
    """
    ppy = bars_per_year(bars.times)
    if ppy is None:
        raise InvalidInputError(
            "cannot infer bars per year from these timestamps (irregular spacing over less than a year): send bars "
            "of one spacing (daily, hourly, weekly, monthly)",
            details=[{"loc": ["data", "timestamps"], "msg": "spacing has no meaning per year"}])
    return ppy


def _check_bars(n: int) -> None:
    if n < WARMUP + 2:
        raise InvalidInputError(
            f"data has {n} bars; policies observe {WARMUP}-bar features, so at least {WARMUP + 2} are needed",
            details=[{"loc": ["data", "timestamps"], "msg": f"need at least {WARMUP + 2} rows"}],
        )


def act(req: RLActRequest, registry: ModelRegistry, deployments: DeploymentStore | None = None,
        log: PredictionLog | None = None) -> RLActResponse:
    """Every selected policy's action at the last bar (each one logged on ``log``).

    With a ``symbol``, ``agents`` and no ``model_ids``, the policies deployed for the symbol
    answer (:func:`select_deployed`) and the gated agents are listed, not answered; every agent
    gated is a reply with no action.

    Raises:
        ModelNotReadyError: a symbol was asked for without a deployment store.
    """
    _check_bars(len(req.data))
    bars = bars_from_payload(req.data, min_rows=WARMUP + 2)
    gated: list[GatedPolicy] = []
    if req.symbol is not None and req.model_ids is None:
        if deployments is None:
            raise ModelNotReadyError("the deployment store is not open: cannot pick the policies deployed for "
                                     f"'{req.symbol}'")
        ids, gated = select_deployed(registry, deployments, agents=req.agents or (), algorithm=req.algorithm,
                                     symbol=req.symbol)
    else:
        ids = resolve_policies(registry, model_ids=req.model_ids, agents=req.agents, algorithm=req.algorithm)
    markets: dict[tuple[str | None, str], Market] = {}
    actions: list[RLAction] = []
    market: Market | None = None
    for model_id in ids:
        policy, info = load_policy(registry, model_id)
        market = policy_market(registry, bars, info.metadata, markets)
        answer = policy.answer(observation(market, len(bars) - 1, req.position))
        capture.rl_act(log, req, info, market, answer, bars.data_hash, bars.as_of)
        actions.append(RLAction(
            agent=info.metadata["agent"], model_id=info.model_id, model_version=info.version,
            algorithm=info.metadata["algorithm"], action=answer.action, action_label=answer.label,
            target_position=answer.target_position, probabilities=answer.probabilities, q_values=answer.q_values,
            action_std=answer.action_std,
        ))
    regime = market.labels[-1] if market is not None and market.regime_probs is not None else None
    return RLActResponse(
        model_id=None, model_version=None, method_used="rl_policy" if actions else "rl_policy_gated",
        fallback=False, data_hash=bars.data_hash, seed=None, as_of=bars.as_of, actions=actions, regime=regime,
        regime_probabilities=market.regime_probs if market is not None else None, gated=gated,
    )


def evaluate(req: RLEvaluateRequest, registry: ModelRegistry) -> RLEvaluateResponse:
    """Backtest the selected policies on the bars after ``start`` (or after their training span), and judge
    each by the quality gate on that span (the verdict is reported, nothing is deployed)."""
    _check_bars(len(req.data))
    bars = bars_from_payload(req.data, min_rows=WARMUP + 2)
    ppy = _calendar(bars)
    ids = resolve_policies(registry, model_ids=req.model_ids, agents=req.agents, algorithm=req.algorithm)
    loaded = [load_policy(registry, m) for m in ids]
    end = len(bars) - 1  # the last bar's forward return is unknown
    if req.start is not None:
        start = int(np.searchsorted(bars.times, as_naive_utc(req.start), side="left"))
    else:
        train_ends = [np.datetime64(info.metadata["train_end"], "us") for _, info in loaded]
        # the last training bar's position is the first one that earns a test-span return
        start = int(np.searchsorted(bars.times, max(train_ends), side="right")) - 1
    start = max(start, WARMUP)
    if end - start < MIN_TEST_BARS:
        raise InvalidInputError(
            f"the evaluation span has {max(end - start, 0)} bars; at least {MIN_TEST_BARS} are needed "
            "(send bars after the policies' training span, or an earlier start)",
            details=[{"loc": ["start"], "msg": f"need at least {MIN_TEST_BARS} bars to evaluate"}],
        )
    markets: dict[tuple[str | None, str], Market] = {}
    evaluations: list[RLEvaluation] = []
    bench: dict[str, BacktestMetrics] = {}
    bench_regimes: dict[str, dict[str, RegimeSlice]] = {}
    for policy, info in loaded:
        market = policy_market(registry, bars, info.metadata, markets)
        if not bench:
            bench, bench_regimes = benchmark_reports(market, start, end, cost_bps=req.cost_bps,
                                                     slippage_bps=req.slippage_bps)
        path = run_policy(policy, market, start, end + 1)  # the last bar's position too: it earns nothing here
        positions = path[:-1]
        agent = info.metadata["agent"]
        evaluation = evaluate_positions(agent, info.model_id, info.metadata["algorithm"], positions, market, start,
                                        end, cost_bps=req.cost_bps, slippage_bps=req.slippage_bps)
        verdict = gate_positions(agent, positions, market, start, end, cost_bps=req.cost_bps,
                                 slippage_bps=req.slippage_bps)
        evaluations.append(evaluation.model_copy(update={
            "gate": verdict, "positions": [float(p) for p in path] if req.include_positions else None}))
    iso = bars.iso()
    return RLEvaluateResponse(
        model_id=None, model_version=None, method_used="rl_backtest", fallback=False, data_hash=bars.data_hash,
        seed=None, as_of=bars.as_of, evaluations=evaluations,
        benchmarks={k: backtest_report(v) for k, v in bench.items()}, benchmark_regime_returns=bench_regimes,
        start=iso[start], end=iso[end], periods_per_year=ppy,
    )

