"""The rl family's service: markets prepared for policies, stored policies resolved, asked and backtested.

A :class:`Market` is one instrument's bars turned into what a policy observes: engineered
features (each row uses bars up to its own only), the regime family's FILTERED label
probabilities (the HMM is fitted on the training bars only), a scaler fitted on the training
rows, and the forward return each position earns. Training (``rl_training``) and inference
(here) build observations through the same :func:`observation` so they cannot drift apart.

Time convention: the position chosen at bar ``t`` (seeing bars ``<= t``) earns
``close[t+1] / close[t] - 1``. Training steps stop one bar short of the first test bar, so
no training reward is paid from a test-span price.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from quantcrew.ml_server.errors import ArtifactIntegrityError, InvalidInputError, NotFoundError
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.common import ModelInfo
from quantcrew.ml_server.schemas.regime import REGIME_LABELS
from quantcrew.ml_server.schemas.rl import (
    BacktestReport,
    RegimeSlice,
    RLAction,
    RLActRequest,
    RLActResponse,
    RLEvaluateRequest,
    RLEvaluateResponse,
    RLEvaluation,
)
from quantcrew.ml_server.services import regime_store
from quantcrew.ml_server.services.bars import Bars, bars_from_payload
from quantcrew.ml_server.services.regime import RegimeDetector
from quantcrew.ml_server.services.rl_backtest import BacktestMetrics, backtest, benchmarks, regime_returns
from quantcrew.ml_server.services.rl_features import WARMUP, FeatureScaler, build_features

if TYPE_CHECKING:
    from quantcrew.ml_server.services.rl_policy import StoredPolicy

__all__ = [
    "MIN_TEST_BARS",
    "MIN_TRAIN_BARS",
    "SPECIALTY",
    "Market",
    "act",
    "backtest_report",
    "benchmark_reports",
    "evaluate",
    "evaluate_positions",
    "load_detector",
    "load_policy",
    "observation",
    "prepare_market",
    "resolve_policies",
    "run_policy",
    "split_index",
]

FloatArray = npt.NDArray[np.float64]

MIN_TRAIN_BARS = 100  # training steps after the feature warm-up
MIN_TEST_BARS = 20
UNKNOWN_REGIME = "unknown"

# What each agent is built to win on, and how "better" reads for it.
SPECIALTY: dict[str, str] = {
    "conservative": "max_drawdown",
    "aggressive": "total_return",
    "balanced": "sharpe",
    "contrarian": "sideways_return",
}


@dataclass(frozen=True)
class Market:
    """One instrument's bars, ready for policies.

    Attributes:
        bars: The bars.
        scaled: Scaled features, float32, shape ``(T, F)``; rows before ``warmup`` unused.
        forward_returns: ``close[t+1] / close[t] - 1`` (0 at the last bar).
        price_z: Deviation of the close from its 20-bar mean, in standard deviations.
        feature_names: Column names of ``scaled``.
        scaler: Fitted on the training rows.
        labels: Filtered regime label of each bar (``"unknown"`` for bar 0 or without regimes).
        regime_probs: Filtered label probabilities of the last bar, or None without regimes.
        warmup: First usable row.
    """

    bars: Bars
    scaled: npt.NDArray[np.float32]
    forward_returns: FloatArray
    price_z: FloatArray
    feature_names: tuple[str, ...]
    scaler: FeatureScaler
    labels: list[str]
    regime_probs: dict[str, float] | None
    warmup: int


def split_index(bars: Bars, train_end: datetime | None, train_fraction: float) -> int:
    """Index of the last training bar.

    Raises:
        InvalidInputError: ``train_end`` leaves too few training or test bars.
    """
    n = len(bars)
    if train_end is None:
        last = int(n * train_fraction) - 1
    else:
        stamp = _as_naive_utc(train_end)
        last = int(np.searchsorted(bars.times, stamp, side="right")) - 1
    need_train = WARMUP + MIN_TRAIN_BARS
    if last + 1 < need_train:
        raise InvalidInputError(
            f"train_end leaves {max(last + 1, 0)} training bars; the {WARMUP}-bar feature window plus "
            f"{MIN_TRAIN_BARS} training steps need at least {need_train}",
            details=[{"loc": ["body", "train_end"], "msg": f"need at least {need_train} bars up to train_end"}],
        )
    if n - 1 - last < MIN_TEST_BARS:
        raise InvalidInputError(
            f"train_end leaves {n - 1 - last} test bars after it; the out-of-sample evaluation needs at least "
            f"{MIN_TEST_BARS}",
            details=[{"loc": ["body", "train_end"], "msg": f"need at least {MIN_TEST_BARS} bars after train_end"}],
        )
    return last


def _regimes(detector: RegimeDetector | None,
             bars: Bars) -> tuple[FloatArray | None, list[str], dict[str, float] | None]:
    if detector is None:
        return None, [UNKNOWN_REGIME] * len(bars), None
    filtered = detector.filter(bars)
    probs = np.full((len(bars), len(REGIME_LABELS)), 1.0 / len(REGIME_LABELS))
    for j, label in enumerate(REGIME_LABELS):
        probs[1:, j] = filtered.label_probs[label]
    labels = [UNKNOWN_REGIME, *(str(x) for x in filtered.labels)]
    last: dict[str, float] = {label: float(probs[-1, j]) for j, label in enumerate(REGIME_LABELS)}
    return probs, labels, last


def prepare_market(bars: Bars, *, detector: RegimeDetector | None, scaler: FeatureScaler | None = None,
                   train_last: int | None = None) -> Market:
    """Features, regimes and scaling of ``bars``.

    Args:
        bars: The bars.
        detector: A fitted regime detector (its probabilities become features), or None.
        scaler: A stored scaler; None fits one on rows ``warmup..train_last``.
        train_last: Last training bar, needed when ``scaler`` is None.
    """
    probs, labels, last = _regimes(detector, bars)
    feats = build_features(bars.close, bars.high, bars.low, regime_probs=probs,
                           regime_names=REGIME_LABELS if probs is not None else ())
    if scaler is None:
        if train_last is None:
            raise ValueError("train_last is needed to fit the scaler")
        scaler = FeatureScaler.fit(feats.values, feats.warmup, train_last + 1, names=feats.names)
    return Market(bars=bars, scaled=scaler.transform(feats.values), forward_returns=feats.forward_returns,
                  price_z=feats.price_z, feature_names=feats.names, scaler=scaler, labels=labels,
                  regime_probs=last, warmup=feats.warmup)


def observation(market: Market, t: int, position: float) -> npt.NDArray[np.float32]:
    """What a policy sees at bar ``t``: the scaled features of ``t`` and the position held."""
    return np.append(market.scaled[t], np.float32(position)).astype(np.float32)


def run_policy(policy: StoredPolicy, market: Market, start: int, end: int,
               initial_position: float = 0.0) -> FloatArray:
    """Positions the policy chooses at bars ``start..end-1``, each seeing the one it holds."""
    positions = np.empty(end - start)
    position = initial_position
    for i, t in enumerate(range(start, end)):
        position = policy.answer(observation(market, t, position)).target_position
        positions[i] = position
    return positions


def backtest_report(m: BacktestMetrics) -> BacktestReport:
    return BacktestReport.model_validate(m.as_dict())


def _beats(agent: str, mine: BacktestMetrics, mine_regimes: dict[str, RegimeSlice], bench: BacktestMetrics,
           bench_regimes: dict[str, RegimeSlice]) -> bool:
    spec = SPECIALTY[agent]
    if spec == "max_drawdown":
        return mine.max_drawdown < bench.max_drawdown
    if spec == "sideways_return":
        none = RegimeSlice(total_return=0.0, n_bars=0)
        return mine_regimes.get("sideways", none).total_return > bench_regimes.get("sideways", none).total_return
    return bool(getattr(mine, spec) > getattr(bench, spec))


def evaluate_positions(agent: str, model_id: str, algorithm: str, positions: FloatArray, market: Market,
                       start: int, end: int, *, cost_bps: float, slippage_bps: float,
                       bench: dict[str, BacktestMetrics],
                       bench_regimes: dict[str, dict[str, RegimeSlice]]) -> RLEvaluation:
    """Backtest one policy's positions on bars ``start..end-1`` beside buy-and-hold."""
    metrics, net = backtest(positions, market.forward_returns[start:end], cost_bps=cost_bps,
                            slippage_bps=slippage_bps)
    by_regime = _slices(net, market.labels[start:end])
    return RLEvaluation(
        agent=agent, model_id=model_id, algorithm=algorithm,  # type: ignore[arg-type]
        metrics=backtest_report(metrics), regime_returns=by_regime,
        specialty_metric=SPECIALTY[agent],
        beats_buy_and_hold=_beats(agent, metrics, by_regime, bench["buy_and_hold"], bench_regimes["buy_and_hold"]),
    )


