"""Ensemble predictions: which version answers, its input windows, and the reply.

The forward pass itself runs elsewhere (through the dynamic batcher, on the device thread);
this module prepares its input and turns its logits into the reply, both in plain numpy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from quantcrew.ml_server.errors import InvalidInputError, NotFoundError
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.ensemble import (
    CLASS_LABELS,
    EnsemblePredictRequest,
    EnsemblePredictResponse,
    ServedBy,
    SignalPoint,
    SourceWeight,
)
from quantcrew.ml_server.schemas.rl import RLActRequest
from quantcrew.ml_server.services import calibration
from quantcrew.ml_server.services.bars import bars_from_payload
from quantcrew.ml_server.services.deployment import Deployment, DeploymentStore
from quantcrew.ml_server.services.ensemble_features import WARMUP, build_features
from quantcrew.ml_server.services.ensemble_model import LoadedEnsemble, scaled_windows
from quantcrew.ml_server.services.matrix import check_columns, matrix_from_payload

__all__ = ["Prepared", "Resolved", "finish", "model_name", "prepare", "resolve", "rl_source"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Resolved:
    """The version that answers a request and the shadows that also run."""

    model_id: str
    served_by: ServedBy
    shadows: list[Deployment]
    request_key: str


def model_name(req: EnsemblePredictRequest) -> str:
    return req.name or f"ensemble-{req.symbol}"


def resolve(req: EnsemblePredictRequest, registry: ModelRegistry, deployments: DeploymentStore) -> Resolved:
    """A pinned ``model_id``, or the deployment stages of the model name with the sticky request key."""
    key = req.request_key or req.symbol or req.name or ""
    if req.model_id is not None:
        info = registry.get(req.model_id)
        if info.family != "ensemble":
            raise NotFoundError(f"model '{req.model_id}' is a {info.family} model, not an ensemble",
                                details={"model_id": req.model_id})
        d = deployments.get(req.model_id)
        return Resolved(req.model_id, ServedBy(model_id=info.model_id, name=info.name, version=info.version,
                                               stage=d.stage if d else info.stage, variant="pinned", bucket=None),
                        [], key)
    route = deployments.route(model_name(req), key)
    p = route.primary
    return Resolved(p.model_id, ServedBy(model_id=p.model_id, name=p.name, version=p.version, stage=p.stage,
                                         variant=route.variant, bucket=route.bucket), route.shadows, key)


@dataclass(frozen=True)
class Prepared:
    """One request's scaled windows and what the reply needs about its input."""

    windows: npt.NDArray[np.float32]
    timestamps: list[datetime | None]
    data_hash: str
    as_of: datetime | None


def _too_short(field: str, have: int, need: int, window: int, last: int) -> InvalidInputError:
    msg = (f"{field} has {have} rows; this model reads {window}-bar windows"
           + (f" of features that need {WARMUP} warm-up bars" if field == "data" else "")
           + (f" for each of the last {last} bars" if last > 1 else "") + f", so at least {need} are needed")
    return InvalidInputError(msg, details=[{"loc": ["body", field], "msg": f"need at least {need} rows"}])


def prepare(req: EnsemblePredictRequest, model: LoadedEnsemble, *, max_request_batch: int) -> Prepared:
    """Features (computed here from bars, or as sent) -> standardised windows ending at each requested bar.

    Raises:
        InvalidInputError: too few rows for the window, feature columns that do not match the
            model, or more windows than the server's ``inference.max_request_batch``.
    """
    if req.last > max_request_batch:
        raise InvalidInputError(
            f"last={req.last} asks for a batch of {req.last} windows; the cap is {max_request_batch}",
            details=[{"loc": ["body", "last"], "msg": f"at most {max_request_batch}"}])
    window = model.spec.window
    as_of: datetime | None
    if req.data is not None:
        need = WARMUP + window + req.last - 1
        if len(req.data) < need:
            raise _too_short("data", len(req.data), need, window, req.last)
        bars = bars_from_payload(req.data, min_rows=need)
        feats = build_features(bars.open, bars.high, bars.low, bars.close, bars.volume)
        stamps: list[datetime | None] = list(bars.timestamps)
        data_hash, as_of = bars.data_hash, bars.as_of
    else:
        assert req.features is not None
        check_columns(list(model.spec.feature_names), list(req.features.columns), field="features")
        need = window + req.last - 1
        if len(req.features.values) < need:
            raise _too_short("features", len(req.features.values), need, window, req.last)
        matrix = matrix_from_payload(req.features, min_rows=need, field="features")
        feats = matrix.values
        ts = req.features.timestamps
        stamps = list(ts) if ts is not None else [None] * len(feats)
        data_hash, as_of = matrix.data_hash, matrix.as_of
    n = len(feats)
    rows = np.arange(n - req.last, n, dtype=np.int64)
    windows = scaled_windows(feats, model.mean, model.std, rows, window)
    return Prepared(windows, [stamps[int(r)] for r in rows], data_hash, as_of)


