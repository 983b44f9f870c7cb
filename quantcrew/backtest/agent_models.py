"""The four agents' targets in a walk-forward: their transparent rules, or the crew's trained RL policies.

``agents="rules"``: each agent's target at bar ``t`` is its rule
(:func:`quantcrew.tools.fallbacks.rule_positions`, closes ``<= t``), what the strategy tool
answers with when no policy is trained.

``agents="models"``: the RL policies, retrained on an EXPANDING window as server jobs, the way
the crew gets them from ``quantcrew setup``. The span is cut into windows of ``retrain_every``
bars (default: a year of the data's calendar). For window ``k`` starting at bar ``w``:

1. the four agents are trained on the bars before ``w`` only (``POST /v1/rl/train``; the job
   chooses each agent's run on its validation bars and judges it by the quality gate on the
   last part of those bars, as setup does);
2. each policy's position at every bar of the window comes from ``POST /v1/rl/evaluate`` over
   the bars up to the window's end (the position at ``t`` sees bars ``<= t``; the policy never
   saw a bar of the window in training);
3. an agent whose policy failed its gate answers with its rule for that window, as it does
   live (the crew's strategy tool does the same), and the window says so.

Policies are cached in the server's registry: each window's are named after the symbol and a
hash of the training settings (``wf-<symbol>-<hash>-<agent>-<algorithm>``) and carry the hash
of the bars they were trained on, so a rerun, or a longer run over the same history, finds them
and trains nothing. They are trained WITHOUT a symbol, so nothing is deployed: the crew's live
policies are never replaced by a backtest's. A time budget bounds the training: a job still
running at the deadline is cancelled and the run stops with :class:`ModelBudgetError`; windows
trained so far stay cached and a rerun resumes after them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from quantcrew.backtest.walk_forward_data import BacktestInputError
from quantcrew.data.loaders import payload_hash, to_payload_dict
from quantcrew.data.ohlcv import OHLCV
from quantcrew.tools.fallbacks import STRATEGY_AGENTS, rule_positions

if TYPE_CHECKING:
    from quantcrew.ml_server.schemas.common import ModelInfo
    from quantcrew.ml_server.schemas.jobs import JobInfo
    from quantcrew.tools.client import MLClient

__all__ = [
    "AGENT_KINDS",
    "AgentPlan",
    "AgentWindow",
    "ModelBudgetError",
    "ModelSettings",
    "model_plan",
    "progress_teller",
    "rule_plan",
    "settings_key",
    "wait_within",
    "window_starts",
]

FloatArray = npt.NDArray[np.float64]
AgentKind = Literal["rules", "models"]
AGENT_KINDS = ("rules", "models")
ProgressCallback = Callable[[int, int, str], None]

_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
_MIN_WINDOW = 21  # the server evaluates at least 20 bars


class ModelBudgetError(RuntimeError):
    """The time budget for training the walk-forward's models ran out (the windows trained stay cached)."""


@dataclass(frozen=True)
class ModelSettings:
    """How each window's policies are trained (a change is a new cache key and a new trial).

    Attributes:
        timesteps: Environment steps of each run (agent x seed x configuration).
        seeds: Seeds per configuration (the run kept is chosen on validation bars).
        algorithm: ``ppo``, ``a2c`` or ``dqn``.
        reward_scales: The reward scales tried per seed (chosen on validation bars).
        n_envs: Environment copies per run.
        cost_bps: Costs the policies are trained and judged with.
    """

    timesteps: int = 8_192
    seeds: int = 1
    algorithm: str = "ppo"
    reward_scales: tuple[float, ...] = (0.5, 2.0)
    n_envs: int = 16
    cost_bps: float = 5.0

    def key(self) -> str:
        """Short hash of the settings, part of the cached policies' names."""
        return settings_key(self)


@dataclass(frozen=True)
class AgentWindow:
    """One symbol's agents over one window of the span.

    Attributes:
        symbol: The symbol.
        first, last: ISO dates of the window's first and last bar.
        train_bars: Bars the policies were trained on (all bars before ``first``).
        models: Agent -> registry id of its policy.
        sources: Agent -> ``"rl_policy"`` or ``"rule"`` (its policy failed its gate).
        gates: Agent -> the gate's one-sentence verdict.
        trained: True when this run trained the policies; False: found in the registry.
        seconds: Seconds spent training (0 when cached).
    """

    symbol: str
    first: str
    last: str
    train_bars: int
    models: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    gates: dict[str, str] = field(default_factory=dict)
    trained: bool = False
    seconds: float = 0.0


