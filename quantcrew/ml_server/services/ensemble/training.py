"""Walk-forward training of the ensemble (and of the execution network), run as a job.

For each fold an :class:`EnsembleModel` is fitted on the fold's training span: the feature
scaler on its fit rows only, every architecture's members with early stopping on a later
validation tail (a purge gap apart), then the temperature of the ensemble and of MC dropout
and the architecture weights on that tail; the fold's test rows are then predicted by both.
The stored model is a final fit on every labelled bar the same way. The execution network
(:class:`ExecutionModel`) trains on the ensemble's out-of-sample signals (never on in-sample
ones, which are overconfident). Both are written through the registry adapters.

Both are judged by their quality gate (:mod:`quantcrew.ml_server.services.gate`) on rows they
were not trained on, and the verdict is stored with the model (metadata ``gate``). The
ensemble's gate reads the walk-forward test rows of the method that serves by default (the
ensemble of members, not MC dropout): its mean log loss against the forecast that always says
the class frequencies of the first fold's training labels. The execution network's gate reads
the tail of those rows it did not train on: the Sharpe of next-bar returns sized by it against
sized by the rule that stands in for it (:mod:`quantcrew.ml_server.services.execution.rule`).
A model that passes is deployed (the ensemble at the stage asked for, the execution network
``full``); one that fails is stored with the registry stage ``gated`` and not deployed. With
``deploy=False`` (a backtest's per-window models) neither is deployed, whatever its verdict.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.fanout import TaskPool, Watch
from quantcrew.ml_server.jobs import JobCancelled, JobContext
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.common import ModelInfo
from quantcrew.ml_server.schemas.ensemble import (
    CLASS_LABELS,
    CalibrationReport,
    EnsembleTrainRequest,
    EnsembleTrainResult,
    FoldReport,
    ReliabilityBin,
)
from quantcrew.ml_server.schemas.gate import GateVerdict
from quantcrew.ml_server.services import adapter
from quantcrew.ml_server.services.bars import Bars
from quantcrew.ml_server.services.deployment import Deployment, DeploymentStore, deployment_info
from quantcrew.ml_server.services.ensemble.features import FEATURE_NAMES, WARMUP, build_features
from quantcrew.ml_server.services.ensemble.fit import TrainConfig
from quantcrew.ml_server.services.ensemble.folds import Fold, direction_labels, holdout_split, walk_forward_folds
from quantcrew.ml_server.services.ensemble.model import EnsembleModel
from quantcrew.ml_server.services.ensemble.naming import ensemble_name
from quantcrew.ml_server.services.ensemble.nets import NetConfig
from quantcrew.ml_server.services.execution import inputs as xin
from quantcrew.ml_server.services.execution.fit import ExecTrainConfig
from quantcrew.ml_server.services.execution.model import ExecutionModel
from quantcrew.ml_server.services.execution.rule import RULE as EXECUTION_RULE
from quantcrew.ml_server.services.execution.rule import next_bar_returns, rule_sizes
from quantcrew.ml_server.services.execution.service import execution_name
from quantcrew.ml_server.services.gate import ensemble_gate, execution_gate
from quantcrew.ml_server.services.monitor.reference import save_reference
from quantcrew.quant import calibration

__all__ = ["ENSEMBLE_RULE", "GATED_STAGE", "EnsemblePlan", "prepare_plan", "strategic_inputs", "train_ensemble"]

FloatArray = npt.NDArray[np.float64]
_MIN_FIT = 40
_EXEC_MIN_ROWS = 120
_REFERENCE_DRAWS = 16
"""MC-dropout draws of the execution network's size per training row in its drift reference."""
_GATE_SAMPLES = 30  # MC-dropout draws per row when the execution gate sizes with the network
GATED_STAGE = "gated"
"""The registry stage of a version that failed its gate (stored, never deployed)."""
ENSEMBLE_RULE = "trend rules: softmax([-z, 0, z]) of 5/20/60-bar return z-scores"
"""The rule that answers for the ensemble when none is deployed (the agent side's fallback)."""


