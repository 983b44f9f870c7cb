"""Supervised verbs: accuracy on known structure, chronological holdout, baselines, importance, bad input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from sklearn.ensemble import RandomForestRegressor

from quantcrew.ml_server.errors import InvalidInputError, ModelNotFoundError
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.matrix import MatrixPayload
from quantcrew.ml_server.schemas.supervised import (
    SupervisedAnalyzeRequest,
    SupervisedFitRequest,
    SupervisedPredictRequest,
)
from quantcrew.ml_server.services.supervised.service import analyze, evaluate, fit, predict

METHODS = ("random_forest", "gradient_boosting", "mlp")
FAST = {"n_estimators": 60, "max_iter": 300}


def linear_data(n: int = 200, seed: int = 0) -> tuple[dict[str, Any], list[float]]:
    """``y = 3 x0 + noise``; ``x1`` is pure noise. Rows dated on business days."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    y = 3.0 * x[:, 0] + 0.1 * rng.normal(size=n)
    days = np.busday_offset(np.datetime64("2022-01-03", "D"), np.arange(n), roll="forward")
    features = {"columns": ["x0", "x1"], "values": x.tolist(), "timestamps": np.datetime_as_string(days).tolist()}
    return features, y.tolist()


def separable_data(n: int = 200, seed: int = 1, labels: tuple[Any, Any] = ("down", "up")) -> tuple[dict[str, Any],
                                                                                                    list[Any]]:
    """Two classes split by the sign of ``x0`` with a margin; ``x1`` is noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    x[:, 0] += np.sign(x[:, 0]) * 0.5
    y = [labels[1] if v > 0 else labels[0] for v in x[:, 0]]
    return {"columns": ["x0", "x1"], "values": x.tolist()}, y


def _analyze(features: dict[str, Any], target: list[Any], **kw: Any) -> SupervisedAnalyzeRequest:
    return SupervisedAnalyzeRequest.model_validate({"features": features, "target": target, **kw})


def _floats(value: Any) -> list[float]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [f for v in value.values() for f in _floats(v)]
    if isinstance(value, list):
        return [f for v in value for f in _floats(v)]
    return []


@pytest.mark.parametrize("method", METHODS)
def test_regression_recovers_signal_and_ranks_importance(method: str) -> None:
    features, y = linear_data()
    _, reply = evaluate(_analyze(features, y, task="regression", method=method, **FAST), min_rows=30)
    assert reply.metrics["r2"] > 0.9
    assert reply.baseline_metrics["r2"] < 0.05 and reply.metrics["mae"] < reply.baseline_metrics["mae"] / 5
    imp = reply.feature_importance
    assert imp["x0"] > 0.5 and imp["x0"] > 20 * abs(imp["x1"])
    assert reply.importance_method == ("permutation" if method == "mlp" else "impurity")
    assert (reply.importance_std is None) == (method != "mlp")
    assert reply.method_used == method and reply.fallback is False and reply.classes is None


@pytest.mark.parametrize("method", METHODS)
def test_classification_separates_two_classes(method: str) -> None:
    features, y = separable_data()
    _, reply = evaluate(_analyze(features, y, task="classification", method=method, **FAST), min_rows=30)
    assert reply.metrics["accuracy"] > 0.95 and reply.metrics["balanced_accuracy"] > 0.95
    assert reply.metrics["f1_macro"] > 0.95 and 0.0 <= reply.metrics["log_loss"] < 0.3
    assert reply.classes == ["down", "up"]
    assert reply.feature_importance["x0"] > reply.feature_importance["x1"]


def test_mlp_importance_is_permutation_with_std() -> None:
    features, y = linear_data(120)
    _, reply = evaluate(_analyze(features, y, task="regression", method="mlp", max_iter=200), min_rows=30)
    assert reply.importance_method == "permutation"
    assert reply.importance_std is not None and set(reply.importance_std) == {"x0", "x1"}


def test_permutation_can_be_asked_for_a_forest() -> None:
    features, y = linear_data(120)
    _, reply = evaluate(_analyze(features, y, task="regression", importance="permutation", n_estimators=30),
                        min_rows=30)
    assert reply.importance_method == "permutation" and reply.importance_std is not None
    assert reply.feature_importance["x0"] > 1.0  # r2 drop when x0 is shuffled: about 2


def test_permutation_importance_uses_training_rows_when_no_holdout_class_was_seen() -> None:
    # every holdout row's class is new to the model: permuting an empty holdout was a 500
    features, _ = linear_data(120)
    labels = ["up" if i % 2 else "down" for i in range(96)] + ["sideways"] * 24
    _, reply = evaluate(_analyze(features, labels, task="classification", importance="permutation",
                                 n_estimators=10), min_rows=30)
    assert reply.importance_method == "permutation" and set(reply.feature_importance) == {"x0", "x1"}
    assert any("permutation importance on the training rows" in n for n in reply.warnings)


def test_holdout_is_the_last_rows_never_shuffled() -> None:
    features, y = linear_data(150)
    model, reply = evaluate(_analyze(features, y, task="regression", n_estimators=25, test_fraction=0.2), min_rows=30)
    assert (reply.n_train, reply.n_test) == (120, 30)
    assert reply.test_start == features["timestamps"][120]
    x = np.asarray(features["values"])
    ref = RandomForestRegressor(n_estimators=25, random_state=0).fit(x[:120], y[:120])
    expected_mae = float(np.mean(np.abs(ref.predict(x[120:]) - np.asarray(y[120:]))))
    assert reply.metrics["mae"] == pytest.approx(expected_mae, rel=1e-12)
    assert reply.baseline_metrics["mae"] == pytest.approx(np.mean(np.abs(np.asarray(y[120:]) - np.mean(y[:120]))))
    np.testing.assert_allclose(model.estimator_.predict(x), ref.predict(x))


def test_classification_baseline_is_the_majority_class() -> None:
    features, y = separable_data(100)
    _, reply = evaluate(_analyze(features, y, task="classification", n_estimators=20), min_rows=30)
    train, test = y[:80], y[80:]
    majority = max(set(train), key=lambda c: (train.count(c), c == "down"))
    assert reply.baseline_metrics["accuracy"] == pytest.approx(test.count(majority) / len(test))
    assert reply.baseline_metrics["balanced_accuracy"] == pytest.approx(0.5)


def test_no_holdout_means_no_metrics_and_importance_on_training_rows() -> None:
    features, y = linear_data(60)
    _, reply = evaluate(_analyze(features, y, task="regression", method="mlp", max_iter=100, test_fraction=0.0),
                        min_rows=30)
    assert reply.n_test == 0 and reply.metrics == {} and reply.baseline_metrics == {} and reply.test_start is None
    assert any("no holdout" in w for w in reply.warnings)
    assert reply.feature_importance["x0"] > reply.feature_importance["x1"]


def test_numeric_class_labels_round_trip_as_numbers() -> None:
    features, y = separable_data(100, labels=(-1, 1))
    model, reply = evaluate(_analyze(features, y, task="classification", n_estimators=20), min_rows=30)
    assert reply.classes == [-1.0, 1.0]
    assert set(model.predict(np.asarray(features["values"]))) <= {-1.0, 1.0}


def test_three_classes_with_every_method() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(150, 2))
    y = ["low" if v < -0.5 else "high" if v > 0.5 else "mid" for v in x[:, 0]]
    for method in METHODS:
        model, reply = evaluate(_analyze({"columns": ["a", "b"], "values": x.tolist()}, y, task="classification",
                                         method=method, n_estimators=30, max_iter=300), min_rows=30)
        assert reply.classes == ["high", "low", "mid"]
        proba = model.predict_proba(x)
        assert proba is not None and proba.shape == (150, 3)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)
        assert reply.metrics["accuracy"] > 0.8, method


def test_predict_features_are_predicted_with_the_fitted_model() -> None:
    features, y = linear_data(100)
    new = MatrixPayload(columns=["x0", "x1"], values=[[1.0, 0.0], [-1.0, 0.5]])
    model, reply = evaluate(_analyze(features, y, task="regression", n_estimators=20), min_rows=30,
                            predict_features=new)
    assert reply.predictions == model.predict(np.asarray(new.values))
    first, second = (float(v) for v in reply.predictions or [])
    assert first > 2.0 > -2.0 > second


def test_same_seed_same_answer() -> None:
    features, y = linear_data(100)
    a = evaluate(_analyze(features, y, task="regression", method="mlp", max_iter=100, seed=3), min_rows=30)[1]
    b = evaluate(_analyze(features, y, task="regression", method="mlp", max_iter=100, seed=3), min_rows=30)[1]
    assert a.model_dump() == b.model_dump() and a.seed == 3
    assert a.data_hash.startswith("sha256:")
    c = evaluate(_analyze(features, y[:-1] + [0.0], task="regression", method="mlp", max_iter=100, seed=3),
                 min_rows=30)[1]
    assert c.data_hash != a.data_hash


def test_constant_column_is_warned_not_refused() -> None:
    features, y = linear_data(80)
    features = {"columns": ["x0", "x1", "flat"], "values": [row + [1.0] for row in features["values"]]}
    _, reply = evaluate(_analyze(features, y, task="regression", n_estimators=20), min_rows=30)
    assert any("flat" in w and "constant" in w for w in reply.warnings)
    assert reply.feature_importance["flat"] == 0.0


def test_unconverged_mlp_is_reported_once() -> None:
    features, y = linear_data(60)
    _, reply = evaluate(_analyze(features, y, task="regression", method="mlp", max_iter=2), min_rows=30)
    assert sum("did not converge" in w for w in reply.warnings) == 1


def test_metric_that_cannot_be_computed_is_left_out_with_reason() -> None:
    features, _ = linear_data(60)
    y = [float(i % 3) for i in range(48)] + [1.0] * 12  # constant holdout target
    _, reply = evaluate(_analyze(features, y, task="regression", n_estimators=10), min_rows=30)
    assert "r2" not in reply.metrics and "mae" in reply.metrics
    assert any("r2 left out" in w and "constant" in w for w in reply.warnings)
    labels = ["a", "b"] * 24 + ["c"] * 12  # holdout class never seen in training
    _, cls = evaluate(_analyze(features, labels, task="classification", n_estimators=10), min_rows=30)
    assert "log_loss" not in cls.metrics and cls.metrics["accuracy"] == 0.0
    assert any("log_loss left out" in w for w in cls.warnings) and any("'c'" in w for w in cls.warnings)
    assert all(np.isfinite(_floats(r.model_dump(mode="json"))).all() for r in (reply, cls))


def test_target_length_mismatch_names_both_lengths() -> None:
    features, y = linear_data(50)
    with pytest.raises(InvalidInputError, match="49 values but features has 50 rows") as err:
        evaluate(_analyze(features, y[:-1], task="regression"), min_rows=30)
    assert err.value.details[0]["loc"] == ["target"]


def test_single_class_in_training_rows_is_refused() -> None:
    features, _ = linear_data(50)
    with pytest.raises(InvalidInputError, match="at least 2 classes"):
        evaluate(_analyze(features, ["a"] * 40 + ["b"] * 10, task="classification"), min_rows=30)


def test_too_few_training_rows_are_refused() -> None:
    features, y = linear_data(35)
    with pytest.raises(InvalidInputError, match="first 28 train") as err:
        evaluate(_analyze(features, y, task="regression"), min_rows=30)
    assert err.value.details[0]["loc"] == ["features", "values"]


def test_string_target_for_regression_is_refused() -> None:
    features, _ = linear_data(50)
    with pytest.raises(InvalidInputError, match="regression"):
        evaluate(_analyze(features, ["1.5"] * 50, task="regression"), min_rows=30)


def test_holdout_under_five_rows_is_refused() -> None:
    features, y = linear_data(40)
    with pytest.raises(InvalidInputError, match="holdout of 4 rows") as err:
        evaluate(_analyze(features, y, task="regression", test_fraction=0.1), min_rows=30)
    assert err.value.details[0]["loc"] == ["test_fraction"]


def test_too_many_classes_are_refused() -> None:
    features, y = linear_data(300)
    with pytest.raises(InvalidInputError, match="task='regression'"):
        evaluate(_analyze(features, y, task="classification"), min_rows=30)


def test_predict_features_with_other_columns_are_refused() -> None:
    features, y = linear_data(50)
    with pytest.raises(InvalidInputError, match=r"missing \['x1'\], extra \['x2'\]"):
        evaluate(_analyze(features, y, task="regression", n_estimators=5), min_rows=30,
                 predict_features=MatrixPayload(columns=["x0", "x2"], values=[[1.0, 2.0]]))


def test_values_beyond_the_magnitude_limit_are_refused_naming_the_cell() -> None:
    features, y = linear_data(50)
    features["values"][7][1] = 1e300
    with pytest.raises(ValidationError) as err:
        _analyze(features, y, task="regression")
    assert err.value.errors()[0]["loc"] == ("features", "values", 7, 1)
    features, y = linear_data(50)
    y[9] = -1e200
    with pytest.raises(ValidationError, match=r"target"):
        _analyze(features, y, task="regression")


def test_schema_refuses_bad_settings() -> None:
    features, y = linear_data(40)
    for bad in ({"method": "mlp", "importance": "impurity"}, {"test_fraction": 0.9}, {"test_fraction": -0.1},
                {"hidden_layer_sizes": [0]}, {"method": "svm"}, {"task": "ranking"}):
        with pytest.raises(ValidationError):
            _analyze(features, y, **{"task": "regression", **bad})
    with pytest.raises(ValidationError):
        _analyze(features, [1.0, "a"] * 20, task="classification")
    with pytest.raises(ValidationError):
        SupervisedFitRequest.model_validate({"features": features, "target": y, "task": "regression", "name": "a b"})


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[ModelRegistry]:
    reg = ModelRegistry(tmp_path / "r.db", tmp_path / "artifacts")
    yield reg
    reg.close()


def test_analyze_is_evaluate_without_the_model() -> None:
    features, y = linear_data(80)
    request = _analyze(features, y, task="regression", n_estimators=10)
    assert analyze(request, min_rows=30) == evaluate(request, min_rows=30)[1]


def test_fit_stores_the_model_with_its_evaluation(registry: ModelRegistry) -> None:
    features, y = separable_data(80)
    request = SupervisedFitRequest.model_validate({"features": features, "target": y, "task": "classification",
                                                   "n_estimators": 10, "name": "sep"})
    fitted = fit(request, registry, min_rows=30)
    assert fitted.model is not None and fitted.model.family == "supervised" and fitted.model_version == 1
    meta = fitted.model.metadata
    assert meta["classes"] == ["down", "up"] and meta["params"]["n_estimators"] == 10
    assert meta["metrics"] == fitted.metrics and meta["data_hash"] == fitted.data_hash


def test_predict_rebuilds_the_stored_model(registry: ModelRegistry) -> None:
    features, y = separable_data(80)
    request = SupervisedFitRequest.model_validate({"features": features, "target": y, "task": "classification",
                                                   "n_estimators": 10, "seed": 3})
    fitted = fit(request, registry, min_rows=30)
    rows = {"columns": ["x0", "x1"], "values": [[2.0, 0.0], [-2.0, 0.0]]}
    reply = predict(SupervisedPredictRequest.model_validate({"model_id": fitted.model_id, "features": rows}),
                    registry)
    assert reply.predictions == ["up", "down"] and reply.seed == 3 and reply.classes == ["down", "up"]
    with pytest.raises(ModelNotFoundError):
        predict(SupervisedPredictRequest.model_validate({"model_id": "supervised-nope", "features": rows}), registry)
