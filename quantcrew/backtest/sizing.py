"""The execution plan's size in a walk-forward: the volatility rule, or the crew's execution network.

The crew sizes the chosen agent's signal with the execution plan: the symbol's MC-dropout
execution network when one passed its gate, else the volatility-targeting rule
(:func:`quantcrew.tools.fallbacks.execution_fallback`). With ``agents="models"`` the walk-forward
does the same, with networks retrained on an expanding window as server jobs, on the agents'
windows (:func:`quantcrew.backtest.agent_models.window_starts`). For the window starting at bar
``w``:

1. the ensemble and its execution network are trained on the bars before ``w`` only
   (``POST /v1/ensemble/train`` with ``deploy=false``: the network learns from the ensemble's
   out-of-sample signals; both are judged by their gates on bars they were not trained on,
   and neither is ever deployed, so the crew's live models are untouched);
2. every agent's signal at every bar of the window (its target's side, with the confidence
   :func:`quantcrew.crew.decision.signal_confidence` gives it, as the decision tool asks) is
   sized by that network, pinned by id (``POST /v1/execution/plan``, the market conditions of
   each bar computed from bars ``<= t``);
3. when the network failed its gate, the rule sizes that window, as it does live.

The ensemble's own signal is consulted by the crew, not followed: the decision follows the
agent the bandit chose. So in the walk-forward too the ensemble enters the decision through the
execution network trained on its signals, and its gate is reported per window.

Models are cached in the registry like the policies: named ``wf-<symbol>-<hash>-ensemble``
(the hash is of :class:`EnsembleSettings`) and matched by the hash of the bars they were trained
on, so a rerun trains nothing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from quantcrew.backtest.agent_models import ModelBudgetError, progress_teller, settings_key, wait_within
from quantcrew.data.loaders import payload_hash, to_payload_dict
from quantcrew.data.ohlcv import OHLCV
from quantcrew.tools.fallbacks import STRATEGY_AGENTS

if TYPE_CHECKING:
    from quantcrew.ml_server.schemas.common import ModelInfo
    from quantcrew.tools.client import MLClient

__all__ = ["EnsembleSettings", "SizingPlan", "SizingWindow", "network_sizing"]

FloatArray = npt.NDArray[np.float64]
ProgressCallback = Callable[[int, int, str], None]

_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
_CHUNK = 250          # decisions per execution request (the server's default cap is 256)
_HISTORY = 80         # bars sent before a chunk's first decision (market conditions read 60)


@dataclass(frozen=True)
class EnsembleSettings:
    """How each window's ensemble and execution network are trained (a change is a new cache key).

    Defaults are the setup's: 2 members per architecture, at most 12 epochs, 3 walk-forward folds.
    """

    members: int = 2
    epochs: int = 12
    folds: int = 3
    seed: int = 0

    def key(self) -> str:
        """Short hash of the settings, part of the cached models' names."""
        return settings_key(self)


@dataclass(frozen=True)
class SizingWindow:
    """One symbol's sizing over one window.

    Attributes:
        symbol: The symbol.
        first, last: ISO dates of the window's first and last bar.
        train_bars: Bars the models were trained on (all bars before ``first``).
        ensemble_id: Registry id of the window's ensemble.
        execution_id: Registry id of its execution network (None: too few rows to train one).
        source: ``"execution_network"``, or ``"rule"`` (no network, or it failed its gate).
        ensemble_passed: Whether the ensemble passed its gate.
        ensemble_gate, execution_gate: The gates' one-sentence verdicts.
        trained: True when this run trained the models; False: found in the registry.
        seconds: Seconds spent training (0 when cached).
    """

    symbol: str
    first: str
    last: str
    train_bars: int
    ensemble_id: str
    execution_id: str | None
    source: str
    ensemble_passed: bool = False
    ensemble_gate: str = ""
    execution_gate: str = ""
    trained: bool = False
    seconds: float = 0.0


