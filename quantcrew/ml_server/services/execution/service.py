"""The execution family's verb: plan an order's size and timing with MC-dropout intervals.

The network that answers is the one pinned by id, else the deployed version of the symbol's
name (``execution-<symbol>``; a version is deployed when it passed its quality gate). A name
whose versions were all rejected is a :class:`ModelGatedError` (409 ``model_gated``); a name
never trained is a 404. The network is rebuilt through the registry's one cache, its scaled
inputs built here, and the sampling pass run on the device thread (through the dynamic
batcher when batching is on); the draws are summarised here. torch loads with the first
network, not with this module.

Plans are deterministic: without a ``seed`` in the request, the dropout masks are seeded from
a hash of the network and of the inputs (signals and market conditions) and the sample count,
so the same inputs get the same plan, alone or batched with other requests.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt
from anyio import to_thread

from quantcrew.ml_server.errors import InvalidInputError, ModelGatedError, NotFoundError
from quantcrew.ml_server.inference import InferenceRuntime, check_samples
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.common import ModelInfo
from quantcrew.ml_server.schemas.execution import (
    MARKET_INPUTS,
    ExecutionPlan,
    ExecutionRequest,
    ExecutionResponse,
    Interval,
)
from quantcrew.ml_server.services import adapter
from quantcrew.ml_server.services.bars import bars_from_payload
from quantcrew.ml_server.services.deployment import DeploymentStore
from quantcrew.ml_server.services.execution import inputs as xin
from quantcrew.ml_server.services.execution.inputs import SeededRows
from quantcrew.ml_server.services.execution.summary import Summary, summarize
from quantcrew.ml_server.services.monitor import capture
from quantcrew.ml_server.services.monitor.predictions import PredictionLog

if TYPE_CHECKING:
    from quantcrew.ml_server.services.execution.model import ExecutionModel
    from quantcrew.ml_server.services.execution.net import PlanSamples

__all__ = ["PreparedExecution", "execution_name", "finish", "gated_error", "input_seed", "load", "plan", "prepare",
           "resolve_model_id"]

FloatArray = npt.NDArray[np.float64]
_SIGNAL = {"down": -1.0, "flat": 0.0, "up": 1.0}
_MARKET_WARMUP = 61


def execution_name(symbol: str | None) -> str:
    """The model name a symbol's execution network is stored and deployed under: ``execution-<symbol>``."""
    return f"execution-{symbol}" if symbol else "execution"


def resolve_model_id(registry: ModelRegistry, deployments: DeploymentStore, model_id: str | None,
                     symbol: str | None) -> str:
    """The id asked for, else the deployed network of the symbol's name.

    A name with no deployed version whose newest version carries no gate verdict (a network
    trained before quality gates existed, never deployed because nothing was then) answers
    with that version, as it did then.

    Raises:
        NotFoundError: no execution network (for the symbol) was trained (404).
        ModelGatedError: networks were trained for it and none is deployed (409).
    """
    if model_id is not None:
        return model_id
    name = execution_name(symbol)
    try:
        return deployments.route(name, symbol or name).primary.model_id
    except NotFoundError:
        pass
    stored = [m for m in registry.list(family="execution") if m.name == name]
    if stored and "gate" not in stored[0].metadata and not deployments.list(name):
        return stored[0].model_id
    gated = gated_error(registry, family="execution", name=name, symbol=symbol, what="execution network")
    if gated is not None:
        raise gated
    which = f" for symbol '{symbol}'" if symbol else ""
    raise NotFoundError(f"no execution network{which}; train one with POST /v1/ensemble/train (execution: true)",
                        details={"symbol": symbol})


def gated_error(registry: ModelRegistry, *, family: str, name: str, symbol: str | None,
                what: str) -> ModelGatedError | None:
    """The 409 for a name with stored versions and none deployed, or None when none was ever stored.

    Shared with the ensemble family (which trains this family's networks, and so imports it).

    ``details`` carries the newest version's ``model_id``, its ``gate`` verdict (None for a
    version judged by no gate) and the ``symbol``.
    """
    stored = [m for m in registry.list(family=family) if m.name == name]
    if not stored:
        return None
    newest = stored[0]
    verdict = newest.metadata.get("gate")
    why = (f"failed its quality gate ({verdict.get('summary')})" if isinstance(verdict, dict) and
           not verdict.get("passed", False) else "is not deployed")
    return ModelGatedError(
        f"no {what} of '{name}' is deployed: the newest, {newest.model_id} (v{newest.version}), {why}; "
        "retrain, or deploy a version by hand (POST /v1/ensemble/deployments) to overrule its gate",
        details={"model_id": newest.model_id, "gate": verdict if isinstance(verdict, dict) else None,
                 "symbol": symbol, "name": name})


def input_seed(model_id: str, x: npt.NDArray[np.float32], samples: int) -> int:
    """The dropout seed of a request without one: a hash of the network, the scaled inputs and the sample count."""
    h = hashlib.sha256(f"{model_id}:{samples}:{x.shape}:".encode())
    h.update(np.ascontiguousarray(x, dtype=np.float32).tobytes())
    return int.from_bytes(h.digest()[:4], "big")


def load(registry: ModelRegistry, model_id: str, device: str) -> tuple[ExecutionModel, ModelInfo]:
    """The stored network ``model_id`` on ``device``, from the registry's cache or rebuilt.

    Raises:
        ModelNotFoundError: unknown id, or not an execution network (404).
        ArtifactIntegrityError: the artifact changed, or does not rebuild (409).
    """
    from quantcrew.ml_server.services.execution.model import ExecutionModel  # torch loads with the first network

    return adapter.rebuild(registry, model_id, ExecutionModel, device=device)