@dataclass
class EnsemblePlan:
    """A validated request with its features and labels, ready to run."""

    req: EnsembleTrainRequest
    bars: Bars
    name: str
    features: FloatArray
    labels: npt.NDArray[np.int64]
    first: int
    stop: int
    folds: list[Fold]
    device: str
    compute_threads: int
    pool: TaskPool = TaskPool()


def _bad(field_name: str, msg: str) -> InvalidInputError:
    return InvalidInputError(msg, details=[{"loc": [field_name], "msg": msg}])


def prepare_plan(req: EnsembleTrainRequest, bars: Bars, *, device: str, compute_threads: int,
                 pool: TaskPool | None = None) -> EnsemblePlan:
    """Features, labels and folds; every problem found here is a 422 before any job starts."""
    n = len(bars)
    first = WARMUP + req.window - 1
    stop = n - req.horizon
    labelled = stop - first
    if labelled < 4 * _MIN_FIT:
        raise _bad("data", f"{n} bars give {max(labelled, 0)} labelled windows; need at least {4 * _MIN_FIT} "
                           f"({WARMUP} warm-up bars + window {req.window} + horizon {req.horizon} + "
                           f"{4 * _MIN_FIT} rows): send more bars or shorten window / horizon")
    if req.test_start is None:
        test_start = first + int(labelled * 0.7)
    else:
        stamp = np.datetime64(req.test_start.replace(tzinfo=None), "ns")
        test_start = int(np.searchsorted(bars.times, stamp, side="left"))
        if not first < test_start < stop:
            raise _bad("test_start", f"test_start {req.test_start.date()} leaves no training or no test rows: "
                                     f"labelled bars run {bars.timestamps[first].date()} to "
                                     f"{bars.timestamps[stop - 1].date()}")
    try:
        folds = walk_forward_folds(first, stop, test_start, folds=req.folds, horizon=req.horizon, purge=req.purge,
                                   scheme=req.scheme, train_size=req.train_size, min_train=2 * _MIN_FIT)
    except ValueError as exc:
        raise _bad("folds", str(exc)) from exc
    features = build_features(bars.open, bars.high, bars.low, bars.close, bars.volume)
    labels, _ = direction_labels(bars.close, horizon=req.horizon, up=req.up_threshold, down=req.down_threshold)
    name = req.name or ensemble_name(req.symbol)
    return EnsemblePlan(req, bars, name, features, labels, first, stop, folds, device, compute_threads,
                        pool or TaskPool())


# -- one fit -----------------------------------------------------------------------------------


class _Progress:
    """Counts epochs across every fit of the job and reports them.

    A net that stops early has its remaining epochs counted as done once the next net starts
    (or its fit ends), so ``done`` reaches ``total`` whatever early stopping did.
    """

    def __init__(self, ctx: JobContext, total: int) -> None:
        self.ctx, self.total, self.done = ctx, total, 0
        self._left = 0  # epochs the net in training will not run, once it has stopped

    def epoch(self, what: str) -> Callable[[str, int, int, float, float], None]:
        """The report of one fit's nets (``what`` and the architecture name the message)."""
        def report(arch: str, epoch: int, epochs: int, train_loss: float, val_loss: float) -> None:
            self.net_epoch(f"{what} {arch}")(epoch, epochs, train_loss, val_loss)
        return report

    def net_epoch(self, what: str) -> Callable[[int, int, float, float], None]:
        """The report of one net's epochs."""
        def report(epoch: int, epochs: int, train_loss: float, val_loss: float) -> None:
            if epoch == 1:
                self.settle()
            self.done += 1
            self._left = epochs - epoch
            self.ctx.report(done=self.done, total=self.total, message=f"{what}: epoch {epoch}/{epochs}",
                            metrics={"train_loss": train_loss, "val_loss": val_loss})
        return report

    def settle(self) -> None:
        """Count the epochs the last net skipped by stopping early."""
        self.done += self._left
        self._left = 0

    def reach(self, done: int, message: str) -> None:
        """At least ``done`` epochs are done (a fold trained as a Ray task reports nothing until it ends)."""
        self.settle()
        if done > self.done:
            self.done = done
            self.ctx.report(done=self.done, total=self.total, message=message)


