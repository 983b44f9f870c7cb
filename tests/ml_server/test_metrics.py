"""Request metrics: every request counted and timed under its route template, method and status."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families


def _counts(client: TestClient) -> dict[tuple[str, str, str], float]:
    out: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "quantcrew_http_requests_total":
                out[(sample.labels["method"], sample.labels["route"], sample.labels["status"])] = sample.value
    return out


def _latency_count(client: TestClient, method: str, route: str) -> float:
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if (sample.name == "quantcrew_http_request_seconds_count"
                    and (sample.labels["method"], sample.labels["route"]) == (method, route)):
                return sample.value
    return 0.0


def test_each_request_is_counted_once_under_its_route_method_and_status(client: TestClient) -> None:
    for _ in range(3):
        client.post("/v1/cluster/predict", json={})  # 422
    client.post("/v1/cluster/predict", content=b"{", headers={"content-type": "application/json"})  # 422 again
    unknown = {"model_id": "nope", "data": {"columns": ["a"], "values": [[1.0]]}}
    client.post("/v1/cluster/predict", json=unknown)  # the same route, 404
    for _ in range(2):
        client.get("/v1/jobs/nope")  # 404 under the template, not the id
    client.get("/v1/jobs")
    client.get("/no/such/route")
    counts = _counts(client)
    assert counts[("POST", "/v1/cluster/predict", "422")] == 4
    assert counts[("POST", "/v1/cluster/predict", "404")] == 1
    assert counts[("GET", "/v1/jobs/{job_id}", "404")] == 2
    assert counts[("GET", "/v1/jobs", "200")] == 1
    assert counts[("GET", "unmatched", "404")] == 1
    assert ("POST", "/v1/cluster/predict", "200") not in counts
    assert _latency_count(client, "POST", "/v1/cluster/predict") == 5  # timed once each, whatever the status
