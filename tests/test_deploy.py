"""The Prometheus alert rules and the Grafana dashboard shipped in deploy/: every metric they name is exported by
a real app's /metrics, and the Prometheus rules mirror the server's default alert rules."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from fastapi.testclient import TestClient

from quantcrew.config.settings import Settings
from quantcrew.ml_server.app import create_app
from quantcrew.ml_server.services.monitor.rules import load_rules

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
PROMETHEUS_RULES = DEPLOY / "prometheus" / "alert_rules.yml"
DASHBOARD = DEPLOY / "grafana" / "quantcrew-dashboard.json"

_NAME = re.compile(r"\bquantcrew_[a-z0-9_]+\b")
_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def _prometheus_exprs() -> list[str]:
    groups = yaml.safe_load(PROMETHEUS_RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    panels: list[dict[str, Any]] = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def _exported(settings: Settings) -> tuple[set[str], set[str]]:
    """(sample names, metric family names) of a real app's /metrics after a few requests of each kind."""
    with TestClient(create_app(settings)) as client:
        client.get("/health")
        client.get("/v1/models")
        client.post("/v1/monitor/events", json={"kind": "breaker_open", "client": "deploy-test"})
        client.post("/v1/monitor/alerts/evaluate")
        text = client.get("/metrics").text
    samples = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    families = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    return samples, families


def _is_exported(name: str, samples: set[str], families: set[str]) -> bool:
    if name in samples or name in families:
        return True
    return any(name.endswith(suffix) and name[: -len(suffix)] in families for suffix in _SUFFIXES)


def test_every_metric_named_by_the_rules_and_the_dashboard_is_exported(settings: Settings) -> None:
    named = {name for expr in _prometheus_exprs() + _dashboard_exprs() for name in _NAME.findall(expr)}
    assert len(named) >= 15  # the parser found the metrics (a broken regex would find none and pass)
    samples, families = _exported(settings)
    missing = sorted(name for name in named if not _is_exported(name, samples, families))
    assert not missing, f"named in deploy/ but not on /metrics: {missing}"
    # the request and alert series the panels plot exist as samples, not only as declared families
    assert {"quantcrew_http_request_seconds_bucket", "quantcrew_client_events_total", "quantcrew_alerts_firing",
            "quantcrew_alert_rule_firing"} <= samples


def test_the_prometheus_rules_mirror_the_servers_default_rules() -> None:
    groups = yaml.safe_load(PROMETHEUS_RULES.read_text())["groups"]
    mirrored = {rule["labels"]["rule"]: rule["labels"]["severity"] for group in groups for rule in group["rules"]
                if "rule" in rule["labels"]}
    assert mirrored == {rule.name: rule.severity for rule in load_rules(None)}


def test_every_dashboard_panel_has_a_query_and_a_unique_id() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    assert all(panel["targets"] and all(t["expr"].strip() for t in panel["targets"]) for panel in panels)