def _config(req: EnsembleTrainRequest, arch: str) -> NetConfig:
    return NetConfig(arch=arch, members=req.members, n_features=len(FEATURE_NAMES), window=req.window,
                     hidden=req.hidden, layers=req.layers, heads=req.heads, dropout=req.dropout)


def _rows(start: int, stop: int) -> npt.NDArray[np.int64]:
    return np.arange(start, stop, dtype=np.int64)


@dataclass
class _Fitted:
    model: EnsembleModel
    n_fit: int
    n_val: int


def _fit(plan: EnsemblePlan, start: int, stop: int, seed: int,
         on_epoch: Callable[[str, int, int, float, float], None], cancelled: Callable[[], bool]) -> _Fitted:
    req = plan.req
    fit_rows, val_rows = holdout_split(start, stop, fraction=req.validation_fraction, gap=req.horizon,
                                       min_rows=_MIN_FIT)
    train = TrainConfig(epochs=req.epochs, batch_size=req.batch_size, lr=req.learning_rate, patience=req.patience,
                        seed=seed)
    model = EnsembleModel({a: _config(req, a) for a in req.architectures}, window=req.window, horizon=req.horizon,
                          up_threshold=req.up_threshold, down_threshold=req.down_threshold, symbol=req.symbol,
                          feature_names=FEATURE_NAMES, train=train, mc_samples=req.mc_samples, device=plan.device)
    model.fit(plan.features, plan.labels, fit_rows, val_rows, on_epoch=on_epoch, should_stop=cancelled)
    if model.cancelled_:
        raise JobCancelled()
    return _Fitted(model, fit_rows[1] - fit_rows[0], val_rows[1] - val_rows[0])


@dataclass(frozen=True)
class _FoldOut:
    """One fold's fit and out-of-sample probabilities: plain data, so a fold trained in a Ray task comes back
    without pickling a model."""

    n_fit: int
    n_val: int
    temperatures: dict[str, float]
    weights: dict[str, float]
    ens: dict[str, FloatArray]
    mcd: dict[str, FloatArray]
    mc_mix: FloatArray
    unc: calibration.Uncertainty


def _fold(plan: EnsemblePlan, fold: Fold, watch: Watch) -> _FoldOut:
    """Fit on the fold's training span, predict its test rows (a piece of the job)."""
    seed = plan.req.seed + 1000 * fold.index
    fitted = _fit(plan, fold.train_start, fold.train_stop, seed, watch.report, watch.cancelled)
    ens, mcd, mc_mix, unc = _predict(plan, fitted.model, _rows(fold.test_start, fold.test_stop), seed)
    model = fitted.model
    return _FoldOut(fitted.n_fit, fitted.n_val, dict(model.temperatures_), dict(model.weights_), ens, mcd, mc_mix,
                    unc)


def _predict(plan: EnsemblePlan, model: EnsembleModel, rows: npt.NDArray[np.int64],
             seed: int) -> tuple[dict[str, FloatArray], dict[str, FloatArray], FloatArray, calibration.Uncertainty]:
    """Ensemble and MC-dropout probabilities per architecture, and the combined ensemble's uncertainty."""
    x = model.windows(plan.features, rows)
    logits = model.logits(x)
    mc_logits = model.mc_logits(x, plan.req.mc_samples, seed + 104729)
    ens: dict[str, FloatArray] = {}
    mcd: dict[str, FloatArray] = {}
    member_probs, member_w = [], []
    for arch, lg in logits.items():
        p = calibration.softmax(lg.astype(np.float64), model.temperatures_[arch])
        ens[arch] = p.mean(axis=0)
        member_probs.append(p)
        member_w.append(np.full(len(p), model.weights_[arch] / len(p)))
        mcd[arch] = calibration.mean_probs(mc_logits[arch].astype(np.float64), model.mc_temperatures_[arch])
    unc = calibration.uncertainty(np.concatenate(member_probs), np.concatenate(member_w))
    mc_mix = sum(model.weights_[a] * mcd[a] for a in mcd)
    assert isinstance(mc_mix, np.ndarray)
    return ens, mcd, mc_mix, unc


