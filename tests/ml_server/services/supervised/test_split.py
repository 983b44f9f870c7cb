"""Supervised training table: the chronological split and the class codes."""

from __future__ import annotations

import numpy as np
import pytest

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.services.matrix import matrix_from_payload
from quantcrew.ml_server.services.supervised.split import MIN_HOLDOUT, check_magnitude, prepare
from tests.ml_server.services.supervised.test_service import _analyze, separable_data


def test_prepare_holds_out_the_last_rows_and_codes_classes_seen_in_training() -> None:
    features, y = separable_data(50)
    y[-1] = "sideways"  # a holdout label never seen in training
    request = _analyze(features, y, task="classification", test_fraction=0.2)
    split = prepare(request, matrix_from_payload(request.features, min_rows=1, field="features"), min_rows=30)
    assert split.n_train == 40 and split.classes == ["down", "up"]
    assert split.y[-1] == -1 and set(np.asarray(split.y[:40]).tolist()) <= {0, 1}
    np.testing.assert_array_equal(split.x, np.asarray(features["values"]))


def test_prepare_refuses_a_holdout_too_small_for_metrics() -> None:
    features, y = separable_data(40)
    request = _analyze(features, y, task="classification", test_fraction=0.1)
    with pytest.raises(InvalidInputError, match=f"at least {MIN_HOLDOUT}"):
        prepare(request, matrix_from_payload(request.features, min_rows=1, field="features"), min_rows=30)


def test_check_magnitude_names_the_cell() -> None:
    with pytest.raises(InvalidInputError, match=r"features.values\[1\]\[0\]"):
        check_magnitude([[1.0, 2.0], [1e31, 0.0]], "features.values")
