"""The metric catalogue: the quality and drift names other families fill in, read through a real app's stores,
and the protocol a family registers a metric with."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from quantcrew.config.settings import Settings
from quantcrew.ml_server.app import create_app
from quantcrew.ml_server.metrics import Metrics
from quantcrew.ml_server.services.monitor.sources import (
    CATALOGUE,
    DRIFT_METRICS,
    QUALITY_METRICS,
    Catalogue,
    MetricSpec,
    Sample,
    SourceContext,
    register_metric,
)

RULES = """\
rules:
  - name: hit-rate-low
    metric: quality.hit_rate
    comparison: "<"
    threshold: 0.6
    window: 10
    min_samples: 4
    severity: warning
  - name: drifted
    metric: drift.psi_max
    comparison: ">"
    threshold: 0.25
    severity: warning
"""


@pytest.fixture
def app_client(settings: Settings, tmp_path: Path) -> Iterator[TestClient]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    settings.monitor.alert_rules = rules
    with TestClient(create_app(settings)) as tc:
        yield tc


def _predict_and_settle(client: TestClient, days: list[tuple[int, float, float]]) -> None:
    log = client.app.state.predictions  # type: ignore[attr-defined]
    for day, prob, _ in days:
        log.record(model_id="ens-1", name="ensemble-x", version=1, family="ensemble", route="/v1/ensemble/predict",
                   request_hash="h", subject="SPY", as_of=f"2024-01-{day:02d}", features={}, output=prob,
                   label="up" if prob > 0.5 else "down")
    log.flush()
    outcomes = [{"outcome_id": f"SPY:{day}", "subject": "SPY", "as_of": f"2024-01-{day:02d}", "realised_return": r}
                for day, _, r in days]
    assert client.post("/v1/monitor/outcomes", json={"outcomes": outcomes}).status_code < 300


def test_a_quality_rule_waits_for_its_samples_then_fires_on_the_live_figure(app_client: TestClient) -> None:
    # three settled predictions, each on the wrong side: too few for min_samples 4
    _predict_and_settle(app_client, [(2, 0.8, -0.01), (3, 0.3, 0.02), (4, 0.7, -0.01)])
    first = app_client.post("/v1/monitor/alerts/evaluate", json={"rules": ["hit-rate-low"]}).json()
    assert first["changed"] == [] and "too few samples" in first["skipped"]["hit-rate-low"]
    _predict_and_settle(app_client, [(5, 0.9, 0.01)])  # one right of four: hit rate 0.25
    (alert,) = app_client.post("/v1/monitor/alerts/evaluate", json={"rules": ["hit-rate-low"]}).json()["changed"]
    assert alert["labels"] == {"model_id": "ens-1"} and alert["value"] == 0.25 and alert["samples"] == 4


def test_a_drift_rule_without_a_reference_is_not_judged(app_client: TestClient) -> None:
    _predict_and_settle(app_client, [(2, 0.8, -0.01)])
    result = app_client.post("/v1/monitor/alerts/evaluate", json={"rules": ["drifted"]}).json()
    assert result["changed"] == [] and result["skipped"]["drifted"] == "no data"


def test_the_catalogue_names_every_quality_and_drift_figure() -> None:
    names = set(CATALOGUE.names())
    assert {f"quality.{m}" for m in QUALITY_METRICS} | {f"drift.{m}" for m in DRIFT_METRICS} <= names
    assert {"latency.p95_ms", "breaker.trips", "jobs.failed"} <= names


def test_a_family_registers_a_metric_and_a_selector_filters_its_series() -> None:
    def provider(context: SourceContext, window: float, selector: Mapping[str, str]) -> list[Sample]:
        return [Sample((("model_id", "a"),), 1.0, 5), Sample((("model_id", "b"),), 2.0, 5)]

    spec = register_metric("test.registered", provider, window="samples", min_samples=5, labels=("model_id",))
    try:
        assert CATALOGUE.get("test.registered") is spec
        assert [s.value for s in CATALOGUE.read("test.registered", SourceContext(), 10, {"model_id": "b"})] == [2.0]
    finally:
        CATALOGUE.specs.pop("test.registered")
    private = Catalogue()
    private.register(MetricSpec("x", provider))
    with pytest.raises(ValueError, match="registered already"):
        private.register(MetricSpec("x", provider), replace=False)


def test_p95_latency_reads_the_rolling_window_of_each_route() -> None:
    metrics = Metrics()
    window = metrics.recent_window("GET", "/r")
    for i in range(100):
        window.append((1e12, (i + 1) / 1000.0))  # 1 .. 100 ms, all recent
    window.append((0.0, 9.0))  # long ago: outside any window
    (sample,) = CATALOGUE.read("latency.p95_ms", SourceContext(metrics=metrics), 60.0, {})
    assert sample.labels == (("method", "GET"), ("route", "/r")) and sample.n == 100
    assert sample.value == pytest.approx(95.0)