def _report(method: str, probs: FloatArray, labels: npt.NDArray[np.int64]) -> CalibrationReport:
    bins = calibration.reliability_bins(probs, labels, bins=15)
    return CalibrationReport(
        method=method, n=len(labels), accuracy=float(np.mean(probs.argmax(axis=1) == labels)),
        ece=calibration.expected_calibration_error(probs, labels, bins=15),
        brier=calibration.brier_score(probs, labels), nll=calibration.negative_log_likelihood(probs, labels),
        reliability=[ReliabilityBin(lower=b["lo"], upper=b["hi"], count=int(b["count"]),
                                    confidence=b["confidence"], accuracy=b["accuracy"]) for b in bins],
    )


# -- the job -----------------------------------------------------------------------------------


def train_ensemble(plan: EnsemblePlan, registry: ModelRegistry, deployments: DeploymentStore,
                   ctx: JobContext) -> dict[str, Any]:
    """The job: walk-forward folds, the final fit, the execution network; returns an EnsembleTrainResult."""
    torch.set_num_threads(max(plan.compute_threads, 1))  # as the rl family does: the cap is process-wide
    return _train(plan, registry, deployments, ctx)


def _train(plan: EnsemblePlan, registry: ModelRegistry, deployments: DeploymentStore,
           ctx: JobContext) -> dict[str, Any]:
    req, iso = plan.req, plan.bars.iso()
    started = time.perf_counter()
    archs = len(req.architectures)
    exec_epochs = ExecTrainConfig().epochs if req.execution else 0
    progress = _Progress(ctx, (len(plan.folds) + 1) * archs * req.epochs + exec_epochs)
    fold_reports: list[FoldReport] = []
    oos_rows: list[npt.NDArray[np.int64]] = []
    oos_ens: dict[str, list[FloatArray]] = {a: [] for a in req.architectures}
    oos_mc: dict[str, list[FloatArray]] = {a: [] for a in req.architectures}
    oos_mix: list[FloatArray] = []
    oos_mc_mix: list[FloatArray] = []
    oos_unc: list[calibration.Uncertainty] = []
    per_fold = archs * req.epochs
    ended: list[int] = []

    def fold_epoch(k: int, *args: Any) -> None:
        progress.epoch(f"fold {k + 1}")(*args)

    def fold_ended(k: int, _out: _FoldOut) -> None:
        ended.append(k)
        progress.reach(len(ended) * per_fold, f"fold {k + 1} done ({len(ended)} of {len(plan.folds)})")

    began = time.perf_counter()
    outs, where = plan.pool.map(_fold, plan, plan.folds, cancelled=lambda: ctx.cancelled, progress=fold_epoch,
                                finished=fold_ended, device=plan.device)
    folds_seconds = round(time.perf_counter() - began, 3)
    for fold, out in zip(plan.folds, outs, strict=True):
        ens, mcd, mc_mix, unc = out.ens, out.mcd, out.mc_mix, out.unc
        rows = _rows(fold.test_start, fold.test_stop)
        y = plan.labels[rows]
        oos_rows.append(rows)
        for a in req.architectures:
            oos_ens[a].append(ens[a])
            oos_mc[a].append(mcd[a])
        oos_mix.append(unc.probs)
        oos_mc_mix.append(mc_mix)
        oos_unc.append(unc)
        fold_reports.append(FoldReport(
            fold=fold.index, train_start=iso[fold.train_start], train_end=iso[fold.train_stop - 1],
            test_start=iso[fold.test_start], test_end=iso[fold.test_stop - 1], n_train=out.n_fit,
            n_validation=out.n_val, n_test=len(rows), temperatures=out.temperatures, weights=out.weights,
            ensemble=_report("ensemble", unc.probs, y), mc_dropout=_report("mc_dropout", mc_mix, y),
        ))
    rows_all = np.concatenate(oos_rows)
    y_all = plan.labels[rows_all]
    oos = [_report("ensemble", np.concatenate(oos_mix), y_all),
           _report("mc_dropout", np.concatenate(oos_mc_mix), y_all)]
    if archs > 1:
        for a in req.architectures:
            oos.append(_report(f"ensemble:{a}", np.concatenate(oos_ens[a]), y_all))
            oos.append(_report(f"mc_dropout:{a}", np.concatenate(oos_mc[a]), y_all))

    gate = _ensemble_gate(plan, np.concatenate(oos_mix), rows_all)
    final = _fit(plan, plan.first, plan.stop, req.seed + 999_983, progress.epoch("final fit"),
                 lambda: ctx.cancelled).model
    progress.settle()
    balance = np.bincount(plan.labels[plan.first:plan.stop], minlength=3) / (plan.stop - plan.first)
    meta = {
        "seed": req.seed, "data_hash": plan.bars.data_hash, "train_start": iso[plan.first],
        "train_end": iso[plan.stop - 1], "n_bars": len(plan.bars),
        "out_of_sample": {r.method: {"ece": r.ece, "brier": r.brier, "nll": r.nll, "accuracy": r.accuracy}
                          for r in oos},
        "gate": gate.model_dump(mode="json"),
        "folds_trained_on": where, "folds_seconds": folds_seconds,
    }
    model = adapter.store(registry, final, name=plan.name, metadata=meta,
                          stage=req.stage if gate.passed else GATED_STAGE, trigger=req.trigger)
    save_reference(registry.db_path, model.model_id, "ensemble", final.feature_names,  # drift: unscaled rows,
                   plan.features[plan.first:plan.stop], np.concatenate(oos_mix)[:, CLASS_LABELS.index("up")])  # P(up)
    deployment = None
    if gate.passed and req.deploy:
        deployment = deployments.set(model_id=model.model_id, name=model.name, version=model.version,
                                     stage=req.stage, share=req.share, ramp_seconds=req.ramp_seconds,
                                     action="train", reason="passed its training gate",
                                     gate=gate.model_dump(mode="json"))
    execution = _ExecutionOutcome(None, None, None)
    if req.execution:
        ctx.report(done=progress.done, total=progress.total, message="execution network")
        execution = _train_execution(plan, registry, deployments, rows_all, oos_unc, model.model_id, progress, ctx)
    result = EnsembleTrainResult(
        model=model, execution_model=execution.model,
        deployment=deployment_info(deployment) if deployment is not None else None, gate=gate,
        execution_gate=execution.gate,
        execution_deployment=deployment_info(execution.deployment) if execution.deployment is not None else None,
        folds=fold_reports,
        out_of_sample=oos, class_balance={c: float(b) for c, b in zip(CLASS_LABELS, balance, strict=True)},
        features=list(FEATURE_NAMES), training_seconds=round(time.perf_counter() - started, 3),
        data_hash=plan.bars.data_hash, seed=req.seed,
    )
    ctx.report(done=progress.total, total=progress.total, message="done")
    return result.model_dump(mode="json")


