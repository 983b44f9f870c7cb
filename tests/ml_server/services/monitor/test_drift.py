"""Drift: PSI's properties, the KS test against its definition, the decision rule, drift of a regime model on bars
of a shifted regime vs the same regime, and drift over recent traffic from a real prediction log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantcrew.config.settings import MonitorSettings
from quantcrew.data import RegimeParams, generate_regime_market, to_payload_dict
from quantcrew.data.synthetic import REGIMES
from quantcrew.ml_server.errors import ConflictError, InvalidInputError
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.common import OHLCVPayload
from quantcrew.ml_server.schemas.regime import RegimeFitRequest
from quantcrew.ml_server.services import adapter
from quantcrew.ml_server.services.bars import bars_from_payload
from quantcrew.ml_server.services.monitor.drift import (
    PSI_FLOOR,
    DriftMonitor,
    DriftRule,
    drift_report,
    drift_value,
    effective_size,
    ks_test,
    psi,
)
from quantcrew.ml_server.services.monitor.predictions import PredictionLog
from quantcrew.ml_server.services.monitor.reference import ReferenceStore, build_reference
from quantcrew.ml_server.services.regime import service as regime
from quantcrew.ml_server.services.regime.model import RegimeDetector

RULE = DriftRule(psi=0.25, alpha=0.01, min_samples=30)


def shares(draw: Any, k: int) -> list[float]:
    raw = draw(st.lists(st.floats(0.0, 1.0), min_size=k, max_size=k).filter(lambda v: sum(v) > 1e-3))
    total = sum(raw)
    return [v / total for v in raw]


@st.composite
def share_pairs(draw: Any) -> tuple[list[float], list[float]]:
    k = draw(st.integers(2, 20))
    return shares(draw, k), shares(draw, k)


@settings(max_examples=300, deadline=None)
@given(pair=share_pairs())
def test_psi_is_non_negative_symmetric_and_zero_on_itself(pair: tuple[list[float], list[float]]) -> None:
    p, q = pair
    assert psi(p, q) >= 0.0
    assert psi(p, q) == pytest.approx(psi(q, p), rel=1e-12, abs=1e-15)
    assert psi(p, p) == 0.0


@settings(max_examples=200, deadline=None)
@given(pair=share_pairs())
def test_psi_is_the_symmetrised_kl_divergence_of_the_floored_shares(pair: tuple[list[float], list[float]]) -> None:
    p, q = (np.maximum(np.array(v), PSI_FLOOR) for v in pair)
    kl = float(np.sum(q * np.log(q / p))) + float(np.sum(p * np.log(p / q)))
    assert psi(*pair) == pytest.approx(kl, rel=1e-9, abs=1e-12)


def test_an_empty_bin_is_floored_not_infinite() -> None:
    value = psi([0.5, 0.5, 0.0], [0.0, 0.5, 0.5])
    assert np.isfinite(value) and value > 1.0


@settings(max_examples=150, deadline=None)
@given(a=st.lists(st.floats(-100, 100), min_size=1, max_size=60), b=st.lists(st.floats(-100, 100), min_size=1,
                                                                            max_size=60))
def test_ks_statistic_is_the_largest_gap_between_the_empirical_cdfs(a: list[float], b: list[float]) -> None:
    statistic, p = ks_test(a, b)
    grid = np.array(sorted(set(a) | set(b)))
    cdf_a = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    assert statistic == pytest.approx(float(np.max(np.abs(cdf_a - cdf_b))), abs=1e-12)
    assert 0.0 <= p <= 1.0


def test_effective_size_is_n_for_independent_values_and_shrinks_with_autocorrelation() -> None:
    rng = np.random.default_rng(5)
    iid = rng.normal(size=2000)
    assert effective_size(iid) > 1800
    ar = np.zeros(2000)
    for t in range(1, 2000):
        ar[t] = 0.9 * ar[t - 1] + rng.normal()
    assert 2000 * 0.1 / 1.9 * 0.7 < effective_size(ar) < 2000 * 0.1 / 1.9 * 1.3
    assert effective_size(np.ones(50)) == 50.0 and effective_size(np.array([1.0, 2.0])) == 2.0


def test_a_slow_swing_of_an_autocorrelated_feature_is_not_drift_at_its_effective_size() -> None:
    """A window of 60 rows of a smooth AR(1) series from the training law: KS at 60 rows says 'new law',
    at its effective size it does not; the raw p-value is still reported."""
    rng = np.random.default_rng(6)

    def ar(n: int) -> np.ndarray:
        x = np.zeros(n)
        for t in range(1, n):
            x[t] = 0.97 * x[t - 1] + rng.normal(0.0, np.sqrt(1 - 0.97**2))
        return x

    ref = build_reference("m", "test", ["slow"], ar(20_000)[:, None], None, bins=10, rows=2000)
    raw = adjusted = 0
    for _ in range(100):
        window = ar(560)[-60:]
        strict = drift_report(ref, {"slow": window}, None, DriftRule(autocorrelation=False), source="bars")
        loose = drift_report(ref, {"slow": window}, None, RULE, source="bars")
        series = loose.features[0]
        assert series.ks_p_adjusted is not None and series.ks_p is not None and series.ks_p_adjusted >= series.ks_p
        assert series.n_effective is not None and series.n_effective < 20
        raw += strict.drifted
        adjusted += loose.drifted
    assert raw > 10 and adjusted <= 1


def _reference(rng: np.random.Generator, n: int = 2000) -> Any:
    x = rng.normal(size=(n, 3))
    return build_reference("m", "test", ["a", "b", "c"], x, x[:, 0] + x[:, 1], bins=10, rows=2000)


def test_a_window_from_the_training_law_is_not_drifted() -> None:
    rng = np.random.default_rng(0)
    ref = _reference(rng)
    x = rng.normal(size=(500, 3))
    report = drift_report(ref, {"a": x[:, 0], "b": x[:, 1], "c": x[:, 2]}, x[:, 0] + x[:, 1], RULE, source="bars")
    assert report.judged and not report.drifted and report.drifted_features == []
    assert report.psi_max is not None and report.psi_max < 0.1 and report.n == 500


def test_a_shifted_feature_is_named_and_the_output_too_when_it_moves() -> None:
    rng = np.random.default_rng(1)
    ref = _reference(rng)
    x = rng.normal(size=(500, 3))
    x[:, 1] += 1.5
    report = drift_report(ref, {"a": x[:, 0], "b": x[:, 1], "c": x[:, 2]}, x[:, 0] + x[:, 1], RULE, source="bars")
    assert report.drifted and report.drifted_features == ["b", "output"]
    assert "0.01/4" in report.rule  # Bonferroni over 3 features and the output


def test_small_windows_often_pass_the_psi_bar_by_noise_and_the_rule_still_fires_below_alpha() -> None:
    """Both conditions are required: with 30 values from the training law, PSI alone is above 0.25 in many
    windows; the rule fires in at most about alpha of them (the KS level is family-wise over the series)."""
    rng = np.random.default_rng(2)
    ref = _reference(rng)
    psi_alone = fired = 0
    for _ in range(400):
        x = rng.normal(size=(30, 3))
        report = drift_report(ref, {"a": x[:, 0], "b": x[:, 1], "c": x[:, 2]}, None, RULE, source="bars")
        psi_alone += any(s.psi is not None and s.psi > RULE.psi for s in report.features)
        fired += report.drifted
        assert all(s.ks_p is not None and s.ks_p < RULE.alpha / 3 for s in report.features if s.drifted)
    assert psi_alone > 100
    assert fired <= 400 * RULE.alpha


def test_fewer_than_min_samples_are_never_judged_drifted() -> None:
    rng = np.random.default_rng(3)
    ref = _reference(rng)
    report = drift_report(ref, {"a": rng.normal(5.0, 1.0, 29)}, None, RULE, source="bars")
    assert not report.judged and not report.drifted and report.features[0].psi is not None
    assert report.missing_features == ["b", "c"]


# -- a regime model on bars of the same regime, and of another ------------------------------------------------


def one_regime(law: RegimeParams, n: int, seed: int, start: str = "2001-01-01") -> dict[str, Any]:
    """Bars of a market that stays in one regime (every regime of the generator set to ``law``)."""
    market = generate_regime_market(n, params={name: law for name in REGIMES}, seed=seed, start=start)
    return to_payload_dict(market.bars)


CALM = RegimeParams(mu=0.0004, sigma=0.008)
STORMY = RegimeParams(mu=-0.001, sigma=0.03, volume_level=2.0)


@pytest.fixture(scope="module")
def calm_regime_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelRegistry, str]:
    home = tmp_path_factory.mktemp("drift-regime")
    registry = ModelRegistry(home / "registry.db", home / "artifacts")
    reply = regime.fit(RegimeFitRequest(data=OHLCVPayload(**one_regime(CALM, 500, seed=1)), n_states=2,
                                        n_restarts=1), registry, min_rows=30)
    assert reply.model_id is not None
    return registry, reply.model_id


def _bars_drift(registry: ModelRegistry, model_id: str, payload: dict[str, Any]) -> Any:
    detector, _ = adapter.rebuild(registry, model_id, RegimeDetector)
    names, matrix, outputs = regime.drift_inputs(detector, bars_from_payload(OHLCVPayload(**payload)))
    with ReferenceStore(registry.db_path) as store:
        reference = store.get(model_id)
    assert reference is not None
    return drift_report(reference, {n: matrix[:, j] for j, n in enumerate(names)}, outputs, RULE, source="bars")


def test_bars_of_the_same_regime_do_not_drift(calm_regime_model: tuple[ModelRegistry, str]) -> None:
    registry, model_id = calm_regime_model
    report = _bars_drift(registry, model_id, one_regime(CALM, 250, seed=7, start="2005-01-03"))
    assert report.judged and not report.drifted, report


def test_bars_of_a_stormier_regime_drift_on_the_range(calm_regime_model: tuple[ModelRegistry, str]) -> None:
    registry, model_id = calm_regime_model
    report = _bars_drift(registry, model_id, one_regime(STORMY, 250, seed=7, start="2005-01-03"))
    assert report.drifted and "range" in report.drifted_features
    assert report.psi_max is not None and report.psi_max > 1.0


# -- recent traffic from the prediction log -------------------------------------------------------------------


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[ReferenceStore, PredictionLog]]:
    references = ReferenceStore(tmp_path / "registry.db")
    log = PredictionLog(tmp_path / "registry.db", flush_ms=10.0)
    yield references, log
    log.close()
    references.close()


def _log(log: PredictionLog, model_id: str, rows: np.ndarray) -> None:
    for row in rows:
        log.record(model_id=model_id, name="m", version=1, family="test", route="/v1/test", request_hash="h",
                   subject="SYN", as_of=None, features={"a": float(row[0]), "b": float(row[1]), "c": float(row[2])},
                   output=float(row[0] + row[1]))
    assert log.flush()


def test_traffic_drift_reads_the_log_and_answers_the_alert_metrics(
        stores: tuple[ReferenceStore, PredictionLog]) -> None:
    references, log = stores
    rng = np.random.default_rng(4)
    reference = _reference(rng)
    references.put(reference)
    monitor = DriftMonitor(references, log, MonitorSettings(drift_window=200, min_samples=30))
    assert monitor.value("m", "psi_max") == (None, 0)  # no traffic yet: nothing judged
    _log(log, "m", rng.normal(size=(200, 3)))
    calm = monitor.report("m")
    assert calm.n == 200 and calm.judged and not calm.drifted and calm.extra["records"] == 200
    shifted = rng.normal(size=(200, 3))
    shifted[:, 2] *= 4.0
    _log(log, "m", shifted)
    stormy = monitor.report("m")
    assert stormy.drifted and stormy.drifted_features == ["c"]
    assert monitor.value("m", "drifted_features") == (1.0, 200)
    share, n = monitor.value("m", "drifted_share")
    assert share == pytest.approx(1 / 4) and n == 200
    assert monitor.value("m", "ks_pvalue_min")[0] == stormy.ks_p_min
    state = type("State", (), {"references": references, "predictions": log,
                               "settings": type("S", (), {"monitor": monitor.monitor})()})()
    assert drift_value(state, "m", "psi_max") == (stormy.psi_max, 200)
    with pytest.raises(LookupError):
        drift_value(state, "unknown", "psi_max")
    with pytest.raises(LookupError):
        drift_value(state, "m", "data_quality")  # no bars were ever scored for it
    references.put_quality("m", 0.9, 250)
    assert drift_value(state, "m", "data_quality") == (0.9, 250)
    with pytest.raises(InvalidInputError):
        monitor.value("m", "psi_mean")


def test_a_model_without_reference_is_a_409_naming_it(stores: tuple[ReferenceStore, PredictionLog]) -> None:
    references, log = stores
    with pytest.raises(ConflictError, match="no drift reference"):
        DriftMonitor(references, log, MonitorSettings()).report("ghost")
