"""Training the specialized agents with stable-baselines3, as a job.

One job trains the requested agents one after another on the same prepared market: the
regime HMM and the feature scaler are fitted once, on the training bars only, and stored
with the policies. Each agent gets its own reward and its own vectorised environment
(``n_envs`` copies, each with its own reward state). Progress (timesteps, the latest finished
episode's reward) goes to the job record; a cancel stops training at the next step.

Every trained policy is judged by the quality gate on the out-of-sample test span (the same
positions, returns and costs as its evaluation). The verdict is stored with it (metadata
``"gate"``); a policy that passes, trained for a symbol, is deployed stage ``full`` as
``rl-<agent>-<symbol lowercased>`` (retiring that name's previous full version); one that fails
stays in the registry and is not deployed, so the crew keeps the policy that passed before, or
its rule.

Reproducibility: the seed fixes the HMM restarts, the networks' initial weights, the
exploration noise and every env's episode starts, so the same request trains the same
weights on the CPU. Torch's random generator is process-wide, so two jobs running at once
would interleave draws: the server runs one training job at a time by default
(``server.job_workers = 1``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from quantcrew.ml_server.jobs import JobCancelled, JobContext
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.common import ModelInfo
from quantcrew.ml_server.schemas.gate import GateVerdict
from quantcrew.ml_server.schemas.rl import RLPolicyResult, RLTrainRequest, RLTrainResult, rl_deployment_name
from quantcrew.ml_server.services import adapter
from quantcrew.ml_server.services.bars import Bars
from quantcrew.ml_server.services.deployment import DeploymentStore
from quantcrew.ml_server.services.regime.model import RegimeDetector
from quantcrew.ml_server.services.rl.env import TradingEnv
from quantcrew.ml_server.services.rl.evaluation import (
    backtest_report,
    benchmark_reports,
    evaluate_positions,
    gate_positions,
    run_policy,
)
from quantcrew.ml_server.services.rl.market import Market, prepare_market
from quantcrew.ml_server.services.rl.policy import PolicyModel
from quantcrew.ml_server.services.rl.rewards import make_reward

__all__ = ["TrainingPlan", "deploy_if_passed", "train_agents"]

_REPORT_EVERY = 256  # callback calls between progress reports (the job throttles writes itself)


@dataclass(frozen=True)
class TrainingPlan:
    """A validated training request and its bars."""

    request: RLTrainRequest
    bars: Bars
    train_last: int
    compute_threads: int = 1


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


def _env_factory(market: Market, agent: str, plan: TrainingPlan) -> Callable[[], Monitor[Any, Any]]:
    req = plan.request

    def make() -> Monitor[Any, Any]:
        env = TradingEnv(market.scaled, market.forward_returns, make_reward(agent, price_z=market.price_z),
                         start=market.warmup, end=plan.train_last, action_mode=req.action_mode,
                         cost_bps=req.cost_bps, slippage_bps=req.slippage_bps, episode_length=req.episode_length)
        return Monitor(env)

    return make


def _fit_detector(plan: TrainingPlan) -> RegimeDetector | None:
    if not plan.request.regime_features:
        return None
    train = plan.bars
    sliced = Bars(train.timestamps[: plan.train_last + 1], train.times[: plan.train_last + 1],
                  train.open[: plan.train_last + 1], train.high[: plan.train_last + 1],
                  train.low[: plan.train_last + 1], train.close[: plan.train_last + 1],
                  None if train.volume is None else train.volume[: plan.train_last + 1], train.data_hash)
    return RegimeDetector(seed=plan.request.seed).fit(sliced)


def _store_detector(registry: ModelRegistry, detector: RegimeDetector, plan: TrainingPlan) -> str:
    iso = plan.bars.iso()
    info = adapter.store(registry, detector, name=f"{plan.request.name_prefix}-regime", metadata={
        "data_hash": plan.bars.data_hash, "data_start": iso[0], "data_end": iso[plan.train_last],
        "n_bars": plan.train_last + 1, "purpose": "rl observation"})
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
                    stage="full")
    return True


def train_agents(plan: TrainingPlan, registry: ModelRegistry, ctx: JobContext,
                 deployments: DeploymentStore | None = None) -> dict[str, Any]:
    """The job: train, store, evaluate and gate every requested agent; returns an :class:`RLTrainResult` dict.

    A policy that passes its gate is deployed in ``deployments`` (when given, and the request
    names a symbol).

    Raises:
        JobCancelled: the job was cancelled; policies finished before it stay stored.
    """
    req = plan.request
    torch.set_num_threads(max(plan.compute_threads, 1))
    total = req.timesteps * len(req.agents)
    ctx.report(done=0, total=total, message="fitting the regime model on the training bars")
    detector = _fit_detector(plan)
    regime_model_id = _store_detector(registry, detector, plan) if detector is not None else None
    market = prepare_market(plan.bars, detector=detector, train_last=plan.train_last)
    start, end = plan.train_last, len(plan.bars) - 1  # positions from the last training bar on earn test returns
    bench, bench_regimes = benchmark_reports(market, start, end, cost_bps=req.cost_bps, slippage_bps=req.slippage_bps)
    iso = plan.bars.iso()
    policies: list[RLPolicyResult] = []
    for k, agent in enumerate(req.agents):
        offset = k * req.timesteps

        def report(done: int, reward: float | None, _offset: int = offset, _agent: str = agent) -> None:
            ctx.report(done=_offset + min(done, req.timesteps), total=total, message=f"training {_agent}",
                       metrics={} if reward is None else {"episode_reward": reward})

        env = DummyVecEnv([_env_factory(market, agent, plan) for _ in range(req.n_envs)])
        policy = PolicyModel(algorithm=req.algorithm, action_mode=req.action_mode,
                             obs_dim=market.scaled.shape[1] + 1, seed=req.seed, learning_rate=req.learning_rate)
        callback = _Progress(report, lambda: ctx.cancelled)
        began = time.perf_counter()
        policy.fit(env, timesteps=req.timesteps, callback=callback)
        seconds = time.perf_counter() - began
        env.close()
        if ctx.cancelled:
            raise JobCancelled(f"cancelled while training {agent}; {len(policies)} policies were stored before")
        positions = run_policy(policy, market, start, end)
        evaluation = evaluate_positions(
            agent, "pending", req.algorithm, positions, market, start, end,
            cost_bps=req.cost_bps, slippage_bps=req.slippage_bps, bench=bench, bench_regimes=bench_regimes,
        )
        verdict = gate_positions(agent, positions, market, start, end, cost_bps=req.cost_bps,
                                 slippage_bps=req.slippage_bps, evaluation=evaluation, bench=bench,
                                 bench_regimes=bench_regimes)
        evaluation = evaluation.model_copy(update={"gate": verdict})
        # the observation pipeline (features, scaler, regime model) and the provenance; the
        # policy itself adds what rebuilding it needs (algorithm, action mode, network, obs size)
        metadata: dict[str, Any] = {
            "agent": agent, "reward": agent, "feature_names": list(market.feature_names),
            "scaler": market.scaler.to_dict(), "regime_model_id": regime_model_id, "seed": req.seed,
            "timesteps": req.timesteps, "n_envs": req.n_envs, "episode_length": req.episode_length,
            "learning_rate": req.learning_rate, "cost_bps": req.cost_bps, "slippage_bps": req.slippage_bps,
            "symbol": req.symbol, "data_hash": plan.bars.data_hash, "train_start": iso[0],
            "train_end": iso[plan.train_last], "test_start": iso[start + 1], "test_end": iso[end],
            "train_seconds": round(seconds, 3), "last_episode_reward": callback.last_episode_reward,
            "evaluation": evaluation.model_dump(mode="json", exclude={"model_id", "gate"}),
            "gate": verdict.model_dump(mode="json"),
        }
        info = adapter.store(registry, policy, name=f"{req.name_prefix}-{agent}-{req.algorithm}", metadata=metadata)
        deployed = deploy_if_passed(deployments, info, agent=agent, symbol=req.symbol, verdict=verdict)
        policies.append(RLPolicyResult(
            agent=agent, model_id=info.model_id, model_version=info.version, name=info.name,
            algorithm=req.algorithm, sha256=info.sha256, seed=req.seed, timesteps=req.timesteps,
            train_seconds=round(seconds, 3), train_start=iso[0], train_end=iso[plan.train_last],
            evaluation=evaluation.model_copy(update={"model_id": info.model_id}), gate=verdict, deployed=deployed,
        ))
        report(req.timesteps, callback.last_episode_reward)
    result = RLTrainResult(
        policies=policies, regime_model_id=regime_model_id, train_start=iso[0], train_end=iso[plan.train_last],
        test_start=iso[start + 1], test_end=iso[end],
        benchmarks={name: backtest_report(m) for name, m in bench.items()}, benchmark_regime_returns=bench_regimes,
        data_hash=plan.bars.data_hash,
    )
    ctx.report(done=total, total=total, message="done")
    return result.model_dump(mode="json")
