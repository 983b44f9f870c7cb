"""Everything the crew consults, trained once per symbol and data span: the plan behind ``quantcrew setup``.

Per symbol, three jobs run on the ML server, one after the other (the server runs one job at a
time on a laptop anyway):

1. ``rl``: the four specialised RL agents, each trained over several seeds and reward scales on
   the first part of the bars, the run kept chosen on the validation bars that end the training
   span, and judged by its quality gate (in its own regime) on the rest (a policy that fails
   stays in the registry, unused);
2. ``ensemble``: the LSTM + Transformer ensemble (walk-forward) and its execution network, each
   judged by its own gate;
3. ``bandit``: the meta-orchestrator's bandit, warm-started by replaying the four agents over
   the bars after the latest training end (bars none of them was trained on), rewarded by the
   returns they earned.

A job whose models already exist for the same symbol and data (same data hash, judged by a
gate) is skipped unless ``force``; the replay is idempotent on the server (a second replay of
the same policies over the same span is refused there), so a re-run never rewards twice.

Nothing here prints: :func:`run_plan` reports through callbacks, so the CLI draws progress bars
and tests watch the same events.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from quantcrew.data.loaders import to_payload_dict
from quantcrew.data.ohlcv import OHLCV
from quantcrew.ml_server.schemas.common import ModelInfo
from quantcrew.ml_server.schemas.ensemble import EnsembleTrainRequest
from quantcrew.ml_server.schemas.jobs import JobInfo
from quantcrew.ml_server.schemas.rl import RL_AGENTS, RLTrainRequest
from quantcrew.tools.client import MLClient
from quantcrew.tools.errors import Conflict

__all__ = [
    "BANDIT_NAME",
    "MIN_SETUP_BARS",
    "SetupDefaults",
    "SetupJob",
    "SetupReport",
    "plan_jobs",
    "run_plan",
]

BANDIT_NAME = "meta-orchestrator"
"""The bandit the crew's agent selection uses (the tool's default name)."""

MIN_SETUP_BARS = 750
"""Fewest bars a symbol needs for setup: 70% to train the agents on, 30% to judge and replay them."""

JobKind = Literal["rl", "ensemble", "bandit"]
Status = Literal["planned", "skipped", "running", "succeeded", "failed", "cancelled", "out_of_budget"]


@dataclass(frozen=True)
class SetupDefaults:
    """Training sizes that fit a 2-core laptop inside the default time budget.

    RL: every agent is trained ``seeds x len(reward_scales)`` times (6 runs of ``timesteps``
    steps, four PPO rollouts each), on ``n_envs`` environment copies (16: fewer, larger forward
    passes per step), and the run best on the validation bars is kept. Measured on a 2-core
    machine, back to back: the RL job for one symbol (SP500, 5,031 daily bars) took 101 s
    against 73 s for the former plan (one seed, 20,000 steps, 4 envs), 1.38x; setup as a whole
    stays under its 10 minutes (517 s of 600 measured for SP500 and NASDAQ).
    """

    timesteps: int = 8_192
    seeds: int = 3
    reward_scales: tuple[float, ...] = (0.5, 2.0)
    n_envs: int = 16
    validation_fraction: float = 0.25
    algorithm: str = "ppo"
    epochs: int = 12
    members: int = 2
    folds: int = 3
    seed: int = 0
    cost_bps: float = 1.0
    slippage_bps: float = 1.0


@dataclass
class SetupJob:
    """One job of the plan and what became of it."""

    symbol: str
    kind: JobKind
    request: Any = None  # the train request; None for the bandit (built once the policies exist)
    data_hash: str = ""
    status: Status = "planned"
    job_id: str | None = None
    seconds: float = 0.0
    detail: str = ""
    result: Any = None
    models: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return {"rl": "RL agents", "ensemble": "ensemble + execution", "bandit": "bandit warm start"}[self.kind]


@dataclass
class SetupReport:
    """The jobs of a setup run, in order."""

    jobs: list[SetupJob]
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        """Every job trained or skipped (nothing failed, was cancelled or ran out of time)."""
        return not self.interrupted and all(j.status in ("succeeded", "skipped") for j in self.jobs)


def plan_jobs(bars_by_symbol: dict[str, OHLCV], models: Sequence[ModelInfo], *, defaults: SetupDefaults,
              force: bool = False) -> list[SetupJob]:
    """The jobs setup runs, each marked ``skipped`` when its models exist for that symbol and data.

    Raises:
        ValueError: a symbol has fewer than :data:`MIN_SETUP_BARS` bars, or a request is invalid
            (the message names the symbol).
    """
    jobs: list[SetupJob] = []
    for symbol, bars in bars_by_symbol.items():
        if len(bars) < MIN_SETUP_BARS:
            raise ValueError(f"{symbol}: {len(bars)} bars up to the as-of date; setup needs at least "
                             f"{MIN_SETUP_BARS} (70% to train the agents, 30% to judge and replay them)")
        payload = to_payload_dict(bars)
        try:
            rl = RLTrainRequest.model_validate({
                "data": payload, "symbol": symbol, "agents": list(RL_AGENTS), "algorithm": defaults.algorithm,
                "timesteps": defaults.timesteps, "seed": defaults.seed, "seeds": defaults.seeds,
                "grid": {"reward_scale": list(defaults.reward_scales)}, "n_envs": defaults.n_envs,
                "validation_fraction": defaults.validation_fraction, "cost_bps": defaults.cost_bps,
                "slippage_bps": defaults.slippage_bps})
            ensemble = EnsembleTrainRequest.model_validate({
                "data": payload, "symbol": symbol, "folds": defaults.folds, "members": defaults.members,
                "epochs": defaults.epochs, "seed": defaults.seed})
        except ValueError as exc:
            raise ValueError(f"{symbol}: {exc}") from exc
        digest = _data_hash(bars)
        rl_job = SetupJob(symbol, "rl", rl, digest)
        rl_ids = _trained(models, "rl", symbol, digest)
        if not force and {m.metadata.get("agent") for m in rl_ids} >= set(RL_AGENTS):
            rl_job.status, rl_job.detail = "skipped", "already trained on this data (--force retrains)"
            rl_job.models = _newest_per_agent(rl_ids)
        ens_job = SetupJob(symbol, "ensemble", ensemble, digest)
        ens_ids = _trained(models, "ensemble", symbol, digest)
        if not force and ens_ids:
            ens_job.status, ens_job.detail = "skipped", "already trained on this data (--force retrains)"
            ens_job.models = [ens_ids[0].model_id]
        jobs += [rl_job, ens_job, SetupJob(symbol, "bandit", None, digest)]
    return jobs


def _data_hash(bars: OHLCV) -> str:
    """The data hash the server records for these bars (same payload, same hash)."""
    from quantcrew.data.loaders import payload_hash

    return payload_hash(bars)


def _trained(models: Sequence[ModelInfo], family: str, symbol: str, digest: str) -> list[ModelInfo]:
    """Models of ``family`` trained on exactly these bars and judged by a gate, newest first."""
    found = [m for m in models if m.family == family and str(m.metadata.get("symbol") or "").upper() == symbol.upper()
             and m.metadata.get("data_hash") == digest and "gate" in m.metadata]
    return sorted(found, key=lambda m: m.created_at, reverse=True)


def _newest_per_agent(models: Sequence[ModelInfo]) -> list[str]:
    seen: dict[str, str] = {}
    for m in models:  # newest first
        seen.setdefault(str(m.metadata.get("agent")), m.model_id)
    return [seen[a] for a in RL_AGENTS if a in seen]


def run_plan(client: MLClient, jobs: list[SetupJob], *, budget_s: float, bars_by_symbol: dict[str, OHLCV],
             on_progress: Callable[[SetupJob, JobInfo | None], None] | None = None,
             poll_s: float = 0.5, reset_bandit: bool = False) -> SetupReport:
    """Run the planned jobs one after the other within ``budget_s`` seconds.

    A job still running at the deadline is cancelled; later ones are marked ``out_of_budget``.
    Ctrl-C cancels the running job, marks the rest ``cancelled`` and re-raises; completed models
    stay in the registry and are used.
    """
    from quantcrew.ml_server.schemas.bandit import BanditReplayRequest

    started = time.monotonic()
    deadline = started + budget_s
    report = SetupReport(jobs)
    notify = on_progress or (lambda job, info: None)
    if reset_bandit:
        _reset_bandit(client)
    current: SetupJob | None = None
    try:
        for job in jobs:
            if job.status == "skipped":
                notify(job, None)
                continue
            if time.monotonic() >= deadline:
                job.status, job.detail = "out_of_budget", f"not started: the {budget_s / 60:.0f}-minute budget ran out"
                notify(job, None)
                continue
            current = job
            job.status = "running"
            t0 = time.monotonic()
            if job.kind == "rl":
                info = client.rl_train(job.request)
            elif job.kind == "ensemble":
                info = client.ensemble_train(job.request)
            else:
                policies = next((j.models for j in jobs if j.symbol == job.symbol and j.kind == "rl"), [])
                if len(policies) < len(RL_AGENTS):
                    job.status, job.detail = "failed", "no policy for every agent to replay (the RL job did not finish)"
                    notify(job, None)
                    continue
                request = BanditReplayRequest.model_validate({
                    "bandit": BANDIT_NAME, "symbol": job.symbol, "model_ids": policies,
                    "data": to_payload_dict(bars_by_symbol[job.symbol])})
                try:
                    info = client.bandit_replay(request)
                except Conflict as exc:  # this replay was done already: its rewards are in the bandit
                    job.status, job.detail = "skipped", f"already replayed ({exc.message})"
                    job.seconds = time.monotonic() - t0
                    notify(job, None)
                    continue
            job.job_id = info.job_id
            final = _follow(client, job, info, deadline, poll_s, notify)
            job.seconds = time.monotonic() - t0
            _finish(job, final)
            notify(job, final)
            current = None
    except KeyboardInterrupt:
        report.interrupted = True
        if current is not None and current.job_id is not None:
            _cancel(client, current.job_id)
            current.status, current.detail = "cancelled", "cancelled by Ctrl-C"
        for job in jobs:
            if job.status == "planned":
                job.status, job.detail = "cancelled", "not started (Ctrl-C)"
        raise
    finally:
        report.seconds = time.monotonic() - started
    return report


def _follow(client: MLClient, job: SetupJob, info: JobInfo, deadline: float, poll_s: float,
            notify: Callable[[SetupJob, JobInfo | None], None]) -> JobInfo:
    while info.status in ("queued", "running"):
        notify(job, info)
        if time.monotonic() >= deadline:
            _cancel(client, info.job_id)
            info = client.get_job(info.job_id)
            job.status = "out_of_budget"
            return info
        time.sleep(poll_s)
        info = client.get_job(info.job_id)
    return info


def _finish(job: SetupJob, info: JobInfo) -> None:
    if job.status == "out_of_budget":
        job.detail = "cancelled at the time budget (earlier models are intact)"
        return
    if info.status != "succeeded":
        job.status = "cancelled" if info.status == "cancelled" else "failed"
        job.detail = info.error.message if info.error is not None else info.status
        return
    job.status, job.result = "succeeded", info.result
    result = info.result if isinstance(info.result, dict) else {}
    if job.kind == "rl":
        policies = result.get("policies", [])
        job.models = [p["model_id"] for p in policies]
        job.detail = "; ".join(_rl_line(p) for p in policies)
    elif job.kind == "ensemble":
        job.models = [result.get("model", {}).get("model_id", "")]
        job.detail = _ensemble_line(result)
    else:
        job.detail = _replay_line(result)


def _verdict(gate: dict[str, Any] | None) -> str:
    if not gate:
        return "no gate verdict"
    return ("PASSED" if gate.get("passed") else "gated") + f" ({gate.get('summary', '')})"


def _rl_line(policy: dict[str, Any]) -> str:
    return f"{policy.get('agent')}: {_verdict(policy.get('gate'))}"


def _ensemble_line(result: dict[str, Any]) -> str:
    text = f"ensemble: {_verdict(result.get('gate'))}"
    if result.get("execution_gate") is not None:
        text += f"; execution: {_verdict(result.get('execution_gate'))}"
    return text


def _replay_line(result: dict[str, Any]) -> str:
    bars = result.get("bars", "?")
    regret = result.get("regret")
    best = result.get("best_agent")
    tail = f"; regret vs best agent ({best}) {regret:+.4f}" if isinstance(regret, (int, float)) else ""
    return f"replayed {bars} bars{tail}"


def _cancel(client: MLClient, job_id: str) -> None:
    with contextlib.suppress(Conflict):  # it finished in the meantime
        client.cancel_job(job_id)


def _reset_bandit(client: MLClient) -> None:
    from quantcrew.tools.errors import NotFound

    with contextlib.suppress(NotFound):
        client.bandit_reset(BANDIT_NAME)
