"""Causal regime labels: every bar labelled by a model fitted on earlier bars only (a walk-forward job).

The stateless ``/v1/regime/label`` fits one model on the whole window it is sent: each bar's
filter sees bars ``<= t``, but the model, its feature scaling and its state names come from
the whole window, so only the LAST bar's label is what was knowable at that close. A backtest
that reads past labels from such a call reads the future.

This job labels as a trader would have, bar after bar. On an EXPANDING window:

* fit ``k`` is fitted on bars ``0 .. s_k - 1``, with ``s_k = min_train + k * refit_every``,
  exactly as the stateless call fits (BIC over the state counts, restarts, seed);
* it labels bars ``s_k .. s_{k+1} - 1``: bar ``t``'s label is the argmax of the FILTERED label
  probabilities (the forward pass from bar 1 to bar ``t`` under that fit, read with the trend
  of the prices up to ``t``; :mod:`~quantcrew.ml_server.services.regime.trend`);
* the first ``min_train`` bars get no label.

So bar ``t`` depends on bars ``<= t`` only, and on nothing later: appending bars adds fits at
the end and never changes an earlier label (fits are deterministic for a seed). Each fit is
refitted from scratch (no warm start from the previous one), so a fit's states and names do
not carry over: a regime the first window never saw is found at the first refit that sees it.

:func:`prepare` checks a request (a 422 naming the field, before any job starts); :func:`run`
is the job; :func:`causal_labels` is the computation, for callers that hold bars already (the
benches). Cancelling stops before the next fit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from quantcrew.data.loaders import bars_hash
from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.jobs import JobCancelled, JobContext, JobManager
from quantcrew.ml_server.schemas.jobs import JobInfo
from quantcrew.ml_server.schemas.regime import (
    REGIME_LABELS,
    RegimeCausalFit,
    RegimeCausalRequest,
    RegimeCausalResult,
    RegimeLabel,
)
from quantcrew.ml_server.services.bars import Bars, bars_from_payload
from quantcrew.ml_server.services.regime.model import RegimeDetector

__all__ = ["JOB_KIND", "MAX_FITS", "CausalPlan", "causal_labels", "head", "prepare", "run", "start"]

JOB_KIND = "regime_causal"
MAX_FITS = 2_000
"""Most refits one job may make (``refit_every`` too small for the bars sent is a 422)."""

_DETECTOR_FIELDS = ("n_states", "min_states", "max_states", "features", "seed", "n_restarts", "trend_reading")


@dataclass(frozen=True)
class CausalPlan:
    """A checked causal labelling, ready to run.

    Attributes:
        bars: Every bar sent.
        detector: Constructor arguments of each fit's :class:`RegimeDetector`.
        min_train: Bars of the first fit.
        refit_every: Bars between refits.
        symbol: What the bars are (for the record).
        include_probabilities: Return every label's probability per bar.
    """

    bars: Bars
    detector: dict[str, Any]
    min_train: int
    refit_every: int
    symbol: str | None = None
    include_probabilities: bool = False

    @property
    def starts(self) -> list[int]:
        """First bar each fit labels (= the number of bars it is fitted on)."""
        return list(range(self.min_train, len(self.bars), self.refit_every))


def prepare(req: RegimeCausalRequest) -> CausalPlan:
    """Check a request and build its plan.

    Raises:
        InvalidInputError: fewer than ``min_train + 1`` bars, or more than :data:`MAX_FITS` refits.
    """
    n = len(req.data)
    if n < req.min_train + 1:
        message = (f"data has {n} bars; min_train={req.min_train} needs at least {req.min_train + 1} "
                   "(the bars of the first fit and one bar to label)")
        raise InvalidInputError(message, details=[{"loc": ["min_train"], "msg": message},
                                                  {"loc": ["data", "timestamps"], "msg": message}])
    fits = -(-(n - req.min_train) // req.refit_every)
    if fits > MAX_FITS:
        message = (f"refit_every={req.refit_every} makes {fits} fits of {n} bars; at most {MAX_FITS} are allowed: "
                   f"use refit_every >= {-(-(n - req.min_train) // MAX_FITS)}")
        raise InvalidInputError(message, details=[{"loc": ["refit_every"], "msg": message}])
    bars = bars_from_payload(req.data, min_rows=req.min_train + 1)
    detector = req.model_dump(include=set(_DETECTOR_FIELDS))
    detector["features"] = tuple(detector["features"])
    return CausalPlan(bars=bars, detector=detector, min_train=req.min_train, refit_every=req.refit_every,
                      symbol=req.symbol, include_probabilities=req.include_probabilities)


def start(req: RegimeCausalRequest, jobs: JobManager) -> JobInfo:
    """Check the request now (bad input is a 4xx here), then submit the job."""
    plan = prepare(req)
    iso = plan.bars.iso()
    params = {
        "symbol": plan.symbol, "n_bars": len(plan.bars), "data_hash": plan.bars.data_hash,
        "first_bar": iso[0], "last_bar": iso[-1], "min_train": plan.min_train, "refit_every": plan.refit_every,
        "fits": len(plan.starts), "first_label": iso[plan.min_train], **plan.detector,
    }
    return jobs.submit(JOB_KIND, lambda ctx: run(plan, ctx), params=params)


def run(plan: CausalPlan, ctx: JobContext) -> dict[str, Any]:
    """The job: :func:`causal_labels`, reported per fit, as a JSON-able dict (a :class:`RegimeCausalResult`)."""
    return causal_labels(plan, ctx).model_dump(mode="json")


def head(bars: Bars, n: int) -> Bars:
    """The first ``n`` bars (hashed again: the hash is the provenance of what a fit saw)."""
    cols = (bars.open[:n], bars.high[:n], bars.low[:n], bars.close[:n])
    volume = None if bars.volume is None else bars.volume[:n]
    digest = bars_hash(bars.times[:n], cols + ((volume,) if volume is not None else ()))
    return Bars(bars.timestamps[:n], bars.times[:n], *cols, volume, digest)


def causal_labels(plan: CausalPlan, ctx: JobContext | None = None) -> RegimeCausalResult:
    """Label every bar from the latest fit on earlier bars (see the module docstring).

    Args:
        plan: The checked plan.
        ctx: The job's context (progress, cancellation), or None outside a job.

    Raises:
        JobCancelled: cancellation was requested; raised before the next fit.
    """
    bars, starts = plan.bars, plan.starts
    n = len(bars)
    iso = bars.iso()
    labels: list[RegimeLabel | None] = [None] * n
    plain: list[RegimeLabel | None] = [None] * n
    prob = np.full(n, np.nan)
    every = {label: np.full(n, np.nan) for label in REGIME_LABELS}
    bear: list[bool | None] = [None] * n
    owner: list[int | None] = [None] * n
    fits: list[RegimeCausalFit] = []
    for k, first in enumerate(starts):
        if ctx is not None and ctx.cancelled:
            raise JobCancelled(f"cancelled after {k} of {len(starts)} fits (bars up to {iso[first - 1]} labelled)")
        end = min(first + plan.refit_every, n)
        t0 = time.perf_counter()
        detector = RegimeDetector(**plan.detector).fit(head(bars, first))
        filtering = detector.filter(head(bars, end))  # row i is bar i + 1
        rows = slice(first - 1, end - 1)
        for j, label, alone in zip(range(first, end), filtering.labels[rows], filtering.filter_labels[rows],
                                   strict=True):
            labels[j], plain[j], owner[j] = label, alone, k
        for j, flag in zip(range(first, end), filtering.trend.bear[rows].tolist(), strict=True):
            bear[j] = bool(flag)
        for label in REGIME_LABELS:
            every[label][first:end] = filtering.label_probs[label][rows]
        fits.append(RegimeCausalFit(
            first_bar=first, date=iso[first], train_end=iso[first - 1], bars_used=first, bars_labelled=end - first,
            n_states=detector.n_states_, state_labels=list(detector.state_labels_), converged=detector.converged_,
            method_used=detector.method_used_, fallback=detector.fallback_,
            fallback_reason=detector.fallback_reason_, seconds=time.perf_counter() - t0,
        ))
        if ctx is not None:
            ctx.report(done=k + 1, total=len(starts), message=f"fit {k + 1}/{len(starts)} on bars up to "
                       f"{iso[first - 1]} labelled {iso[first]}..{iso[end - 1]}",
                       metrics={"bars_labelled": float(end - plan.min_train)})
    for j in range(plan.min_train, n):
        named = labels[j]
        if named is not None:
            prob[j] = every[named][j]
    counts = {label: sum(1 for x in labels if x == label) for label in REGIME_LABELS}
    return RegimeCausalResult(
        symbol=plan.symbol, data_hash=bars.data_hash, seed=int(plan.detector.get("seed", 0)),
        min_train=plan.min_train, refit_every=plan.refit_every, timestamps=iso, labels=labels,
        probabilities=_nullable(prob),
        label_probabilities={label: _nullable(p) for label, p in every.items()} if plan.include_probabilities else None,
        filter_labels=plain, bear_trend=bear, fit_of_bar=owner, fits=fits, counts=counts,
    )


def _nullable(values: np.ndarray[Any, np.dtype[np.float64]]) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in values.tolist()]
