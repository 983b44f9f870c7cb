"""Wire contract of the explain family: why a stored model says what it says.

Three families can be explained, each through its own inputs and its own output:

* ``ensemble``: bars (``data``); the output is ``p_up - p_down`` of the calibrated mixture
  (the expected direction, -1..1), its class ``down`` / ``flat`` / ``up``; the features are
  the 16 engineered ones, each moved across the whole window the model reads. A ``symbol``
  without ``model_id`` explains the version deployed for ``ensemble-<symbol>``.
* ``supervised``: rows (``features``, the model's columns); the output is the prediction
  (regression) or the probability of ``target_class`` (classification), its class the
  predicted one.
* ``rl``: bars (``data``); the output is the policy's expected position (``P(long) -
  P(short)`` for a discrete actor-critic policy, the target position of a DQN, the clipped
  mean weight of a continuous policy), its class the action (discrete policies); the features
  are the policy's observation columns, in their raw units (the position held stays fixed).

``/v1/explain/global`` explains the model over the last ``rows`` bars (or rows): permutation
importance (how much the output moves when a feature is shuffled) or mean absolute SHAP values,
and a shallow surrogate tree with its fidelity on held-out rows. ``/v1/explain/local`` explains
one prediction (the last bar or row, or ``row``) by feature perturbation or SHAP values.
Both replies carry the provenance of every inference reply.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from quantcrew.ml_server.schemas.common import OHLCVPayload, Provenance, WireModel
from quantcrew.ml_server.schemas.matrix import MatrixPayload

__all__ = [
    "EXPLAINABLE",
    "MAX_REPEATS",
    "MAX_ROWS",
    "MAX_SHAP_ROWS",
    "MIN_ROWS",
    "ExplainFamily",
    "ExplainGlobalRequest",
    "ExplainGlobalResponse",
    "ExplainLocalRequest",
    "ExplainLocalResponse",
    "ExplainMethod",
    "ExplainRequestBase",
    "FeatureEffect",
    "FeatureImportanceOut",
    "SurrogateOut",
    "SurrogateRuleOut",
]

ExplainFamily = Literal["ensemble", "supervised", "rl"]
ExplainMethod = Literal["perturbation", "shap"]
EXPLAINABLE: tuple[str, ...] = ("ensemble", "supervised", "rl")

MIN_ROWS = 20
"""Fewest rows a global explanation reads (the surrogate fits 15 and is judged on 5)."""
MAX_ROWS = 1000
"""Most rows a global explanation reads."""
MAX_REPEATS = 20
"""Most shuffles per feature."""
MAX_SHAP_ROWS = 50
"""Most rows SHAP values are estimated for (each costs hundreds of model calls)."""
_SEED_MAX = 2**32 - 1


class ExplainRequestBase(WireModel):
    """What both explanations need: the model and its inputs."""

    model_id: str | None = Field(default=None, min_length=1, max_length=64,
                                 description="Registry id of the model explained.")
    family: ExplainFamily | None = Field(
        default=None, description="'ensemble', 'supervised' or 'rl'; checked against the model's family (null: "
                                  "the model's own).")
    symbol: str | None = Field(default=None, min_length=1, max_length=64,
                               description="Ensemble only, without model_id: explain the version deployed for "
                                           "'ensemble-<symbol>'.")
    data: OHLCVPayload | None = Field(default=None, description="Bars, oldest first (ensemble and rl).")
    features: MatrixPayload | None = Field(
        default=None, description="Rows in the model's columns, oldest first (supervised).")
    target_class: str | None = Field(
        default=None, max_length=256,
        description="Supervised classifier: the class whose probability is explained (default: the last class).")
    position: float = Field(default=0.0, ge=-1.0, le=1.0,
                            description="RL: the position held, part of what the policy observes (kept fixed).")
    method: ExplainMethod = Field(
        default="perturbation",
        description="'perturbation' (permutation importance / feature perturbation) or 'shap' (SHAP values by "
                    "the kernel explainer; a 422 when the server lacks the optional shap package).")
    seed: int = Field(default=0, ge=0, le=_SEED_MAX, description="Seeds the shuffles, the tree and SHAP's sampling.")

    @model_validator(mode="after")
    def _names_a_model(self) -> ExplainRequestBase:
        if self.model_id is None and self.symbol is None:
            raise ValueError("name the model: model_id, or symbol for the ensemble deployed for it")
        if self.model_id is None and self.family not in (None, "ensemble"):
            raise ValueError("symbol without model_id selects a deployed ensemble: give model_id for other families")
        return self


class ExplainGlobalRequest(ExplainRequestBase):
    """Explain a model over many rows: which features move its output, and a tree that mimics it."""

    rows: int = Field(default=200, ge=MIN_ROWS, le=MAX_ROWS,
                      description="The last rows (bars with a full input) explained.")
    repeats: int = Field(default=5, ge=1, le=MAX_REPEATS, description="Shuffles per feature (perturbation).")
    max_depth: int = Field(default=3, ge=1, le=4, description="Depth of the surrogate tree.")
    surrogate_target: Literal["output", "class"] = Field(
        default="output", description="What the surrogate tree mimics: the continuous output (fidelity R^2) or the "
                                      "output's class (fidelity: agreement; ensemble, classifiers, discrete "
                                      "policies).")
    holdout_fraction: float = Field(default=0.25, ge=0.1, le=0.5,
                                    description="Share of the rows, the last ones, the surrogate is judged on.")
    shap_rows: int = Field(default=25, ge=1, le=MAX_SHAP_ROWS,
                           description="SHAP only: the last rows whose SHAP values are averaged.")


class ExplainLocalRequest(ExplainRequestBase):
    """Explain one prediction: what each feature's value did to it."""

    row: int = Field(default=-1, ge=-10_000_000, le=10_000_000,
                     description="Which bar or row, by position among those sent (-1: the last).")
    reference_rows: int = Field(default=200, ge=MIN_ROWS, le=MAX_ROWS,
                                description="Rows up to the explained one that define each feature's median and "
                                            "robust std (and SHAP's background).")
    k: float = Field(default=1.0, gt=0.0, le=5.0, description="Robust standard deviations a feature is moved.")
    mode: Literal["median", "shift"] = Field(
        default="median", description="Perturbation: rank by the effect of the feature's value against its median "
                                      "('median') or by the local slope per k robust std ('shift').")