def _slices(net: FloatArray, labels: Sequence[str]) -> dict[str, RegimeSlice]:
    return {k: RegimeSlice(total_return=v.total_return, n_bars=v.n_bars)
            for k, v in regime_returns(net, labels).items()}


def benchmark_reports(market: Market, start: int, end: int, *, cost_bps: float, slippage_bps: float
                      ) -> tuple[dict[str, BacktestMetrics], dict[str, dict[str, RegimeSlice]]]:
    """Buy-and-hold and flat on bars ``start..end-1``, with their returns per regime."""
    fwd = market.forward_returns[start:end]
    bench = benchmarks(fwd, cost_bps=cost_bps, slippage_bps=slippage_bps)
    per_regime: dict[str, dict[str, RegimeSlice]] = {}
    for name in bench:
        positions = np.ones(end - start) if name == "buy_and_hold" else np.zeros(end - start)
        _, net = backtest(positions, fwd, cost_bps=cost_bps, slippage_bps=slippage_bps)
        per_regime[name] = _slices(net, market.labels[start:end])
    return bench, per_regime


# -- stored policies ------------------------------------------------------------------------------

_POLICY_CACHE: OrderedDict[tuple[str, str], StoredPolicy] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 32


def load_policy(registry: ModelRegistry, model_id: str) -> tuple[StoredPolicy, ModelInfo]:
    """Rebuild a stored policy (SHA-256 checked, ``weights_only`` load), cached by id and hash.

    Raises:
        ModelNotFoundError: unknown id or not an rl model.
        ArtifactIntegrityError: the file changed, or its tensors do not fit the recorded architecture.
    """
    state, info = registry.load(model_id, family="rl")
    key = (info.model_id, info.sha256)
    with _CACHE_LOCK:
        cached = _POLICY_CACHE.get(key)
        if cached is not None:
            _POLICY_CACHE.move_to_end(key)
            return cached, info
    from quantcrew.ml_server.services.rl_policy import StoredPolicy  # torch + SB3 load on first use

    meta = info.metadata
    try:
        policy = StoredPolicy(algorithm=meta["algorithm"], action_mode=meta["action_mode"],
                              obs_dim=int(meta["obs_dim"]), state=state, net_arch=tuple(meta["net_arch"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactIntegrityError(f"model '{model_id}' cannot be used as an rl policy: {exc}",
                                     details={"model_id": model_id}) from exc
    with _CACHE_LOCK:
        _POLICY_CACHE[key] = policy
        while len(_POLICY_CACHE) > _CACHE_SIZE:
            _POLICY_CACHE.popitem(last=False)
    return policy, info


def load_detector(registry: ModelRegistry, model_id: str | None) -> RegimeDetector | None:
    """The regime detector a policy observes through, or None when it was trained without one."""
    return None if model_id is None else regime_store.load_detector(registry, model_id)[0]


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


def _market_for(registry: ModelRegistry, bars: Bars, meta: dict[str, Any],
                cache: dict[tuple[str | None, str], Market]) -> Market:
    key = (meta.get("regime_model_id"), repr(meta.get("scaler")))
    market = cache.get(key)
    if market is None:
        detector = load_detector(registry, meta.get("regime_model_id"))
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


def _check_bars(n: int) -> None:
    if n < WARMUP + 2:
        raise InvalidInputError(
            f"data has {n} bars; policies observe {WARMUP}-bar features, so at least {WARMUP + 2} are needed",
            details=[{"loc": ["body", "data", "timestamps"], "msg": f"need at least {WARMUP + 2} rows"}],
        )


def act(req: RLActRequest, registry: ModelRegistry) -> RLActResponse:
    """Every selected policy's action at the last bar."""
    _check_bars(len(req.data))
    bars = bars_from_payload(req.data, min_rows=WARMUP + 2)
    ids = resolve_policies(registry, model_ids=req.model_ids, agents=req.agents, algorithm=req.algorithm)
    markets: dict[tuple[str | None, str], Market] = {}
    actions: list[RLAction] = []
    market: Market | None = None
    for model_id in ids:
        policy, info = load_policy(registry, model_id)
        market = _market_for(registry, bars, info.metadata, markets)
        answer = policy.answer(observation(market, len(bars) - 1, req.position))
        actions.append(RLAction(
            agent=info.metadata["agent"], model_id=info.model_id, model_version=info.version,
            algorithm=info.metadata["algorithm"], action=answer.action, action_label=answer.label,
            target_position=answer.target_position, probabilities=answer.probabilities, q_values=answer.q_values,
            action_std=answer.action_std,
        ))
    assert market is not None
    regime = market.labels[-1] if market.regime_probs is not None else None
    return RLActResponse(
        model_id=None, model_version=None, method_used="rl_policy", fallback=False, data_hash=bars.data_hash,
        seed=None, as_of=bars.as_of, actions=actions, regime=regime, regime_probabilities=market.regime_probs,
    )


def evaluate(req: RLEvaluateRequest, registry: ModelRegistry) -> RLEvaluateResponse:
    """Backtest the selected policies on the bars after ``start`` (or after their training span)."""
    _check_bars(len(req.data))
    bars = bars_from_payload(req.data, min_rows=WARMUP + 2)
    ids = resolve_policies(registry, model_ids=req.model_ids, agents=req.agents, algorithm=req.algorithm)
    loaded = [load_policy(registry, m) for m in ids]
    end = len(bars) - 1  # the last bar's forward return is unknown
    if req.start is not None:
        start = int(np.searchsorted(bars.times, _as_naive_utc(req.start), side="left"))
    else:
        train_ends = [np.datetime64(info.metadata["train_end"], "us") for _, info in loaded]
        # the last training bar's position is the first one that earns a test-span return
        start = int(np.searchsorted(bars.times, max(train_ends), side="right")) - 1
    start = max(start, WARMUP)
    if end - start < MIN_TEST_BARS:
        raise InvalidInputError(
            f"the evaluation span has {max(end - start, 0)} bars; at least {MIN_TEST_BARS} are needed "
            "(send bars after the policies' training span, or an earlier start)",
            details=[{"loc": ["body", "start"], "msg": f"need at least {MIN_TEST_BARS} bars to evaluate"}],
        )
    markets: dict[tuple[str | None, str], Market] = {}
    evaluations: list[RLEvaluation] = []
    bench: dict[str, BacktestMetrics] = {}
    bench_regimes: dict[str, dict[str, RegimeSlice]] = {}
    for policy, info in loaded:
        market = _market_for(registry, bars, info.metadata, markets)
        if not bench:
            bench, bench_regimes = benchmark_reports(market, start, end, cost_bps=req.cost_bps,
                                                     slippage_bps=req.slippage_bps)
        positions = run_policy(policy, market, start, end)
        evaluations.append(evaluate_positions(
            info.metadata["agent"], info.model_id, info.metadata["algorithm"], positions, market, start, end,
            cost_bps=req.cost_bps, slippage_bps=req.slippage_bps, bench=bench, bench_regimes=bench_regimes,
        ))
    iso = bars.iso()
    return RLEvaluateResponse(
        model_id=None, model_version=None, method_used="rl_backtest", fallback=False, data_hash=bars.data_hash,
        seed=None, as_of=bars.as_of, evaluations=evaluations,
        benchmarks={k: backtest_report(v) for k, v in bench.items()}, benchmark_regime_returns=bench_regimes,
        start=iso[start], end=iso[end],
    )


def _as_naive_utc(stamp: datetime) -> np.datetime64:
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(UTC).replace(tzinfo=None)
    return np.datetime64(stamp, "us")