@dataclass(frozen=True, eq=False)
class AgentPlan:
    """Every agent's target at every bar, per symbol, and where it came from.

    Attributes:
        kind: ``"rules"`` or ``"models"``.
        targets: Per symbol, agent -> target position at each bar of the series (history included).
        windows: Per symbol and window, the models used (empty for rules).
        settings: The training settings (None for rules).
        seconds: Wall time spent preparing the targets.
    """

    kind: AgentKind
    targets: list[dict[str, FloatArray]]
    windows: list[AgentWindow] = field(default_factory=list)
    settings: ModelSettings | None = None
    seconds: float = 0.0

    def describe(self) -> str:
        """The agents in words, for the run's configuration and reports."""
        if self.kind == "rules":
            return "rules (quantcrew.tools.fallbacks.rule_positions)"
        policy = sum(1 for w in self.windows for s in w.sources.values() if s == "rl_policy")
        total = sum(len(w.sources) for w in self.windows)
        s = self.settings
        return (f"RL policies retrained per window ({len(self.windows)} symbol-windows, "
                f"{s.algorithm if s else '?'}, {s.timesteps if s else '?'} steps, {s.seeds if s else '?'} seed(s)); "
                f"{policy} of {total} agent-windows passed their gate, the rest answered with their rule")


def rule_plan(bars: Sequence[OHLCV]) -> AgentPlan:
    """The rule agents' targets."""
    targets = [{a: np.asarray(v, dtype=np.float64) for a, v in rule_positions(b.close).items()} for b in bars]
    return AgentPlan(kind="rules", targets=targets)


def model_plan(bars: Sequence[OHLCV], start: int, *, client: MLClient, retrain_every: int,
               settings: ModelSettings = ModelSettings(),  # noqa: B008 - frozen, immutable default
               budget_s: float | None = None, on_progress: ProgressCallback | None = None,
               poll_s: float = 0.5) -> AgentPlan:
    """The RL policies' targets over bars ``start..`` (see the module docstring).

    Args:
        bars: Aligned series, the history before ``start`` included.
        start: Index of the span's first bar.
        client: Client of the ML server that trains and evaluates the policies.
        retrain_every: Bars per window.
        settings: How the policies are trained.
        budget_s: Seconds the training may take in all; None: no limit.
        on_progress: Called as ``on_progress(done, total, message)`` while training.
        poll_s: Seconds between polls of a running job.

    Raises:
        BacktestInputError: ``retrain_every`` below 1.
        ModelBudgetError: the budget ran out (the windows trained so far are cached).
        quantcrew.tools.errors.MLClientError: the server failed.
    """
    if retrain_every < 1:
        raise BacktestInputError("retrain_every", f"must be at least 1, got {retrain_every}")
    began = time.monotonic()
    deadline = None if budget_s is None else began + budget_s
    n = len(bars[0])
    starts = window_starts(n, start, retrain_every)
    plan = rule_plan(bars)
    targets = plan.targets
    windows: list[AgentWindow] = []
    models = client.list_models()
    total, done = len(starts) * len(bars), 0
    for b_i, b in enumerate(bars):
        dates = b.iso_timestamps()
        prefix = f"wf-{_NAME_CHARS.sub('_', b.symbol)[:40]}-{settings.key()}"
        for k, w in enumerate(starts):
            last = (starts[k + 1] if k + 1 < len(starts) else n) - 1
            train = b.iloc(slice(0, w))
            t0 = time.monotonic()
            ids, gates = _cached(models, prefix, payload_hash(train))
            trained = False
            if len(ids) < len(STRATEGY_AGENTS):
                ids, gates = _train(client, train, prefix, settings, deadline, poll_s,
                                    progress_teller(on_progress, done, total))
                trained = True
            positions = _positions(client, b.iloc(slice(0, last + 1)), dates[w], ids, settings, last - w + 1)
            sources = {}
            for agent in STRATEGY_AGENTS:
                if gates.get(agent, {}).get("passed"):
                    targets[b_i][agent][w:last + 1] = positions[agent]
                    sources[agent] = "rl_policy"
                else:
                    sources[agent] = "rule"
            windows.append(AgentWindow(
                symbol=b.symbol, first=dates[w], last=dates[last], train_bars=w, models=ids, sources=sources,
                gates={a: str(g.get("summary", "no gate verdict")) for a, g in gates.items()}, trained=trained,
                seconds=time.monotonic() - t0 if trained else 0.0))
            done += 1
            if on_progress is not None:
                used = sum(1 for s in sources.values() if s == "rl_policy")
                on_progress(done, total, f"{b.symbol} from {dates[w]}: {used}/4 policies passed "
                                         f"({'trained' if trained else 'cached'})")
    return AgentPlan(kind="models", targets=targets, windows=windows, settings=settings,
                     seconds=time.monotonic() - began)