@dataclass(frozen=True, eq=False)
class SizingPlan:
    """The network's size for every agent's signal at every bar, per symbol (NaN where the rule sizes).

    Attributes:
        sizes: Per symbol, agent -> array ``(bars, 3)``: the size's mean, lower and upper bound.
        windows: Per symbol and window, the models used.
        settings: The training settings.
        seconds: Wall time spent training and sizing.
    """

    sizes: list[dict[str, FloatArray]]
    windows: list[SizingWindow] = field(default_factory=list)
    settings: EnsembleSettings = field(default_factory=EnsembleSettings)
    seconds: float = 0.0

    def size(self, i: int, agent: str, t: int) -> tuple[float, tuple[float, float]] | None:
        """The network's size of ``agent``'s signal on symbol ``i`` at bar ``t``; None where the rule sizes."""
        row = self.sizes[i][agent][t]
        if np.isnan(row[0]):
            return None
        return min(max(float(row[0]), 0.0), 1.0), (float(row[1]), float(row[2]))

    def describe(self) -> str:
        """The sizing in words, for the run's configuration and reports."""
        used = sum(1 for w in self.windows if w.source == "execution_network")
        ens = sum(1 for w in self.windows if w.ensemble_passed)
        return (f"execution networks retrained per window ({len(self.windows)} symbol-windows, ensemble of "
                f"{self.settings.members} member(s) x 2 architectures, {self.settings.epochs} epochs): {used} of "
                f"{len(self.windows)} networks passed their gate and sized their window, the rule sized the rest; "
                f"{ens} ensembles passed theirs")


def network_sizing(bars: Sequence[OHLCV], targets: Sequence[dict[str, FloatArray]], starts: Sequence[int], *,
                   client: MLClient,
                   settings: EnsembleSettings = EnsembleSettings(),  # noqa: B008 - frozen, immutable default
                   deadline: float | None = None, on_progress: ProgressCallback | None = None,
                   poll_s: float = 0.5) -> SizingPlan:
    """Train (or find) each window's execution network and size every agent's signal with it.

    Args:
        bars: Aligned series, the history before the first window included.
        targets: Per symbol, agent -> target position at each bar (the agent plan's).
        starts: First bar of each window (the last runs to the end of the series).
        client: Client of the ML server.
        settings: How the ensemble and its network are trained.
        deadline: ``time.monotonic()`` past which training stops with :class:`ModelBudgetError`.
        on_progress: Called as ``on_progress(done, total, message)``.
        poll_s: Seconds between polls of a running job.

    Raises:
        ModelBudgetError: the time budget ran out, or a training job failed.
        quantcrew.tools.errors.MLClientError: the server failed.
    """
    began = time.monotonic()
    n = len(bars[0])
    sizes = [{a: np.full((n, 3), np.nan) for a in STRATEGY_AGENTS} for _ in bars]
    windows: list[SizingWindow] = []
    models = client.list_models()
    total, done = len(starts) * len(bars), 0
    for b_i, b in enumerate(bars):
        dates = b.iso_timestamps()
        name = f"wf-{_NAME_CHARS.sub('_', b.symbol)[:40]}-{settings.key()}-ensemble"
        for k, w in enumerate(starts):
            last = (starts[k + 1] if k + 1 < len(starts) else n) - 1
            train = b.iloc(slice(0, w))
            t0 = time.monotonic()
            found = _cached(models, name, payload_hash(train))
            trained = found is None
            if found is None:
                found = _train(client, train, name, settings, deadline, poll_s,
                               progress_teller(on_progress, done, total))
            ensemble, execution = found
            e_gate = _gate(execution.metadata if execution else {})
            source = "execution_network" if execution is not None and e_gate.get("passed") else "rule"
            if source == "execution_network" and execution is not None:
                for agent in STRATEGY_AGENTS:
                    sizes[b_i][agent][w:last + 1] = _sizes(client, b, w, last, targets[b_i][agent],
                                                           execution.model_id, settings.seed)
            windows.append(SizingWindow(
                symbol=b.symbol, first=dates[w], last=dates[last], train_bars=w, ensemble_id=ensemble.model_id,
                execution_id=execution.model_id if execution else None, source=source,
                ensemble_passed=bool(_gate(ensemble.metadata).get("passed")),
                ensemble_gate=str(_gate(ensemble.metadata).get("summary", "no gate verdict")),
                execution_gate=str(e_gate.get("summary", "no execution network")), trained=trained,
                seconds=time.monotonic() - t0 if trained else 0.0))
            done += 1
            if on_progress is not None:
                on_progress(done, total, f"{b.symbol} from {dates[w]}: sizing by "
                                         f"{source.replace('_', ' ')} ({'trained' if trained else 'cached'})")
    return SizingPlan(sizes=sizes, windows=windows, settings=settings, seconds=time.monotonic() - began)


