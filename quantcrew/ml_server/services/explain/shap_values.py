"""SHAP values through the optional ``shap`` package, in the same shape as the perturbation answers.

``shap`` is an optional extra (``pip install 'quantcrew[explain]'``); without it a request with
``method: "shap"`` is a 422 naming ``method``. The model stays a ``predict(matrix) -> vector``
function: SHAP's kernel explainer (model-agnostic, no compiled code to warm up) estimates each
feature's additive share of one output against a small background of rows.

A feature spanning several columns (a windowed model) is one SHAP player: the explainer sees a
matrix of row indices, one column per feature, and the rows it asks about are rebuilt by taking
each feature's columns from the row its index names (the explained row's own, or a background
row's when the feature is "absent"). So the shares add up to ``output - base_value`` per row,
whether a feature is one column or many.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.services.explain.permutation import IntArray, Predict, check_output, single_groups

__all__ = ["require_shap", "shap_attributions"]

FloatArray = npt.NDArray[np.float64]


def require_shap() -> ModuleType:
    """The ``shap`` module.

    Raises:
        InvalidInputError: it is not installed (a 422 naming ``method``).
    """
    try:
        import shap
    except ImportError as exc:
        raise InvalidInputError(
            "method 'shap' needs the optional shap package, which this server does not have: install the "
            "'explain' extra (pip install 'quantcrew[explain]'), or use method 'perturbation'",
            details=[{"loc": ["method"], "msg": "shap is not installed on the server"}]) from exc
    return cast(ModuleType, shap)


def shap_attributions(predict: Predict, rows: FloatArray, background: FloatArray, *,
                      groups: Sequence[IntArray] | None = None, nsamples: int = 256,
                      seed: int = 0) -> tuple[FloatArray, float]:
    """Per row of ``rows``, each feature's SHAP value, ``(n, G)``, and the base value.

    Args:
        predict: The model, rows -> outputs.
        rows: The rows explained, ``(n, d)``.
        background: Rows standing for an absent feature, ``(m, d)``.
        groups: Column indices of each feature; None: one column each.
        nsamples: Feature coalitions the kernel explainer evaluates per row.
        seed: Seeds the explainer's coalition sampling.

    Raises:
        InvalidInputError: ``shap`` is not installed.
    """
    shap = require_shap()
    rows = np.asarray(rows, dtype=np.float64)
    background = np.asarray(background, dtype=np.float64)
    cols = list(groups) if groups is not None else single_groups(rows.shape[1])
    pool = np.concatenate([background, rows], axis=0)
    m = background.shape[0]

    def by_index(z: Any) -> FloatArray:
        idx = np.rint(np.asarray(z, dtype=np.float64)).astype(np.int64)
        built = np.empty((idx.shape[0], pool.shape[1]), dtype=np.float64)
        for j, group in enumerate(cols):
            built[:, group] = pool[idx[:, j]][:, group]
        return check_output(predict(built), idx.shape[0])

    bg_index = np.repeat(np.arange(m, dtype=np.float64)[:, None], len(cols), axis=1)
    row_index = np.repeat(np.arange(m, m + rows.shape[0], dtype=np.float64)[:, None], len(cols), axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explainer = shap.KernelExplainer(by_index, bg_index, seed=seed)
        values = explainer.shap_values(row_index, nsamples=nsamples, silent=True)
    out = np.asarray(values, dtype=np.float64).reshape(rows.shape[0], len(cols))
    return out, float(np.asarray(explainer.expected_value, dtype=np.float64).reshape(-1)[0])