def settings_key(settings: Any) -> str:
    """Short hash of a settings dataclass: a change of any field is a new cache key."""
    return hashlib.sha256(json.dumps(dataclasses.asdict(settings), sort_keys=True).encode()).hexdigest()[:8]


def window_starts(n: int, start: int, retrain_every: int) -> list[int]:
    """First bar of each training window over bars ``start..n - 1`` (a tail under 21 bars joins the one before)."""
    starts = list(range(start, n, retrain_every))
    if len(starts) > 1 and n - starts[-1] < _MIN_WINDOW:
        starts.pop()
    return starts


def progress_teller(on_progress: ProgressCallback | None, done: int, total: int) -> Callable[[str], None]:
    """A callback telling ``on_progress(done, total, message)`` (nothing when it is None)."""
    def tell(message: str) -> None:
        if on_progress is not None:
            on_progress(done, total, message)
    return tell


def _cached(models: Sequence[ModelInfo], prefix: str, digest: str) -> tuple[dict[str, str], dict[str, Any]]:
    """The newest policy per agent named ``prefix-...`` and trained on exactly these bars, with its gate."""
    ids: dict[str, str] = {}
    gates: dict[str, Any] = {}
    for m in sorted(models, key=lambda m: m.created_at, reverse=True):
        agent = str(m.metadata.get("agent"))
        if (m.family == "rl" and m.name.startswith(prefix + "-") and m.metadata.get("data_hash") == digest
                and agent in STRATEGY_AGENTS and agent not in ids):
            ids[agent] = m.model_id
            gates[agent] = m.metadata.get("gate") or {}
    return ids, gates


def _train(client: MLClient, train: OHLCV, prefix: str, settings: ModelSettings, deadline: float | None,
           poll_s: float, tell: Callable[[str], None]) -> tuple[dict[str, str], dict[str, Any]]:
    from quantcrew.ml_server.schemas.rl import RLTrainRequest

    request = RLTrainRequest.model_validate({
        "data": to_payload_dict(train), "agents": list(STRATEGY_AGENTS), "algorithm": settings.algorithm,
        "timesteps": settings.timesteps, "seeds": settings.seeds, "cost_bps": settings.cost_bps,
        "slippage_bps": 0.0, "grid": {"reward_scale": list(settings.reward_scales)}, "n_envs": settings.n_envs,
        "name_prefix": prefix})
    info = client.rl_train(request)
    info = wait_within(client, info, deadline, poll_s, lambda i: tell(
        f"training {train.symbol} up to {train.iso_timestamps()[-1][:10]} ({i.status})"))
    if info.status != "succeeded":
        reason = info.error.message if info.error is not None else info.status
        raise ModelBudgetError(f"training the policies of {train.symbol} up to {train.iso_timestamps()[-1][:10]} "
                               f"did not succeed: {reason}")
    result = info.result if isinstance(info.result, dict) else {}
    policies = result.get("policies", [])
    return ({str(p["agent"]): str(p["model_id"]) for p in policies},
            {str(p["agent"]): p.get("gate") or {} for p in policies})


def wait_within(client: MLClient, info: JobInfo, deadline: float | None, poll_s: float,
                tell: Callable[[JobInfo], None]) -> JobInfo:
    """Poll a training job until it ends; past ``deadline`` cancel it and raise :class:`ModelBudgetError`."""
    while info.status in ("queued", "running"):
        tell(info)
        if deadline is not None and time.monotonic() >= deadline:
            client.cancel_job(info.job_id)
            raise ModelBudgetError("the time budget for training the walk-forward's models ran out; the windows "
                                   "trained so far are cached in the registry and a rerun resumes after them")
        time.sleep(poll_s)
        info = client.get_job(info.job_id)
    return info


def _positions(client: MLClient, bars: OHLCV, first: str, ids: dict[str, str], settings: ModelSettings,
               count: int) -> dict[str, FloatArray]:
    """Each policy's position at every bar from ``first`` to the end of ``bars`` (``count`` of them)."""
    from quantcrew.ml_server.schemas.rl import RLEvaluateRequest

    reply = client.rl_evaluate(RLEvaluateRequest.model_validate({
        "model_ids": [ids[a] for a in STRATEGY_AGENTS if a in ids], "data": to_payload_dict(bars), "start": first,
        "cost_bps": settings.cost_bps, "slippage_bps": 0.0, "include_positions": True}))
    out: dict[str, FloatArray] = {e.agent: np.asarray(e.positions, dtype=np.float64) for e in reply.evaluations
                                  if e.positions is not None}
    for agent, path in out.items():
        if path.shape[0] != count:
            raise ValueError(f"the server returned {path.shape[0]} positions of {agent} from {first}, expected {count}")
    return out