def _gate(metadata: dict[str, Any]) -> dict[str, Any]:
    gate = metadata.get("gate")
    return gate if isinstance(gate, dict) else {}


def _cached(models: Sequence[ModelInfo], name: str, digest: str) -> tuple[ModelInfo, ModelInfo | None] | None:
    """The newest ensemble named ``name`` trained on exactly these bars, and its execution network."""
    for m in sorted(models, key=lambda m: m.created_at, reverse=True):
        if m.family == "ensemble" and m.name == name and m.metadata.get("data_hash") == digest:
            nets = [x for x in models if x.family == "execution" and x.metadata.get("ensemble_model_id") == m.model_id]
            return m, (nets[0] if nets else None)
    return None


def _train(client: MLClient, train: OHLCV, name: str, settings: EnsembleSettings, deadline: float | None,
           poll_s: float, tell: Callable[[str], None]) -> tuple[ModelInfo, ModelInfo | None]:
    from quantcrew.ml_server.schemas.ensemble import EnsembleTrainRequest, EnsembleTrainResult

    request = EnsembleTrainRequest.model_validate({
        "data": to_payload_dict(train), "name": name, "members": settings.members, "epochs": settings.epochs,
        "folds": settings.folds, "seed": settings.seed, "deploy": False})
    until = train.iso_timestamps()[-1][:10]
    info = wait_within(client, client.ensemble_train(request), deadline, poll_s,
                       lambda i: tell(f"training {train.symbol}'s ensemble up to {until} ({i.status})"))
    if info.status != "succeeded":
        reason = info.error.message if info.error is not None else info.status
        raise ModelBudgetError(f"training the ensemble of {train.symbol} up to {until} did not succeed: {reason}")
    result = EnsembleTrainResult.model_validate(info.result)
    return result.model, result.execution_model


def _sizes(client: MLClient, bars: OHLCV, first: int, last: int, target: FloatArray, model_id: str,
           seed: int) -> FloatArray:
    """The network's size (mean, lower, upper) of the signal of ``target`` at every bar ``first..last``.

    The dropout seed is fixed: by default the server seeds a request with a hash of all its
    inputs, and a bar's size must not depend on the bars after it.
    """
    from quantcrew.crew.decision import signal_confidence
    from quantcrew.ml_server.schemas.execution import ExecutionRequest

    out = np.empty((last - first + 1, 3))
    for lo in range(first, last + 1, _CHUNK):
        hi = min(lo + _CHUNK, last + 1)
        signals = [{"signal": "up" if x > 0 else "down" if x < 0 else "flat", "confidence": signal_confidence(x)}
                   for x in (float(v) for v in target[lo:hi])]
        reply = client.execution_plan(ExecutionRequest.model_validate({
            "signals": signals, "data": to_payload_dict(bars.iloc(slice(max(0, lo - _HISTORY), hi))),
            "decision_type": "entry", "model_id": model_id, "seed": seed}))
        out[lo - first:hi - first] = [[p.size.mean, p.size.lower, p.size.upper] for p in reply.plans]
    return out