def _ensemble_gate(plan: EnsemblePlan, probabilities: FloatArray, rows: npt.NDArray[np.int64]) -> GateVerdict:
    """The ensemble's gate on its walk-forward test rows (``probabilities`` of the ensemble method).

    The baseline forecast is the class frequencies of the first fold's training labels: what
    was known before the first test row.
    """
    first = plan.folds[0]
    known = plan.labels[first.train_start:first.train_stop]
    frequencies = np.bincount(known, minlength=len(CLASS_LABELS)).astype(np.float64) / len(known)
    iso = plan.bars.iso()
    return ensemble_gate(probabilities=probabilities, labels=plan.labels[rows], train_frequencies=frequencies,
                         horizon=plan.req.horizon, span_start=iso[int(rows[0])], span_end=iso[int(rows[-1])],
                         rule=ENSEMBLE_RULE)


def strategic_inputs(unc: calibration.Uncertainty) -> FloatArray:
    """The five strategic columns of the execution inputs from an ensemble's output."""
    cls = unc.probs.argmax(axis=1)
    signal = cls.astype(np.float64) - 1.0
    confidence = unc.probs[np.arange(len(cls)), cls]
    return np.column_stack([signal, confidence, unc.predictive_entropy, unc.divergence_metric, unc.agreement_score])


@dataclass(frozen=True)
class _ExecutionOutcome:
    """The execution network stored (None: too few rows), its gate and its deployment (None: failed)."""

    model: ModelInfo | None
    gate: GateVerdict | None
    deployment: Deployment | None