@dataclass(frozen=True)
class PreparedExecution:
    """One request's scaled network inputs and what the reply needs about its input."""

    x: npt.NDArray[np.float32]
    direction: FloatArray
    data_hash: str
    as_of: datetime | None
    raw: FloatArray | None = None  # the inputs before scaling (what the prediction log keeps of the last row)
    names: tuple[str, ...] = xin.EXECUTION_INPUTS  # the names of raw's columns


def prepare(req: ExecutionRequest, model: ExecutionModel, *, max_request_batch: int) -> PreparedExecution:
    """Scaled network inputs, one row per decision.

    Raises:
        InvalidInputError: more decisions than the cap, or too few bars for the market inputs.
    """
    k = len(req.signals)
    if k > max_request_batch:
        raise InvalidInputError(f"signals has {k} decisions; the cap is {max_request_batch}",
                                details=[{"loc": ["signals"], "msg": f"at most {max_request_batch}"}])
    strategic = np.array([[_SIGNAL[s.signal], s.confidence, s.predictive_entropy, s.divergence_metric,
                           s.agreement_score] for s in req.signals], dtype=np.float64)
    if req.data is not None:
        need = _MARKET_WARMUP + k - 1
        if len(req.data) < need:
            raise InvalidInputError(
                f"data has {len(req.data)} bars; market conditions need {_MARKET_WARMUP} bars of history "
                f"for each of the last {k} bars, so at least {need} are needed",
                details=[{"loc": ["data"], "msg": f"need at least {need} rows"}])
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
                                details=[{"loc": ["data"], "msg": "non-finite market inputs"}])
    scaled = model.transform(x)
    if not np.isfinite(scaled).all():  # the float32 inputs of the network overflow when scaled
        i, j = (int(v) for v in np.argwhere(~np.isfinite(scaled))[0])
        name = xin.EXECUTION_INPUTS[j]
        where = ["market", i, name] if req.market is not None else ["data"]
        raise InvalidInputError(
            f"market condition '{name}' of decision {i} is {x[i, j]:g}: too large for the network, whose "
            "scaled inputs it overflows", details=[{"loc": where, "msg": "too large for the network's inputs"}])
    return PreparedExecution(scaled, strategic[:, 0], data_hash, as_of, raw=x)


def _digest(a: FloatArray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _interval(s: Summary, i: int) -> Interval:
    return Interval(mean=float(s.mean[i]), std=float(s.std[i]), lower=float(s.lower[i]), upper=float(s.upper[i]))


def finish(req: ExecutionRequest, info: ModelInfo, prepared: PreparedExecution, drawn: PlanSamples,
           samples: int, seed: int | None = None) -> ExecutionResponse:
    """The draws summarised per decision: size and wait-probability intervals, and the timing."""
    size = summarize(drawn.size, req.level)
    wait = summarize(drawn.wait_prob, req.level)
    plans = []
    for i, d in enumerate(prepared.direction):
        direction = int(d)
        timing: Literal["now", "wait"] = "wait" if wait.mean[i] > 0.5 and direction != 0 else "now"
        plans.append(ExecutionPlan(size=_interval(size, i), wait_probability=_interval(wait, i), timing=timing,
                                   direction=direction, target_fraction=float(direction * size.mean[i])))
    return ExecutionResponse(
        model_id=info.model_id, model_version=info.version, method_used="mc_dropout", fallback=False,
        data_hash=prepared.data_hash, seed=req.seed if seed is None else seed, as_of=prepared.as_of, plans=plans,
        decision_type=req.decision_type, samples=samples, level=req.level,
    )


async def plan(req: ExecutionRequest, registry: ModelRegistry, deployments: DeploymentStore,
               runtime: InferenceRuntime, log: PredictionLog | None = None) -> ExecutionResponse:
    """Size (fraction of the maximum position) and timing (now / wait) per decision, with MC-dropout intervals.

    The last decision's plan is logged on ``log``.

    The dropout masks are seeded by ``req.seed``, else by :func:`input_seed`: one plan per input.

    Raises:
        InvalidInputError: samples over the cap, too many decisions, too little market history (422).
        NotFoundError: no such network, or none was trained for the symbol (404).
        ModelGatedError: networks were trained for the symbol, none passed its gate (409).
        ArtifactIntegrityError: the stored network does not rebuild (409).
    """
    inf = runtime.inference
    samples = check_samples(req.samples or inf.execution_samples[req.decision_type], inf.max_samples)
    model_id = await to_thread.run_sync(resolve_model_id, registry, deployments, req.model_id, req.symbol)
    model, info = await to_thread.run_sync(load, registry, model_id, runtime.device)
    prepared = await to_thread.run_sync(partial(prepare, req, model, max_request_batch=inf.max_request_batch))
    seed = req.seed if req.seed is not None else input_seed(model_id, prepared.x, samples)
    run = partial(model.batch_sample, samples=samples)
    drawn: PlanSamples = await runtime.batched(f"execution:{model_id}:{samples}", "execution", run,
                                               SeededRows(prepared.x, seed))
    reply = finish(req, info, prepared, drawn, samples, seed)
    capture.execution(log, req, info, prepared, reply)
    return reply
