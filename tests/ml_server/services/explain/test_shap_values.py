"""SHAP values through the optional package (when installed), and a 422 naming ``method`` when it is not."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.services.explain.shap_values import require_shap, shap_attributions


def test_without_the_package_shap_is_refused_naming_method(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "shap", None)  # the import now fails as if it were not installed
    with pytest.raises(InvalidInputError) as caught:
        require_shap()
    assert caught.value.details == [{"loc": ["method"], "msg": "shap is not installed on the server"}]
    assert "explain" in caught.value.message
    with pytest.raises(InvalidInputError):
        shap_attributions(lambda rows: rows[:, 0], np.zeros((1, 2)), np.zeros((3, 2)))


def test_shap_values_of_grouped_features_add_up_to_the_output_minus_the_base_value() -> None:
    pytest.importorskip("shap")
    rng = np.random.default_rng(0)
    background = rng.normal(size=(10, 6))
    rows = rng.normal(size=(3, 6))
    groups = [np.array([0, 3]), np.array([1, 4]), np.array([2, 5])]

    def predict(x: np.ndarray) -> np.ndarray:
        return np.asarray(2.0 * (x[:, 0] + x[:, 3]) - x[:, 1] + 0.0 * x[:, 2], dtype=np.float64)

    phi, base = shap_attributions(predict, rows, background, groups=groups, nsamples=64, seed=0)
    assert phi.shape == (3, 3)
    assert phi.sum(axis=1) + base == pytest.approx(predict(rows), abs=1e-8)
    assert base == pytest.approx(predict(background).mean())
    # a linear model's SHAP value is its coefficient times the gap from the background mean
    gap = rows - background.mean(axis=0)
    assert phi[:, 0] == pytest.approx(2.0 * (gap[:, 0] + gap[:, 3]), abs=1e-8)
    assert phi[:, 1] == pytest.approx(-gap[:, 1], abs=1e-8)
    assert phi[:, 2] == pytest.approx(0.0, abs=1e-12)
