"""Training the specialized agents with stable-baselines3, as a job: several seeds, a small grid, a
validation split, one run kept per agent.

One job trains the requested agents one after another on the same prepared market. The
training span is split (:func:`~quantcrew.ml_server.services.rl.market.validation_index`):
the regime HMM, the feature scaler and every run are fitted on its first part only; its last
``validation_fraction`` (the validation bars) only chooses. Each agent is trained once per seed
and grid configuration (:func:`~quantcrew.ml_server.services.rl.search.plan_runs`), each run
with its own reward (scaled by the run's ``reward_scale``) and its own vectorised environment
(``n_envs`` copies, each with its own reward state). Each run's positions on the validation bars
are judged by the agent's gate and scored; the best-scoring run is kept (not refitted, see
:mod:`~quantcrew.ml_server.services.rl.search`), stored, and judged by the quality gate on the
out-of-sample test span. The test bars never take part in the choice: every run's test figures
are computed and reported (the spread between seeds) only after its score is fixed, and they
feed nothing. Progress (timesteps, the latest finished episode's reward) goes to the job record;
a cancel stops training at the next step.

The kept policy's verdict is stored with it (metadata ``"gate"``, and ``"search"``: every run's
validation score and test figures); a policy that passes, trained for a symbol, is deployed
stage ``full`` as ``rl-<agent>-<symbol lowercased>`` (retiring that name's previous full
version); one that fails stays in the registry and is not deployed, so the crew keeps the
policy that passed before, or its rule.

Reproducibility: the request's seed fixes the HMM restarts; each run's seed fixes its network's
initial weights, its exploration noise and every env's episode starts, so the same request
trains the same weights on the CPU. Torch's random generator is process-wide, so two jobs
running at once would interleave draws: the server runs one training job at a time by default
(``server.job_workers = 1``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from quantcrew.ml_server.fanout import TaskPool, Watch
from quantcrew.ml_server.jobs import JobCancelled, JobContext
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.common import ModelInfo
from quantcrew.ml_server.schemas.gate import GateVerdict
from quantcrew.ml_server.schemas.rl import (
    RLPolicyResult,
    RLSeedRun,
    RLTrainRequest,
    RLTrainResult,
    rl_deployment_name,
)
from quantcrew.ml_server.services import adapter
from quantcrew.ml_server.services.bars import Bars
from quantcrew.ml_server.services.deployment import DeploymentStore
from quantcrew.ml_server.services.monitor.reference import save_reference
from quantcrew.ml_server.services.regime.model import RegimeDetector
from quantcrew.ml_server.services.rl.backtest import backtest
from quantcrew.ml_server.services.rl.env import TradingEnv
from quantcrew.ml_server.services.rl.evaluation import (
    annualisation,
    backtest_report,
    benchmark_reports,
    evaluate_positions,
    gate_positions,
    run_policy,
    specialty_values,
)
from quantcrew.ml_server.services.rl.market import Market, bars_per_year, prepare_market, validation_index
from quantcrew.ml_server.services.rl.policy import PolicyModel
from quantcrew.ml_server.services.rl.rewards import make_reward
from quantcrew.ml_server.services.rl.search import RunSpec, choose, plan_runs, validation_score

__all__ = ["TrainingPlan", "deploy_if_passed", "train_agents"]

_REPORT_EVERY = 256  # callback calls between progress reports (the job throttles writes itself)

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class TrainingPlan:
    """A validated training request and its bars.

    Attributes:
        train_last: The last bar of the training span (fitting + validation).
        fit_last: The last bar the runs (and the scaler and regime model) are fitted on; the
            validation judges the positions chosen at ``fit_last..train_last-1``.
    """

    request: RLTrainRequest
    bars: Bars
    train_last: int
    compute_threads: int = 1
    pool: TaskPool = TaskPool()

    @property
    def fit_last(self) -> int:
        return validation_index(self.train_last, self.request.validation_fraction)


class _Progress(BaseCallback):
    """Reports timesteps and the latest episode reward; stops when the job is cancelled."""

    def __init__(self, report: Callable[[int, float | None], None], cancelled: Callable[[], bool]) -> None:
        super().__init__()
        self._report = report
        self._cancelled = cancelled
        self._calls = 0
        self.last_episode_reward: float | None = None

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", ()):
            episode = info.get("episode") if isinstance(info, dict) else None
            if episode is not None:
                self.last_episode_reward = float(episode["r"])
        self._calls += 1
        if self._calls % _REPORT_EVERY == 0:
            self._report(self.num_timesteps, self.last_episode_reward)
        return not self._cancelled()


def _env_factory(market: Market, agent: str, plan: TrainingPlan,
                 reward_scale: float = 1.0) -> Callable[[], Monitor[Any, Any]]:
    req = plan.request
    end = plan.fit_last

    def make() -> Monitor[Any, Any]:
        reward = make_reward(agent, price_z=market.price_z, reward_scale=reward_scale)
        env = TradingEnv(market.scaled, market.forward_returns, reward, start=market.warmup, end=end,
                         action_mode=req.action_mode, cost_bps=req.cost_bps, slippage_bps=req.slippage_bps,
                         episode_length=req.episode_length)
        return Monitor(env)

    return make


def _head(bars: Bars, last: int) -> Bars:
    """Bars ``0..last``."""
    k = last + 1
    return Bars(bars.timestamps[:k], bars.times[:k], bars.open[:k], bars.high[:k], bars.low[:k], bars.close[:k],
                None if bars.volume is None else bars.volume[:k], bars.data_hash)


def _fit_detector(plan: TrainingPlan) -> RegimeDetector | None:
    if not plan.request.regime_features:
        return None
    return RegimeDetector(seed=plan.request.seed).fit(_head(plan.bars, plan.fit_last))


def _store_detector(registry: ModelRegistry, detector: RegimeDetector, plan: TrainingPlan) -> str:
    iso = plan.bars.iso()
    info = adapter.store(registry, detector, name=f"{plan.request.name_prefix}-regime", metadata={
        "data_hash": plan.bars.data_hash, "data_start": iso[0], "data_end": iso[plan.fit_last],
        "n_bars": plan.fit_last + 1, "purpose": "rl observation"}, trigger=plan.request.trigger)
    return info.model_id


def deploy_if_passed(deployments: DeploymentStore | None, info: ModelInfo, *, agent: str, symbol: str | None,
                     verdict: GateVerdict) -> bool:
    """Deploy a stored policy that passed its gate as ``rl-<agent>-<symbol>``, stage ``full``.

    Returns whether it was deployed: not when it failed, when it was trained without a symbol,
    or without a deployment store (a training run outside the server).
    """
    if not verdict.passed or symbol is None or not symbol.strip() or deployments is None:
        return False
    deployments.set(model_id=info.model_id, name=rl_deployment_name(agent, symbol), version=info.version,
                    stage="full", action="train", reason="passed its training gate",
                    gate=verdict.model_dump(mode="json"))
    return True


@dataclass
class _Run:
    """One trained run, its test positions and its figures.

    ``weights`` is the trained policy's state dict as arrays: plain data, so that a run trained
    in a Ray task comes back without pickling a policy (:func:`_policy` rebuilds it).
    """

    spec: RunSpec
    record: RLSeedRun
    positions: FloatArray
    weights: dict[str, npt.NDArray[Any]]
    last_episode_reward: float | None


@dataclass(frozen=True)
class _Search:
    """What every run of one agent reads (put into Ray's object store once when runs are tasks)."""

    plan: TrainingPlan
    market: Market
    agent: str
    spans: _Spans


def _new_policy(plan: TrainingPlan, market: Market, spec: RunSpec) -> PolicyModel:
    req = plan.request
    return PolicyModel(algorithm=req.algorithm, action_mode=req.action_mode, obs_dim=market.scaled.shape[1] + 1,
                       seed=spec.seed, learning_rate=spec.learning_rate, ent_coef=spec.ent_coef)


def _policy(plan: TrainingPlan, market: Market, run: _Run) -> PolicyModel:
    """The run's trained policy, rebuilt from its weights (as a stored policy is rebuilt from the registry)."""
    return _new_policy(plan, market, run.spec).load_state({k: torch.tensor(v) for k, v in run.weights.items()})


@dataclass(frozen=True)
class _Spans:
    """The bars a job works on: fitting ends at ``fit_last``, validation ``fit_last..train_last-1``, test
    ``train_last..end-1``; ``val_ppy`` is counted on the training bars only."""

    fit_last: int
    train_last: int
    end: int
    val_ppy: int
    test_ppy: int


def _train_run(search: _Search, spec: RunSpec, watch: Watch) -> _Run:
    """One run: train, then judge on the validation bars and figure on the test bars (a piece of the job)."""
    plan, market, agent, spans = search.plan, search.market, search.agent, search.spans
    req = plan.request
    env = DummyVecEnv([_env_factory(market, agent, plan, spec.reward_scale) for _ in range(req.n_envs)])
    policy = _new_policy(plan, market, spec)
    callback = _Progress(watch.report, watch.cancelled)
    began = time.perf_counter()
    policy.fit(env, timesteps=req.timesteps, callback=callback)
    seconds = time.perf_counter() - began
    env.close()
    if watch.cancelled():
        raise JobCancelled(f"cancelled while training {agent} (seed {spec.seed})")
    costs = {"cost_bps": req.cost_bps, "slippage_bps": req.slippage_bps}
    # the validation first: its score is fixed before any test bar is looked at
    val_positions = run_policy(policy, market, spans.fit_last, spans.train_last)
    val_verdict = gate_positions(agent, val_positions, market, spans.fit_last, spans.train_last,
                                 periods_per_year=spans.val_ppy, **costs)
    score = validation_score(val_verdict)
    val_sharpe = next(c.value for c in val_verdict.checks if c.name == "sharpe_above_buy_and_hold")
    val_special = next(c.value for c in val_verdict.checks if c.name == "specialty_above_buy_and_hold")
    # the test figures: reported beside the score, never used by the choice
    positions = run_policy(policy, market, spans.train_last, spans.end)
    fwd = market.forward_returns[spans.train_last:spans.end]
    metrics, net = backtest(positions, fwd, periods_per_year=spans.test_ppy, **costs)
    bh_metrics, bh_net = backtest(np.ones(spans.end - spans.train_last), fwd, periods_per_year=spans.test_ppy,
                                  **costs)
    special, _, better = specialty_values(agent, net, bh_net, market.labels[spans.train_last:spans.end],
                                         spans.test_ppy)
    record = RLSeedRun(
        seed=spec.seed, learning_rate=spec.learning_rate, ent_coef=spec.ent_coef, reward_scale=spec.reward_scale,
        validation_score=score, validation_sharpe=float(val_sharpe or 0.0), validation_specialty=val_special,
        test_sharpe=metrics.sharpe, test_total_return=metrics.total_return, test_specialty=special,
        test_beats_buy_and_hold=better and metrics.sharpe > bh_metrics.sharpe, chosen=False,
        train_seconds=round(seconds, 3),
    )
    weights = {k: v.detach().cpu().numpy() for k, v in policy.state_.items()}
    return _Run(spec, record, positions, weights, callback.last_episode_reward)


def _search(search: _Search, ctx: JobContext,
            report_at: Callable[[int, int, float | None], None]) -> tuple[_Run, list[RLSeedRun], str]:
    """Every run of one agent (as Ray tasks when the pool can); the chosen run, every run's record (the chosen
    one marked) and where the runs trained."""
    timesteps = search.plan.request.timesteps

    def finished(k: int, run: _Run) -> None:
        report_at(k, timesteps, run.last_episode_reward)

    runs, where = search.plan.pool.map(_train_run, search, plan_runs(search.plan.request),
                                       cancelled=lambda: ctx.cancelled, progress=report_at, finished=finished)
    chosen = choose([r.record.validation_score for r in runs])
    records = [r.record.model_copy(update={"chosen": i == chosen}) for i, r in enumerate(runs)]
    return runs[chosen], records, where


def train_agents(plan: TrainingPlan, registry: ModelRegistry, ctx: JobContext,
                 deployments: DeploymentStore | None = None) -> dict[str, Any]:
    """The job: for every requested agent, train every run, keep the validation-best, store, evaluate and gate it;
    returns an :class:`RLTrainResult` dict.

    A policy that passes its gate is deployed in ``deployments`` (when given, and the request
    names a symbol).

    Raises:
        JobCancelled: the job was cancelled; agents finished before it stay stored.
    """
    req = plan.request
    torch.set_num_threads(max(plan.compute_threads, 1))
    n_runs = req.runs
    total = req.timesteps * n_runs * len(req.agents)
    ctx.report(done=0, total=total, message="fitting the regime model on the fitting bars")
    fit_last = plan.fit_last
    detector = _fit_detector(plan)
    regime_model_id = _store_detector(registry, detector, plan) if detector is not None else None
    market = prepare_market(plan.bars, detector=detector, train_last=fit_last)
    test_ppy = annualisation(market)
    spans = _Spans(fit_last, plan.train_last, len(plan.bars) - 1,
                   bars_per_year(plan.bars.times[: plan.train_last + 1]) or test_ppy, test_ppy)
    start, end = plan.train_last, spans.end  # positions from the last training bar on earn test returns
    bench, bench_regimes = benchmark_reports(market, start, end, cost_bps=req.cost_bps, slippage_bps=req.slippage_bps)
    iso = plan.bars.iso()
    policies: list[RLPolicyResult] = []
    for a, agent in enumerate(req.agents):

        def report_at(k: int, done: int, reward: float | None, _a: int = a, _agent: str = agent) -> None:
            offset = (_a * n_runs + k) * req.timesteps
            ctx.report(done=offset + min(done, req.timesteps), total=total,
                       message=f"training {_agent} (run {k + 1} of {n_runs})",
                       metrics={} if reward is None else {"episode_reward": reward})

        began = time.perf_counter()
        chosen, records, where = _search(_Search(plan, market, agent, spans), ctx, report_at)
        wall = round(time.perf_counter() - began, 3)
        policy = _policy(plan, market, chosen)
        evaluation = evaluate_positions(agent, "pending", req.algorithm, chosen.positions, market, start, end,
                                        cost_bps=req.cost_bps, slippage_bps=req.slippage_bps)
        verdict = gate_positions(agent, chosen.positions, market, start, end, cost_bps=req.cost_bps,
                                 slippage_bps=req.slippage_bps)
        evaluation = evaluation.model_copy(update={"gate": verdict})
        seconds = round(sum(r.train_seconds for r in records), 3)
        spec = chosen.spec
        search = {"runs": [r.model_dump(mode="json") for r in records], "configurations": len(records),
                  "trained_on": where, "wall_seconds": wall, "seeds": req.seeds,
                  "grid": req.grid.model_dump(mode="json"),
                  "validation_fraction": req.validation_fraction, "fit_end": iso[fit_last],
                  "validation_start": iso[fit_last], "validation_end": iso[plan.train_last]}
        # the observation pipeline (features, scaler, regime model) and the provenance; the
        # policy itself adds what rebuilding it needs (algorithm, action mode, network, obs size)
        metadata: dict[str, Any] = {
            "agent": agent, "reward": agent, "feature_names": list(market.feature_names),
            "scaler": market.scaler.to_dict(), "regime_model_id": regime_model_id, "seed": spec.seed,
            "timesteps": req.timesteps, "n_envs": req.n_envs, "episode_length": req.episode_length,
            "learning_rate": spec.learning_rate, "ent_coef": spec.ent_coef, "reward_scale": spec.reward_scale,
            "cost_bps": req.cost_bps, "slippage_bps": req.slippage_bps,
            "symbol": req.symbol, "data_hash": plan.bars.data_hash, "train_start": iso[0],
            "train_end": iso[plan.train_last], "test_start": iso[start + 1], "test_end": iso[end],
            "periods_per_year": test_ppy, "train_seconds": seconds,
            "last_episode_reward": chosen.last_episode_reward, "search": search,
            "evaluation": evaluation.model_dump(mode="json", exclude={"model_id", "gate"}),
            "gate": verdict.model_dump(mode="json"),
        }
        info = adapter.store(registry, policy, name=f"{req.name_prefix}-{agent}-{req.algorithm}", metadata=metadata,
                             trigger=req.trigger)
        # drift: the scaled feature rows it trained on, the positions it took out of sample (what the log records)
        save_reference(registry.db_path, info.model_id, "rl", market.feature_names,
                       market.scaled[market.warmup:plan.train_last + 1], np.asarray(chosen.positions).ravel())
        deployed = deploy_if_passed(deployments, info, agent=agent, symbol=req.symbol, verdict=verdict)
        policies.append(RLPolicyResult(
            agent=agent, model_id=info.model_id, model_version=info.version, name=info.name,
            algorithm=req.algorithm, sha256=info.sha256, seed=spec.seed, timesteps=req.timesteps,
            train_seconds=seconds, train_start=iso[0], train_end=iso[plan.train_last],
            evaluation=evaluation.model_copy(update={"model_id": info.model_id}), gate=verdict, runs=records,
            configurations=len(records), reward_scale=spec.reward_scale, learning_rate=spec.learning_rate,
            ent_coef=spec.ent_coef, deployed=deployed,
        ))
    result = RLTrainResult(
        policies=policies, regime_model_id=regime_model_id, train_start=iso[0], train_end=iso[plan.train_last],
        validation_start=iso[fit_last], test_start=iso[start + 1], test_end=iso[end], periods_per_year=test_ppy,
        benchmarks={name: backtest_report(m) for name, m in bench.items()}, benchmark_regime_returns=bench_regimes,
        data_hash=plan.bars.data_hash,
    )
    ctx.report(done=total, total=total, message="done")
    return result.model_dump(mode="json")
