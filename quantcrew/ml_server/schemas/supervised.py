"""Wire contract of the supervised family (RandomForest, GradientBoosting, MLP; regression or classification).

Rows are observations in time order. The holdout is CHRONOLOGICAL: the last
``floor(rows * test_fraction)`` rows, never shuffled, so that no metric is computed on rows
older than some training rows. Metrics and the naive baseline are both computed on that holdout.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from quantcrew.ml_server.schemas.common import BoundedFloat, ModelInfo, Provenance, TriggerField, WireModel
from quantcrew.ml_server.schemas.matrix import MatrixPayload
from quantcrew.ml_server.schemas.serving import ServedReply, ServedRequest

__all__ = [
    "ImportanceKind",
    "SupervisedAnalyzeRequest",
    "SupervisedFitResponse",
    "SupervisedFitRequest",
    "SupervisedMethod",
    "SupervisedPredictRequest",
    "SupervisedPredictResponse",
    "SupervisedRequestBase",
    "SupervisedTask",
]

SupervisedMethod = Literal["random_forest", "gradient_boosting", "mlp"]
SupervisedTask = Literal["regression", "classification"]
ImportanceKind = Literal["impurity", "permutation"]

_SEED_MAX = 2**32 - 1


def _default_hidden() -> list[int]:
    return [32, 16]


class SupervisedRequestBase(WireModel):
    """The fields shared by /analyze and /fit: data, target, model and evaluation settings."""

    features: MatrixPayload = Field(description="Feature table: one row per observation, oldest first.")
    target: list[BoundedFloat] | list[str] = Field(
        min_length=1,
        description="Target of each row (same length as features.values). Classification: class labels, numbers "
                    "or strings. Regression: numbers only.",
    )
    task: SupervisedTask = Field(description="'regression' (numeric target) or 'classification' (class labels).")
    method: SupervisedMethod = Field(
        default="random_forest",
        description="'random_forest', 'gradient_boosting', or 'mlp' (a Pipeline of a StandardScaler and a "
                    "multi-layer perceptron; for regression the target is standardised too).",
    )
    test_fraction: float = Field(
        default=0.2, ge=0.0, lt=0.9,
        description="Share of rows held out for evaluation: the LAST floor(rows * test_fraction) rows, in the "
                    "order sent, never shuffled (a chronological holdout). 0: no holdout, no metrics. A holdout "
                    "of fewer than 5 rows is refused (422).",
    )
    n_estimators: int = Field(default=200, ge=1, le=5000,
                              description="Trees (random_forest) or boosting stages (gradient_boosting).")
    max_depth: int | None = Field(
        default=None, ge=1, le=64,
        description="Tree depth limit; null: unlimited for random_forest, 3 for gradient_boosting. Unused by mlp.",
    )
    learning_rate: float = Field(
        default=0.05, gt=0.0, le=1.0,
        description="Shrinkage of gradient_boosting; initial Adam step of mlp. Unused by random_forest.",
    )
    hidden_layer_sizes: list[int] = Field(
        default_factory=_default_hidden, min_length=1, max_length=8,
        description="Units per hidden layer of the mlp.",
    )
    max_iter: int = Field(default=500, ge=1, le=100_000, description="Epoch cap of the mlp.")
    importance: Literal["auto", "impurity", "permutation"] = Field(
        default="auto",
        description="Feature importance: 'impurity' (mean decrease in impurity, forests and boosting only), "
                    "'permutation' (drop in the holdout score when a column is shuffled, 5 repeats, seeded; on "
                    "the training rows when there is no holdout), 'auto' (impurity for the trees, permutation "
                    "for the mlp).",
    )
    seed: int = Field(default=0, ge=0, le=_SEED_MAX, description="random_state of the model and of permutations.")

    @model_validator(mode="after")
    def _consistent(self) -> SupervisedRequestBase:
        if self.method == "mlp" and self.importance == "impurity":
            raise ValueError("importance 'impurity' does not exist for method 'mlp': use 'auto' or 'permutation'")
        if any(not 1 <= h <= 4096 for h in self.hidden_layer_sizes):
            raise ValueError("hidden_layer_sizes must hold unit counts between 1 and 4096")
        return self


class SupervisedAnalyzeRequest(SupervisedRequestBase):
    """Fit, evaluate on the chronological holdout, optionally predict new rows; nothing is kept."""

    predict_features: MatrixPayload | None = Field(
        default=None,
        description="Rows to predict with the fitted model (same columns, same order as features); optional.",
    )


class SupervisedFitRequest(SupervisedRequestBase):
    """Fit, evaluate, and keep the model in the registry under ``name`` (a new version each fit)."""

    name: str = Field(
        default="supervised", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
        description="Registry name; each fit adds a version.",
    )
    trigger: TriggerField = "manual"


class SupervisedFitResponse(Provenance):
    """Holdout evaluation, naive baseline and feature importance of a fitted model."""

    task: SupervisedTask
    method: SupervisedMethod
    feature_names: list[str] = Field(description="Columns the model expects, in order.")
    classes: list[str] | list[float] | None = Field(
        description="Classes the model can predict (seen in training), sorted; column order of probabilities. "
                    "Null for regression.",
    )
    n_train: int = Field(description="Training rows (the first rows).")
    n_test: int = Field(description="Holdout rows (the last rows, never shuffled); 0 without a holdout.")
    test_start: str | None = Field(
        default=None,
        description="Time (or row index, for undated rows) of the first holdout row; null without a holdout.",
    )
    metrics: dict[str, float] = Field(
        description="Holdout metrics. Regression: r2, mae, rmse. Classification: accuracy, balanced_accuracy, "
                    "f1_macro, log_loss. A metric that cannot be computed is left out and warnings says why; "
                    "empty without a holdout.",
    )
    baseline_metrics: dict[str, float] = Field(
        description="The same metrics for a naive model on the same holdout: the training mean (regression) or "
                    "the training class frequencies, predicting the majority class (classification).",
    )
    feature_importance: dict[str, float] = Field(description="Importance of each feature (higher = more useful).")
    importance_method: ImportanceKind
    importance_std: dict[str, float] | None = Field(
        description="Standard deviation of the permutation importance over its repeats; null for impurity.",
    )
    warnings: list[str] = Field(default_factory=list, description="Things the caller should know.")
    model: ModelInfo | None = Field(default=None, description="The registry entry (set by /fit).")
    predictions: list[float] | list[str] | None = Field(
        default=None, description="Predictions of predict_features (analyze only); class labels or numbers.",
    )


class SupervisedPredictRequest(ServedRequest):
    """Predict rows with a stored model (no refit): a pinned `model_id` (from /v1/supervised/fit) or the deployed
    version of `name`."""

    features: MatrixPayload = Field(description="Rows to predict: the model's columns, by name and in order.")
    include_probabilities: bool = Field(
        default=False, description="Classification: also return class probabilities (ignored for regression).",
    )


class SupervisedPredictResponse(Provenance, ServedReply):
    """Predictions of a stored model."""

    predictions: list[float] | list[str] = Field(description="One prediction per row: a number or a class label.")
    probabilities: list[list[float]] | None = Field(
        default=None, description="Per row, the probability of each class in `classes` order; null unless asked "
                                  "for on a classifier.",
    )
    classes: list[str] | list[float] | None = Field(default=None, description="Classes; null for regression.")
