"""Causal regime labels: each bar labelled by a fit on earlier bars only, refitted on an expanding window."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from quantcrew.data.loaders import to_payload_dict
from quantcrew.data.ohlcv import OHLCV
from quantcrew.data.synthetic import generate_regime_market
from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.jobs import JobCancelled, JobContext
from quantcrew.ml_server.schemas.regime import RegimeCausalRequest
from quantcrew.ml_server.services.regime.causal import MAX_FITS, CausalPlan, causal_labels, head, prepare
from quantcrew.ml_server.services.regime.model import RegimeDetector

FAST = {"n_states": 2, "n_restarts": 1}  # a fit of a few hundred bars in tens of milliseconds


def _request(ohlcv: OHLCV, **fields: Any) -> RegimeCausalRequest:
    return RegimeCausalRequest.model_validate({"data": to_payload_dict(ohlcv), **FAST, **fields})


def _plan(ohlcv: OHLCV, **fields: Any) -> CausalPlan:
    return prepare(_request(ohlcv, **fields))


@pytest.fixture(scope="module")
def market() -> OHLCV:
    return generate_regime_market(320, seed=4).bars


def test_each_bar_is_labelled_by_the_latest_fit_on_earlier_bars(market: OHLCV) -> None:
    plan = _plan(market, min_train=160, refit_every=60)
    result = causal_labels(plan)
    assert [f.first_bar for f in result.fits] == [160, 220, 280]
    assert [f.bars_labelled for f in result.fits] == [60, 60, 40]
    assert result.labels[:160] == [None] * 160 and result.probabilities[:160] == [None] * 160
    assert result.fit_of_bar[:160] == [None] * 160 and result.bear_trend[:160] == [None] * 160
    assert all(label is not None for label in result.labels[160:])
    assert sum(result.counts.values()) == len(market) - 160
    for k, fit in enumerate(result.fits):
        assert fit.bars_used == fit.first_bar and fit.train_end < fit.date == result.timestamps[fit.first_bar]
        rows = range(fit.first_bar, fit.first_bar + fit.bars_labelled)
        assert {result.fit_of_bar[j] for j in rows} == {k}
        # the same fit, made by hand on the bars before its first label, filtered over the bars up to each one
        detector = RegimeDetector(**plan.detector).fit(head(plan.bars, fit.first_bar))
        assert detector.state_labels_ == fit.state_labels
        j = rows[-1]
        by_hand = detector.filter(head(plan.bars, j + 1))
        assert result.labels[j] == by_hand.labels[-1]
        assert result.probabilities[j] == pytest.approx(float(by_hand.label_probs[by_hand.labels[-1]][-1]))


def test_changing_later_bars_never_changes_an_earlier_label(market: OHLCV) -> None:
    base = causal_labels(_plan(market, min_train=160, refit_every=60))
    other = generate_regime_market(320, seed=9, params="crisis").bars
    spliced = OHLCV(market.symbol, market.timestamps,
                    *(np.concatenate([getattr(market, c)[:250], getattr(other, c)[250:]])
                      for c in ("open", "high", "low", "close", "volume")))
    changed = causal_labels(_plan(spliced, min_train=160, refit_every=60))
    cut = causal_labels(_plan(market.head(250), min_train=160, refit_every=60))
    assert changed.labels[:250] == base.labels[:250] == cut.labels
    assert changed.probabilities[:250] == base.probabilities[:250] == cut.probabilities
    same = [[f.model_dump(exclude={"seconds", "bars_labelled"}) for f in r.fits[:2]] for r in (changed, base, cut)]
    assert same[0] == same[1] == same[2]  # the fits on bars before the change are the same fits
    assert changed.probabilities[250:] != base.probabilities[250:]  # the later bars did change something


def test_same_seed_same_labels_and_every_probability_is_optional(market: OHLCV) -> None:
    a = causal_labels(_plan(market, min_train=250, refit_every=40, seed=2, include_probabilities=True))
    b = causal_labels(_plan(market, min_train=250, refit_every=40, seed=2))
    assert a.labels == b.labels and a.probabilities == b.probabilities
    assert b.label_probabilities is None and a.label_probabilities is not None
    for j in range(250, len(market)):
        row = {label: p[j] for label, p in a.label_probabilities.items()}
        assert sum(v for v in row.values() if v is not None) == pytest.approx(1.0)
        assert row[a.labels[j]] == a.probabilities[j] == max(v for v in row.values() if v is not None)


def test_a_slow_decline_at_unchanged_volatility_is_labelled_bear_causally() -> None:
    # a calm rise, then a fall at the SAME volatility: the HMM cannot tell them apart, the trend can
    rng = np.random.default_rng(3)
    n, sigma, top = 550, 0.01, 350
    drift = np.where(np.arange(n) < top, 0.0006, -0.003)
    ret = rng.normal(drift, sigma)
    close = 100.0 * np.exp(np.cumsum(ret))
    open_ = close * np.exp(-ret * 0.5)
    spread = np.exp(np.abs(rng.normal(0.0, sigma, n)))
    high, low = np.maximum(open_, close) * spread, np.minimum(open_, close) / spread
    times = np.busday_offset(np.datetime64("2001-01-02", "D"), np.arange(n), roll="forward").astype("datetime64[ns]")
    bars = OHLCV("SLOW", times, open_, high, low, close, np.full(n, 1e6))
    fall = slice(top, n)
    peak = close[:top].max()
    deep = 1.0 - close[fall] / peak >= 0.2
    assert 80 < deep.sum() < 150  # the decline spends about half its bars 20 % below the high

    read = causal_labels(_plan(bars, min_train=300, refit_every=125))
    labels, alone = np.asarray(read.labels[fall]), np.asarray(read.filter_labels[fall])
    assert np.isin(labels[deep], ["bear", "volatile"]).mean() >= 0.95
    assert np.isin(labels, ["bear", "volatile"]).mean() >= 0.45
    assert "bull" not in labels[deep]
    assert np.isin(alone[deep], ["bear", "volatile"]).mean() < 0.5  # what the filter alone says
    plain = causal_labels(_plan(bars.head(425), min_train=300, refit_every=125, trend_reading=False))
    assert plain.labels == plain.filter_labels == read.filter_labels[:425]


def test_cancelling_stops_before_the_next_fit(market: OHLCV) -> None:
    plan = _plan(market, min_train=160, refit_every=60)
    reports: list[int] = []

    def stop_after_first(ctx: JobContext) -> None:
        reports.append(ctx.progress.done)
        ctx.request_cancel()

    ctx = JobContext("job-test", on_persist=stop_after_first, interval_s=0.0)
    with pytest.raises(JobCancelled, match="after 1 of 3 fits"):
        causal_labels(plan, ctx)
    assert reports == [1] and ctx.progress.total == 3


def test_too_few_bars_names_min_train(market: OHLCV) -> None:
    with pytest.raises(InvalidInputError) as info:
        prepare(_request(market.head(160), min_train=160))
    assert [d["loc"] for d in info.value.details][0] == ["min_train"]
    assert "at least 161" in info.value.message
    assert len(causal_labels(prepare(_request(market.head(161), min_train=160))).fits) == 1


def test_too_many_refits_names_refit_every(market: OHLCV) -> None:
    bars = generate_regime_market(MAX_FITS + 40, seed=0).bars
    with pytest.raises(InvalidInputError) as info:
        prepare(_request(bars, min_train=20, refit_every=1))
    assert info.value.details[0]["loc"] == ["refit_every"]
    assert prepare(_request(bars, min_train=20, refit_every=2)).starts[-1] == MAX_FITS + 40 - 2
