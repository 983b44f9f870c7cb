"""Labels and walk-forward folds: classes by threshold, purged training, no test row trained on."""

from __future__ import annotations

import numpy as np
import pytest

from quantcrew.ml_server.services.ensemble.folds import direction_labels, holdout_split, walk_forward_folds


def test_direction_labels_use_thresholds_and_mark_the_unknown_tail_invalid() -> None:
    close = np.array([100.0, 101.0, 100.0, 99.0, 99.2, 99.0])
    labels, valid = direction_labels(close, horizon=1, up=0.005, down=0.005)
    # moves: +1%, -0.99%, -1%, +0.2%, -0.2%, unknown
    assert labels[:5].tolist() == [2, 0, 0, 1, 1]
    assert valid.tolist() == [True] * 5 + [False]
    labels3, valid3 = direction_labels(close, horizon=3, up=0.005, down=0.005)
    assert labels3[:3].tolist() == [0, 0, 0] and not valid3[3:].any()


@pytest.mark.parametrize("scheme", ["expanding", "rolling"])
def test_folds_cover_the_test_span_and_never_train_on_a_label_that_reaches_it(scheme: str) -> None:
    horizon, purge = 5, 3
    folds = walk_forward_folds(70, 1000, 600, folds=4, horizon=horizon, purge=purge, scheme=scheme,
                               train_size=300)
    assert folds[0].test_start == 600 and folds[-1].test_stop == 1000
    assert all(a.test_stop == b.test_start for a, b in zip(folds, folds[1:], strict=False))
    for f in folds:
        # the last training label looks horizon bars ahead: it must end before the test span starts
        assert f.train_stop - 1 + horizon < f.test_start
        assert f.test_start - f.train_stop == horizon + purge
        assert f.train_start == (70 if scheme == "expanding" else f.train_stop - 300)


def test_folds_refuse_too_little_history_or_too_many_folds() -> None:
    with pytest.raises(ValueError, match="training rows"):
        walk_forward_folds(70, 1000, 100, folds=2, horizon=5, min_train=80)
    with pytest.raises(ValueError, match="fewer than folds"):
        walk_forward_folds(70, 105, 100, folds=10, horizon=5, min_train=10)
    with pytest.raises(ValueError, match="scheme"):
        walk_forward_folds(70, 1000, 600, folds=2, horizon=5, scheme="sliding")


def test_holdout_split_leaves_a_gap_before_the_validation_tail() -> None:
    (fs, fe), (vs, ve) = holdout_split(100, 400, fraction=0.2, gap=5)
    assert (fs, ve) == (100, 400) and ve - vs == 60 and vs - fe == 5
    with pytest.raises(ValueError, match="validation tail"):
        holdout_split(0, 30, fraction=0.2, gap=5)