def _train_execution(plan: EnsemblePlan, registry: ModelRegistry, deployments: DeploymentStore,
                     rows: npt.NDArray[np.int64], uncs: Sequence[calibration.Uncertainty], ensemble_id: str,
                     progress: _Progress, ctx: JobContext) -> _ExecutionOutcome:
    b, req = plan.bars, plan.req
    strategic = np.concatenate([strategic_inputs(u) for u in uncs])
    market = xin.market_inputs(b.open, b.high, b.low, b.close, b.volume)[rows]
    signal_full = np.zeros(len(b))
    signal_full[rows] = strategic[:, 0]
    size_t, timing_t, valid = xin.execution_targets(b.open, b.high, b.low, b.close, signal_full,
                                                     horizon=req.horizon)
    x = np.column_stack([strategic, market])
    keep = valid[rows] & np.isfinite(x).all(axis=1)
    x, size_y, timing_y, kept = x[keep], size_t[rows][keep], timing_t[rows][keep], rows[keep]
    if len(x) < _EXEC_MIN_ROWS:
        ctx.report(done=progress.done, total=progress.total,
                   message=f"execution network skipped: {len(x)} out-of-sample rows (< {_EXEC_MIN_ROWS})")
        return _ExecutionOutcome(None, None, None)
    model = ExecutionModel(train=ExecTrainConfig(seed=req.seed), train_fraction=0.8, device=plan.device)
    model.fit(x, size_y, timing_y, on_epoch=progress.net_epoch("execution network"),
              should_stop=lambda: ctx.cancelled)
    if model.cancelled_ or model.history_ is None:
        raise JobCancelled()
    history = model.history_
    gate = _execution_gate(plan, model, x[model.n_train_:], kept[model.n_train_:])
    meta = {"ensemble_model_id": ensemble_id, "symbol": req.symbol, "horizon": req.horizon, "seed": req.seed,
            "n_train": model.n_train_, "n_validation": model.n_validation_, "data_hash": b.data_hash,
            "train_start": b.iso()[int(kept[0])], "train_end": b.iso()[int(kept[-1])],
            "validation": {"size_mae": history.size_mae, "timing_accuracy": history.timing_accuracy},
            "gate": gate.model_dump(mode="json")}
    info = adapter.store(registry, model, name=execution_name(req.symbol), metadata=meta,
                         stage="full" if gate.passed else GATED_STAGE, trigger=req.trigger)
    drawn = model.sample(model.transform(x), _REFERENCE_DRAWS, req.seed)  # drift: the signed size per input row
    save_reference(registry.db_path, info.model_id, "execution", xin.EXECUTION_INPUTS, x,
                   x[:, 0] * np.asarray(drawn.size, dtype=np.float64).mean(axis=0))
    deployment = None
    if gate.passed and req.deploy:
        deployment = deployments.set(model_id=info.model_id, name=info.name, version=info.version, stage="full",
                                     action="train", reason="passed its training gate",
                                     gate=gate.model_dump(mode="json"))
    return _ExecutionOutcome(info, gate, deployment)


def _execution_gate(plan: EnsemblePlan, model: ExecutionModel, x: FloatArray,
                    rows: npt.NDArray[np.int64]) -> GateVerdict:
    """The execution network's gate on the rows it did not train on (its validation tail).

    Both sizings take the same out-of-sample signal's side at each bar's close and earn the next
    bar's return: the network's size is the mean of its seeded MC-dropout draws (what a plan
    answers), the rule's is :func:`rule_sizes` (the agent-side fallback's formula). Timing is
    not judged: both enter at the close.
    """
    close, req = plan.bars.close, plan.req
    direction, confidence = x[:, 0], x[:, 1]
    net = model.sample(model.transform(x), _GATE_SAMPLES, req.seed + 7919).size.mean(axis=0)
    ret = next_bar_returns(close, rows)
    iso = plan.bars.iso()
    return execution_gate(sized_returns=direction * net * ret,
                          rule_returns=direction * rule_sizes(close, rows, direction, confidence) * ret,
                          span_start=iso[int(rows[0])], span_end=iso[int(rows[-1])], seed=req.seed,
                          rule=EXECUTION_RULE)