class FeatureImportanceOut(WireModel):
    """One feature's global importance."""

    name: str
    importance: float = Field(description="Perturbation: mean absolute change of the output when the feature is "
                                          "shuffled. SHAP: mean absolute SHAP value.")
    std: float = Field(description="Perturbation: std over the shuffles. SHAP: std of the absolute values over the "
                                   "rows.")


class SurrogateRuleOut(WireModel):
    """One leaf of the surrogate tree."""

    conditions: list[str] = Field(description="The tests on the path to the leaf, e.g. 'ret_5 <= 0.01'.")
    output: float | None = Field(description="The leaf's output (continuous surrogate).")
    label: str | None = Field(description="The leaf's class (class surrogate).")
    samples: int = Field(description="Training rows that reached the leaf.")


class SurrogateOut(WireModel):
    """A shallow tree fitted to the model's outputs, and how faithfully it mimics the model."""

    kind: Literal["regression", "classification"]
    depth: int
    fidelity: float = Field(description="On the held-out rows: R^2 against the model's output (regression) or the "
                                        "share of rows where the tree picks the model's class (classification).")
    fidelity_metric: Literal["r2", "agreement"]
    baseline: float = Field(description="What a tree that learned nothing scores: 0 (R^2), or the share of the "
                                        "most frequent class (agreement).")
    n_train: int
    n_holdout: int
    rules: list[SurrogateRuleOut]
    text: str = Field(description="The tree, indented, one test per line.")


class ExplainGlobalResponse(Provenance):
    """Which features move the model's output, and a tree that mimics it."""

    family: ExplainFamily
    output: str = Field(description="What the explained output is (e.g. 'p_up - p_down').")
    features: list[FeatureImportanceOut] = Field(description="Most important first.")
    surrogate: SurrogateOut
    rows: int = Field(description="Rows explained.")
    repeats: int | None = Field(description="Shuffles per feature (perturbation); null for SHAP.")
    first_row: str = Field(description="Time (or index) of the first row explained.")
    mean_output: float = Field(description="Mean of the output over the rows.")
    std_output: float = Field(description="Std of the output over the rows (0: the model says the same everywhere).")
    warnings: list[str] = Field(default_factory=list)


class FeatureEffect(WireModel):
    """One feature's effect on one prediction."""

    name: str
    value: float = Field(description="The feature's value at the explained row (raw units).")
    effect: float = Field(description="Signed effect on the output: -delta_median ('median'), the local slope "
                                      "('shift'), or the SHAP value.")
    delta_plus: float | None = Field(description="Output change with the feature k robust std higher (perturbation).")
    delta_minus: float | None = Field(description="Output change with the feature k robust std lower (perturbation).")
    delta_median: float | None = Field(description="Output change with the feature at its median (perturbation).")


class ExplainLocalResponse(Provenance):
    """What each feature's value did to one prediction."""

    family: ExplainFamily
    output: str
    prediction: float = Field(description="The model's output at the explained row.")
    label: str | None = Field(description="Its class (ensemble signal, predicted class, action), when it has one.")
    row: str = Field(description="Time (or index) of the explained row.")
    base_value: float | None = Field(description="SHAP: the output expected over the background rows.")
    features: list[FeatureEffect] = Field(description="Largest |effect| first.")
    k: float
    mode: str
    warnings: list[str] = Field(default_factory=list)