def rl_may_join(req: EnsemblePredictRequest) -> bool:
    """Whether the request allows an RL policy to join (the registry is not asked here)."""
    return (req.include_rl and req.rl_weight > 0.0 and req.data is not None and req.last == 1
            and req.symbol is not None)


def rl_source(req: EnsemblePredictRequest, registry: ModelRegistry) -> tuple[str, FloatArray] | None:
    """The newest discrete actor-critic RL policy trained on this symbol, as a probability source.

    It joins only for one bar sent as OHLCV (a policy observes its own features at the last
    bar); its short / flat / long probabilities stand for down / flat / up.
    """
    if not rl_may_join(req) or req.data is None:
        return None
    stored = [m for m in registry.list(family="rl") if m.metadata.get("symbol") == req.symbol
              and m.metadata.get("action_mode") == "discrete" and m.metadata.get("algorithm") in ("ppo", "a2c")]
    if not stored:
        return None
    from quantcrew.ml_server.services import rl  # stable-baselines3 loads only when a policy joins

    chosen = next((m for m in stored if m.metadata.get("agent") == "balanced"), stored[0])
    answer = rl.act(RLActRequest(data=req.data, model_ids=[chosen.model_id]), registry).actions[0]
    if answer.probabilities is None:
        return None
    p = np.array([answer.probabilities[k] for k in ("short", "flat", "long")], dtype=np.float64)
    return f"rl:{answer.agent}-{answer.algorithm}", p


def finish(req: EnsemblePredictRequest, model: LoadedEnsemble, resolved: Resolved, prepared: Prepared,
           logits: Mapping[str, npt.NDArray[np.float32]], *, samples: int | None, shadows_run: int = 0,
           rl: tuple[str, FloatArray] | None = None) -> EnsemblePredictResponse:
    """Calibrated, weighted member probabilities -> the signal and its uncertainty metrics."""
    mc = samples is not None
    archs, probs, weights = model.member_probabilities(logits, mc=mc)
    temps = model.spec.mc_temperatures if mc else model.spec.temperatures
    sources = [SourceWeight(source=a, members=int(logits[a].shape[0]), weight=model.spec.weights[a],
                            temperature=temps[a]) for a in archs]
    if rl is not None:
        weights = weights * (1.0 - req.rl_weight)
        probs = np.concatenate([probs, rl[1][None, None, :]], axis=0)
        weights = np.append(weights, req.rl_weight)
        sources = [s.model_copy(update={"weight": s.weight * (1.0 - req.rl_weight)}) for s in sources]
        sources.append(SourceWeight(source=rl[0], members=1, weight=req.rl_weight, temperature=1.0))
    unc = calibration.uncertainty(probs, weights)
    points = [_point(unc, i, ts) for i, ts in enumerate(prepared.timestamps)]
    last = points[-1]
    method = ("mc_dropout" if mc else "ensemble") + ("+rl" if rl is not None else "")
    return EnsemblePredictResponse(
        model_id=model.info.model_id, model_version=model.info.version, method_used=method, fallback=False,
        data_hash=prepared.data_hash, seed=req.seed, as_of=prepared.as_of,
        signal=last.signal, position=last.position, probabilities=last.probabilities, confidence=last.confidence,
        agreement_score=last.agreement_score, consensus_strength=last.consensus_strength,
        divergence_metric=last.divergence_metric, predictive_entropy=last.predictive_entropy, points=points,
        sources=sources, served_by=resolved.served_by, samples=samples, shadows_run=shadows_run,
        window=model.spec.window, horizon=model.spec.horizon,
    )


def _point(unc: calibration.Uncertainty, i: int, ts: datetime | None) -> SignalPoint:
    p = unc.probs[i]
    k = int(np.argmax(p))
    return SignalPoint(
        timestamp=ts, signal=CLASS_LABELS[k], position=k - 1,
        probabilities={c: float(v) for c, v in zip(CLASS_LABELS, p, strict=True)}, confidence=float(p[k]),
        agreement_score=float(unc.agreement_score[i]), consensus_strength=float(unc.consensus_strength[i]),
        divergence_metric=float(unc.divergence_metric[i]), predictive_entropy=float(unc.predictive_entropy[i]),
    )


def shadow_output(reply: EnsemblePredictResponse) -> dict[str, float | str | int | None]:
    """What the shadow log keeps of a shadow version's answer."""
    return {"signal": reply.signal, "confidence": reply.confidence, "model_version": reply.model_version,
            **{f"p_{k}": v for k, v in reply.probabilities.items()}, "divergence_metric": reply.divergence_metric}

