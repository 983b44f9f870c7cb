"""Execution plans: the stored MC-dropout network, its inputs, and the reply.

The sampling pass runs on the device thread (through the dynamic batcher when batching is on);
this module finds the network, builds its scaled inputs, and summarises the samples.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np
import numpy.typing as npt

from quantcrew.ml_server.errors import ArtifactIntegrityError, InvalidInputError, NotFoundError
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.common import ModelInfo
from quantcrew.ml_server.schemas.execution import (
    MARKET_INPUTS,
    ExecutionPlan,
    ExecutionRequest,
    ExecutionResponse,
    Interval,
)
from quantcrew.ml_server.services import execution_inputs as xin
from quantcrew.ml_server.services import execution_net as xnet
from quantcrew.ml_server.services.bars import bars_from_payload

__all__ = ["LoadedExecution", "PreparedExecution", "finish", "load_execution", "prepare", "resolve_model_id"]

FloatArray = npt.NDArray[np.float64]
_SIGNAL = {"down": -1.0, "flat": 0.0, "up": 1.0}
_CACHE: OrderedDict[tuple[str, str, str], LoadedExecution] = OrderedDict()
_LOCK = threading.Lock()
_MARKET_WARMUP = 61


@dataclass(frozen=True)
class LoadedExecution:
    info: ModelInfo
    net: xnet.ExecutionNet
    scaler: xin.InputScaler
    device: str


def resolve_model_id(registry: ModelRegistry, model_id: str | None, symbol: str | None) -> str:
    """The id asked for, else the newest execution network for the symbol (or any, without one)."""
    if model_id is not None:
        return model_id
    stored = registry.list(family="execution")
    if symbol is not None:
        stored = [m for m in stored if m.metadata.get("symbol") == symbol]
    if not stored:
        which = f" for symbol '{symbol}'" if symbol else ""
        raise NotFoundError(f"no execution network{which}; train one with POST /v1/ensemble/train (execution: true)",
                            details={"symbol": symbol})
    return stored[0].model_id


def load_execution(registry: ModelRegistry, model_id: str, device: str) -> LoadedExecution:
    """Verify, rebuild and cache an execution network."""
    info = registry.get(model_id)
    key = (model_id, info.sha256, device)
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            return hit
    state, info = registry.load(model_id, family="execution")
    try:
        config = xnet.ExecutionConfig.from_dict(info.metadata["config"])
        scaler = xin.InputScaler.from_dict(info.metadata["scaler"])
        net = xnet.load_execution_net(config, state, device)
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactIntegrityError(f"execution network '{model_id}' cannot be rebuilt: {exc}",
                                     details={"model_id": model_id}) from exc
    loaded = LoadedExecution(info, net, scaler, device)
    with _LOCK:
        _CACHE[key] = loaded
        while len(_CACHE) > 16:
            _CACHE.popitem(last=False)
    return loaded


@dataclass(frozen=True)
class PreparedExecution:
    x: npt.NDArray[np.float32]
    direction: FloatArray
    data_hash: str
    as_of: datetime | None


def prepare(req: ExecutionRequest, model: LoadedExecution, *, max_request_batch: int) -> PreparedExecution:
    """Scaled network inputs, one row per decision.

    Raises:
        InvalidInputError: more decisions than the cap, or too few bars for the market inputs.
    """
    k = len(req.signals)
    if k > max_request_batch:
        raise InvalidInputError(f"signals has {k} decisions; the cap is {max_request_batch}",
                                details=[{"loc": ["body", "signals"], "msg": f"at most {max_request_batch}"}])
    strategic = np.array([[_SIGNAL[s.signal], s.confidence, s.predictive_entropy, s.divergence_metric,
                           s.agreement_score] for s in req.signals], dtype=np.float64)
    if req.data is not None:
        need = _MARKET_WARMUP + k - 1
        if len(req.data) < need:
            raise InvalidInputError(
                f"data has {len(req.data)} bars; market conditions need {_MARKET_WARMUP} bars of history "
                f"for each of the last {k} bars, so at least {need} are needed",
                details=[{"loc": ["body", "data"], "msg": f"need at least {need} rows"}])
        bars = bars_from_payload(req.data, min_rows=need)
        market = xin.market_inputs(bars.open, bars.high, bars.low, bars.close, bars.volume)[-k:]
        data_hash, as_of = bars.data_hash, bars.as_of
    else:
        assert req.market is not None
        market = np.array([[getattr(m, c) for c in MARKET_INPUTS] for m in req.market], dtype=np.float64)
        data_hash, as_of = "sha256:" + _digest(market), None
    x = np.column_stack([strategic, market])
    if not np.isfinite(x).all():
        raise InvalidInputError("market conditions are not finite at the decision bars (too little history?)",
                                details=[{"loc": ["body", "data"], "msg": "non-finite market inputs"}])
    scaled = model.scaler.transform(x).astype(np.float32)
    return PreparedExecution(scaled, strategic[:, 0], data_hash, as_of)


def _digest(a: FloatArray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def sample(model: LoadedExecution, x: npt.NDArray[np.float32], samples: int,
           seed: int | None) -> xnet.PlanSamples:
    return xnet.sample_plans(model.net, x, samples, seed=seed, device=model.device)


def batch_sample(model: LoadedExecution, items: list[npt.NDArray[np.float32]],
                 samples: int) -> list[xnet.PlanSamples]:
    """Gathered requests through one sampling pass: the dynamic batcher's ``run``."""
    out = sample(model, np.concatenate(items, axis=0), samples, None)
    bounds = np.cumsum([0, *[len(i) for i in items]])
    return [xnet.PlanSamples(size=out.size[:, lo:hi], wait_prob=out.wait_prob[:, lo:hi])
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]


def _interval(s: xnet.Summary, i: int) -> Interval:
    return Interval(mean=float(s.mean[i]), std=float(s.std[i]), lower=float(s.lower[i]), upper=float(s.upper[i]))


def finish(req: ExecutionRequest, model: LoadedExecution, prepared: PreparedExecution, drawn: xnet.PlanSamples,
           samples: int) -> ExecutionResponse:
    size = xnet.summarize(drawn.size, req.level)
    wait = xnet.summarize(drawn.wait_prob, req.level)
    plans = []
    for i, d in enumerate(prepared.direction):
        direction = int(d)
        timing: Literal["now", "wait"] = "wait" if wait.mean[i] > 0.5 and direction != 0 else "now"
        plans.append(ExecutionPlan(size=_interval(size, i), wait_probability=_interval(wait, i), timing=timing,
                                   direction=direction, target_fraction=float(direction * size.mean[i])))
    return ExecutionResponse(
        model_id=model.info.model_id, model_version=model.info.version, method_used="mc_dropout", fallback=False,
        data_hash=prepared.data_hash, seed=req.seed, as_of=prepared.as_of, plans=plans,
        decision_type=req.decision_type, samples=samples, level=req.level,
    )
