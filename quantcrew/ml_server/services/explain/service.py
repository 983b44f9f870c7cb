"""The explain family's verbs: a global explanation of a stored model, and a local one of one prediction.

:func:`explain_global` explains the model over the last ``rows`` rows of what was sent:
permutation importance of its output (or mean absolute SHAP values), and a shallow surrogate
tree with its fidelity on the last rows. :func:`explain_local` explains one prediction by
feature perturbation (or SHAP values). The model is built as a :class:`~.subjects.Subject`
by each family's own code; the work runs in a worker thread, and an ensemble's forward passes
on the app's device thread.

Work is bounded: at most :data:`MAX_EVALS` rows go through the model for one permutation
importance (rows x (1 + features x repeats)); SHAP reads at most ``shap_rows`` rows against a
background of :data:`SHAP_BACKGROUND` rows with :data:`SHAP_SAMPLES` coalitions each.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import numpy.typing as npt
from anyio import to_thread

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.inference import InferenceRuntime
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.explain import (
    MIN_ROWS,
    ExplainGlobalRequest,
    ExplainGlobalResponse,
    ExplainLocalRequest,
    ExplainLocalResponse,
    FeatureEffect,
    FeatureImportanceOut,
    SurrogateOut,
    SurrogateRuleOut,
)
from quantcrew.ml_server.services.deployment import DeploymentStore
from quantcrew.ml_server.services.explain.local import local_effects
from quantcrew.ml_server.services.explain.permutation import FeatureImportance, permutation_importance
from quantcrew.ml_server.services.explain.shap_values import require_shap, shap_attributions
from quantcrew.ml_server.services.explain.subjects import Subject, build_subject, invalid
from quantcrew.ml_server.services.explain.surrogate import fit_surrogate

__all__ = ["MAX_EVALS", "SHAP_BACKGROUND", "SHAP_SAMPLES", "explain_global", "explain_local", "global_sync",
           "local_sync"]

FloatArray = npt.NDArray[np.float64]

MAX_EVALS = 250_000
"""Most rows one permutation importance sends through the model."""
SHAP_BACKGROUND = 10
"""Rows standing for an absent feature in SHAP (evenly spaced over the rows read)."""
SHAP_SAMPLES = 256
"""Feature coalitions SHAP evaluates per explained row."""


def _spread(rows: FloatArray, count: int) -> FloatArray:
    """``count`` rows evenly spaced over ``rows`` (all of them when there are fewer)."""
    idx = np.unique(np.linspace(0, rows.shape[0] - 1, num=min(count, rows.shape[0])).round().astype(np.int64))
    return rows[idx]


def _too_few(subject: Subject, have: int, need: int, what: str) -> InvalidInputError:
    return invalid(f"{subject.input_field} gives {have} rows with a full input for this {subject.family} model; "
                   f"{what} needs at least {need}", subject.input_field)


# -- global ----------------------------------------------------------------------------------------


def _importance(req: ExplainGlobalRequest, subject: Subject, x: FloatArray) -> list[FeatureImportance]:
    n_features = len(subject.names)
    if req.method == "shap":
        rows = x[-req.shap_rows:]
        phi, _ = shap_attributions(subject.predict, rows, _spread(x, SHAP_BACKGROUND), groups=subject.groups,
                                   nsamples=SHAP_SAMPLES, seed=req.seed)
        mags = np.abs(phi)
        out = [FeatureImportance(name, float(mags[:, j].mean()), float(mags[:, j].std()))
               for j, name in enumerate(subject.names)]
        return sorted(out, key=lambda f: -f.importance)
    evals = x.shape[0] * (1 + n_features * req.repeats)
    if evals > MAX_EVALS:
        raise invalid(f"{x.shape[0]} rows x (1 + {n_features} features x {req.repeats} repeats) = {evals} model "
                      f"calls is over the cap of {MAX_EVALS}: lower repeats or rows", "repeats")
    return permutation_importance(subject.predict, x, subject.names, groups=subject.groups, repeats=req.repeats,
                                  seed=req.seed)


def _surrogate(req: ExplainGlobalRequest, subject: Subject, x: FloatArray, outputs: FloatArray,
               codes: npt.NDArray[np.int64] | None) -> SurrogateOut:
    labels = None
    target: npt.ArrayLike = outputs
    if req.surrogate_target == "class":
        if codes is None or subject.classes is None:
            raise invalid(f"this {subject.family} model's output ({subject.output}) has no class: use "
                          "surrogate_target 'output'", "surrogate_target")
        labels, target = subject.classes, codes
    tree = fit_surrogate(subject.readable(x), target, subject.names, labels=labels, max_depth=req.max_depth,
                         holdout_fraction=req.holdout_fraction, seed=req.seed)
    return SurrogateOut(kind=tree.kind, depth=tree.depth, fidelity=tree.fidelity,
                        fidelity_metric=tree.fidelity_metric, baseline=tree.baseline, n_train=tree.n_train,
                        n_holdout=tree.n_holdout, text=tree.text,
                        rules=[SurrogateRuleOut(conditions=r.conditions, output=r.output, label=r.label,
                                                samples=r.samples) for r in tree.rules])


def global_sync(req: ExplainGlobalRequest, registry: ModelRegistry, deployments: DeploymentStore,
                runtime: InferenceRuntime) -> ExplainGlobalResponse:
    """The global explanation, blocking (run it off the event loop).

    Raises:
        ModelNotFoundError, NotFoundError: no such model, no ensemble deployed for the symbol (404).
        InvalidInputError: a model that cannot be explained, the wrong inputs for its family, fewer
            than :data:`MIN_ROWS` rows with a full input, work over the cap, shap missing (422).
    """
    if req.method == "shap":
        require_shap()  # refuse before any model is loaded
    subject = build_subject(req, registry, deployments, device=runtime.device, executor=runtime.executor)
    n = subject.x.shape[0]
    if n < MIN_ROWS:
        raise _too_few(subject, n, MIN_ROWS, "a global explanation")
    x = subject.x[-req.rows:]
    outputs, codes = subject.answer(x)
    notes = list(subject.warnings)
    if n < req.rows:
        notes.append(f"{n} rows have a full input: all of them are explained, not {req.rows}")
    if float(np.std(outputs)) == 0.0:
        notes.append("the model gives the same output on every row: no feature moves it here")
    try:
        features = _importance(req, subject, x)
        surrogate = _surrogate(req, subject, x, outputs, codes)
    except ValueError as exc:  # the model answered with values that are not finite, say
        raise invalid(f"these rows cannot be explained: {exc}", subject.input_field) from exc
    if surrogate.fidelity_metric == "r2" and surrogate.fidelity < 0.5:
        notes.append(f"the surrogate tree explains little of the model (R^2 {surrogate.fidelity:.2f} on held-out "
                     "rows): read its rules as a rough sketch")
    info = subject.info
    return ExplainGlobalResponse(
        model_id=info.model_id, model_version=info.version, method_used=req.method, fallback=False,
        data_hash=subject.data_hash, seed=req.seed, as_of=subject.as_of, family=subject.family,  # type: ignore[arg-type]
        output=subject.output, surrogate=surrogate, rows=int(x.shape[0]),
        repeats=req.repeats if req.method == "perturbation" else None,
        first_row=subject.row_names[n - x.shape[0]], mean_output=float(outputs.mean()),
        std_output=float(outputs.std()), warnings=notes,
        features=[FeatureImportanceOut(name=f.name, importance=f.importance, std=f.std) for f in features],
    )


async def explain_global(req: ExplainGlobalRequest, registry: ModelRegistry, deployments: DeploymentStore,
                         runtime: InferenceRuntime) -> ExplainGlobalResponse:
    """:func:`global_sync` in a worker thread (an ensemble's passes hop to the device thread)."""
    return await to_thread.run_sync(partial(global_sync, req, registry, deployments, runtime))


# -- local -----------------------------------------------------------------------------------------


def _row_index(req: ExplainLocalRequest, subject: Subject, sent: int) -> int:
    """Index into ``subject.x`` of the row the request names by its position among those sent."""
    pos = req.row if req.row >= 0 else sent + req.row
    if not 0 <= pos < sent:
        raise invalid(f"row {req.row} is outside the {sent} rows sent", "row")
    try:
        return subject.positions.index(pos)
    except ValueError:
        first = subject.positions[0] if subject.positions else sent
        raise invalid(f"row {req.row} (position {pos}) has no full input for this {subject.family} model: the "
                      f"first row that has one is at position {first}", "row") from None


def local_sync(req: ExplainLocalRequest, registry: ModelRegistry, deployments: DeploymentStore,
               runtime: InferenceRuntime) -> ExplainLocalResponse:
    """The local explanation, blocking (run it off the event loop).

    Raises:
        ModelNotFoundError, NotFoundError: no such model, no ensemble deployed for the symbol (404).
        InvalidInputError: as :func:`global_sync`, and a ``row`` with no full input (422).
    """
    if req.method == "shap":
        require_shap()
    subject = build_subject(req, registry, deployments, device=runtime.device, executor=runtime.executor)
    sent = len(req.data) if subject.input_field == "data" and req.data is not None else (
        len(req.features.values) if req.features is not None else 0)
    i = _row_index(req, subject, sent)
    reference = subject.x[max(0, i + 1 - req.reference_rows):i + 1]
    if reference.shape[0] < MIN_ROWS:
        raise _too_few(subject, reference.shape[0], MIN_ROWS, "the reference of a local explanation (rows up to "
                                                               "the explained one)")
    row = subject.x[i]
    prediction, codes = subject.answer(row[None, :])
    label = None if codes is None or subject.classes is None else subject.classes[int(codes[0])]
    base_value: float | None = None
    if req.method == "shap":
        try:
            phi, base_value = shap_attributions(subject.predict, row[None, :],
                                                _spread(reference, 2 * SHAP_BACKGROUND), groups=subject.groups,
                                                nsamples=SHAP_SAMPLES, seed=req.seed)
        except ValueError as exc:
            raise invalid(f"this row cannot be explained: {exc}", subject.input_field) from exc
        values = subject.readable(row[None, :])[0]
        effects = sorted((FeatureEffect(name=name, value=float(values[j]), effect=float(phi[0, j]), delta_plus=None,
                                        delta_minus=None, delta_median=None)
                          for j, name in enumerate(subject.names)), key=lambda e: -abs(e.effect))
    else:
        try:
            _, found = local_effects(subject.predict, row, reference, subject.names, groups=subject.groups,
                                     k=req.k, mode=req.mode, value_columns=subject.value_columns)
        except ValueError as exc:  # the model answered with values that are not finite, say
            raise invalid(f"this row cannot be explained: {exc}", subject.input_field) from exc
        effects = [FeatureEffect(name=e.name, value=e.value, effect=e.effect, delta_plus=e.delta_plus,
                                 delta_minus=e.delta_minus, delta_median=e.delta_median) for e in found]
    info = subject.info
    return ExplainLocalResponse(
        model_id=info.model_id, model_version=info.version, method_used=req.method, fallback=False,
        data_hash=subject.data_hash, seed=req.seed, as_of=subject.as_of, family=subject.family,  # type: ignore[arg-type]
        output=subject.output, prediction=float(prediction[0]), label=label, row=subject.row_names[i],
        base_value=base_value, features=effects, k=req.k, mode="shap" if req.method == "shap" else req.mode,
        warnings=list(subject.warnings),
    )


async def explain_local(req: ExplainLocalRequest, registry: ModelRegistry, deployments: DeploymentStore,
                        runtime: InferenceRuntime) -> ExplainLocalResponse:
    """:func:`local_sync` in a worker thread (an ensemble's passes hop to the device thread)."""
    return await to_thread.run_sync(partial(local_sync, req, registry, deployments, runtime))
