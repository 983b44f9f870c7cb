"""Live quality: the figures by hand on a small known set, and their properties over any input."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from quantcrew.ml_server.errors import NotFoundError
from quantcrew.ml_server.metrics import Metrics
from quantcrew.ml_server.schemas.monitor import Outcome
from quantcrew.ml_server.services.monitor.outcomes import OutcomeStore
from quantcrew.ml_server.services.monitor.predictions import PredictionLog
from quantcrew.ml_server.services.monitor.quality import (
    LiveQuality,
    QualityCollector,
    accuracy,
    brier,
    expected_calibration_error,
    hit_rate,
    label_stability,
    log_loss,
    quality_value,
    sharpe,
)

probs = st.lists(st.floats(0.0, 1.0), min_size=1, max_size=60)


@given(probs, st.data())
@hsettings(max_examples=60, deadline=None)
def test_brier_is_in_0_1_and_log_loss_is_not_negative(p: list[float], data: st.DataObject) -> None:
    y = data.draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=len(p), max_size=len(p)))
    b, ll, ece = brier(p, y), log_loss(p, y), expected_calibration_error(p, y)
    assert b is not None and 0.0 <= b <= 1.0
    assert ll is not None and ll >= 0.0 and math.isfinite(ll)
    assert ece is not None and 0.0 <= ece <= 1.0


@given(st.lists(st.tuples(st.integers(0, 9), st.integers(1, 5)), min_size=1, max_size=10, unique_by=lambda t: t[0]))
@hsettings(max_examples=40, deadline=None)
def test_ece_of_perfectly_calibrated_buckets_is_zero(buckets: list[tuple[int, int]]) -> None:
    # bucket b predicts p = (b + 0.5) / 10 on 10 * k samples, of which exactly p * 10 * k come true
    p: list[float] = []
    y: list[float] = []
    for b, k in buckets:
        n, hits = 10 * k, (2 * b + 1) * k // 2
        if (2 * b + 1) * k % 2:  # p * n not whole: double the samples
            n, hits = 2 * n, (2 * b + 1) * k
        p += [(b + 0.5) / 10] * n
        y += [1.0] * hits + [0.0] * (n - hits)
    assert expected_calibration_error(p, y) == pytest.approx(0.0, abs=1e-12)


@given(st.lists(st.floats(-0.1, 0.1), min_size=3, max_size=50), st.floats(0.1, 3.0))
@hsettings(max_examples=40, deadline=None)
def test_sharpe_does_not_depend_on_the_position_size(r: list[float], size: float) -> None:
    one, scaled = sharpe([1.0] * len(r), r), sharpe([size] * len(r), r)
    assert (one is None) == (scaled is None)
    if one is not None and scaled is not None:
        assert scaled == pytest.approx(one, rel=1e-6)
        assert sharpe([-1.0] * len(r), r) == pytest.approx(-one, rel=1e-9)


def test_the_figures_by_hand() -> None:
    p, r = [0.8, 0.3, 0.6, 0.4], [0.01, -0.02, -0.01, 0.005]
    y = [1.0, 0.0, 0.0, 1.0]
    assert hit_rate(p, r) == 0.5  # right on 1 and 2
    assert brier(p, y) == pytest.approx((0.04 + 0.09 + 0.36 + 0.36) / 4)
    assert log_loss(p, y) == pytest.approx(-(math.log(0.8) + math.log(0.7) + math.log(0.4) + math.log(0.4)) / 4)
    # bins: 0.3 -> 3, 0.4 -> 4, 0.6 -> 6, 0.8 -> 8: each its own bin
    assert expected_calibration_error(p, y) == pytest.approx((0.2 + 0.3 + 0.6 + 0.6) / 4)
    pnl = np.array([1, -1, 1, -1]) * np.array(r)
    assert sharpe([1, -1, 1, -1], r) == pytest.approx(pnl.mean() / pnl.std(ddof=1) * math.sqrt(252))
    # A: bull, bear, bull (no pair keeps it); B: bull, bull (one does)
    assert label_stability(["A", "B", "A", "A", "B"], ["bull", "bull", "bear", "bull", "bull"]) == (1 / 3, 3)
    assert accuracy(["bull", "bear", "bull"], ["bull", None, "bear"]) == (0.5, 2)


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[PredictionLog, OutcomeStore, LiveQuality]]:
    path = tmp_path / "r.db"
    log = PredictionLog(path, flush_ms=10.0)
    outcomes = OutcomeStore(path)
    quality = LiveQuality(path, window=10, min_samples=3, cache_s=0.0)
    yield log, outcomes, quality
    quality.close()
    outcomes.close()
    log.close()


def _predict(log: PredictionLog, model_id: str, family: str, subject: str, day: int, output: float | None,
             label: str | None, **over: Any) -> None:
    log.record(model_id=model_id, name=f"{family}-x", version=1, family=family, route=f"/v1/{family}",
               request_hash="h", subject=subject, as_of=f"2024-01-{day:02d}", features={}, output=output,
               label=label, **over)


def _outcome(store: OutcomeStore, subject: str, day: int, r: float, regime: str | None = None) -> None:
    store.add([Outcome.model_validate({"outcome_id": f"{subject}:{day}", "subject": subject,
                                       "as_of": f"2024-01-{day:02d}", "realised_return": r, "regime": regime})])


def _figures(report: Any, size: int) -> dict[str, tuple[float | None, int, bool]]:
    [w] = [w for w in report.windows if w.size == size]
    return {m.metric: (m.value, m.n, m.judged) for m in w.metrics}


def test_ensemble_quality_joins_predictions_to_outcomes_by_subject_and_bar(
        stores: tuple[PredictionLog, OutcomeStore, LiveQuality]) -> None:
    log, outcomes, quality = stores
    rows = [(2, 0.8, "up", 0.01), (3, 0.3, "down", -0.02), (4, 0.6, "up", -0.01), (5, 0.4, "flat", 0.005)]
    for day, prob, label, ret in rows:
        _predict(log, "ens-1", "ensemble", "SPY", day, 0.1, "down")  # an earlier answer on the bar: replaced
        _predict(log, "ens-1", "ensemble", "SPY", day, prob, label)
        _outcome(outcomes, "SPY", day, ret)
    _predict(log, "ens-1", "ensemble", "SPY", 9, 0.9, "up")  # no outcome yet: not settled
    _predict(log, "ens-1", "ensemble", "QQQ", 2, 0.9, "up")  # another subject, no outcome
    log.flush()
    report = quality.report("ens-1")
    assert (report.predictions, report.settled, report.family) == (10, 4, "ensemble")
    got = _figures(report, 10)
    p, y, r = [0.8, 0.3, 0.6, 0.4], [1.0, 0.0, 0.0, 1.0], [0.01, -0.02, -0.01, 0.005]
    assert got["hit_rate"] == (0.5, 4, True)
    assert got["brier"][0] == pytest.approx(brier(p, y))
    assert got["log_loss"][0] == pytest.approx(log_loss(p, y))
    assert got["calibration_error"][0] == pytest.approx(expected_calibration_error(p, y))
    pos = [1.0, -1.0, 1.0, 0.0]  # up, down, up, flat
    assert got["sharpe"][0] == pytest.approx(sharpe(pos, r))
    assert got["mean_return"][0] == pytest.approx(np.mean(np.array(pos) * r))
    value, n = quality_value(quality, "ens-1", "brier", 10)
    assert value == pytest.approx(brier(p, y)) and n == 4
    # by name; the newest two settled (days 5 and 4) are both on the wrong side
    assert quality_value(quality, "ensemble-x", "hit_rate", 2) == (0.0, 2)
    assert quality_value(quality, "nope", "brier") == (None, 0)


def test_position_takers_are_judged_by_the_sharpe_of_their_positions(
        stores: tuple[PredictionLog, OutcomeStore, LiveQuality]) -> None:
    log, outcomes, quality = stores
    pos, r = [1.0, 0.5, -1.0, 0.0, 1.0], [0.01, 0.02, 0.01, -0.03, -0.01]
    for day, (q, ret) in enumerate(zip(pos, r, strict=True), start=2):
        _predict(log, "rl-1", "rl", "SPY", day, q, "long")
        _outcome(outcomes, "SPY", day, ret)
    log.flush()
    got = _figures(quality.report("rl-1"), 10)
    assert got["sharpe"][0] == pytest.approx(sharpe(pos, r)) and got["sharpe"][1] == 5
    assert got["mean_return"][0] == pytest.approx(float(np.mean(np.array(pos) * np.array(r))))
    assert "brier" not in got


def test_regimes_are_judged_by_label_stability_and_accuracy_on_known_regimes(
        stores: tuple[PredictionLog, OutcomeStore, LiveQuality]) -> None:
    log, outcomes, quality = stores
    labels = ["bull", "bull", "bear", "bear", "bear"]
    truth = ["bull", "bear", "bear", None, "bear"]
    for day, (lab, true) in enumerate(zip(labels, truth, strict=True), start=2):
        _predict(log, "reg-1", "regime", "SPY", day, 0.0, lab)
        _outcome(outcomes, "SPY", day, 0.0, regime=true)
    log.flush()
    got = _figures(quality.report("reg-1"), 10)
    assert got["label_stability"] == (0.75, 4, True)  # 3 of 4 consecutive pairs keep their label
    assert got["accuracy"][0] == pytest.approx(3 / 4) and got["accuracy"][1:] == (4, True)


def test_an_unknown_model_is_not_found_and_the_collector_exports_every_figure(
        stores: tuple[PredictionLog, OutcomeStore, LiveQuality]) -> None:
    log, outcomes, quality = stores
    with pytest.raises(NotFoundError, match="nope"):
        quality.report("nope")
    _predict(log, "ens-1", "ensemble", "SPY", 2, 0.7, "up")
    _outcome(outcomes, "SPY", 2, 0.01)
    log.flush()
    metrics = Metrics()
    metrics.registry.register(QualityCollector(quality))
    labels = {"model_id": "ens-1", "name": "ensemble-x", "version": "1", "family": "ensemble", "metric": "brier",
              "window": "10"}
    assert metrics.registry.get_sample_value("quantcrew_model_quality", labels) == pytest.approx(0.09)
    assert metrics.registry.get_sample_value("quantcrew_model_quality_samples", labels) == 1.0
