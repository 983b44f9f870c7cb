"""Predict requests by deployment name, for every stateful family that serves by stage: over HTTP on the real app,
the deployment stages route sticky keys to the full or canary version, shadows run and are logged, a pinned
model_id answers as before, and a request that names no model (or two), or a name with nothing deployed, is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from quantcrew.data import load_sample, to_payload_dict
from quantcrew.ml_server.services.deployment import bucket
from quantcrew.ml_server.services.monitor.predictions import PredictionLog
from tests.ml_server.services.supervised.test_service import separable_data

_SP500 = to_payload_dict(load_sample("SP500").tail(200))
_ROWS = {"columns": ["a", "b", "c"], "values": np.random.default_rng(0).normal(size=(60, 3)).round(6).tolist()}
_SUPERVISED, _TARGET = separable_data(80)


@dataclass(frozen=True)
class Family:
    """How to fit a version of a family and ask it for a prediction."""

    name: str
    fit_path: str
    fit: Callable[[int], dict[str, Any]]  # the fit body of version ``i`` (each a different model)
    predict_path: str
    predict: dict[str, Any]  # the predict body, without model_id / name
    logged: bool = True  # whether the family's inferences go to the prediction log


FAMILIES = [
    Family("regime", "/v1/regime/fit", lambda i: {"data": _SP500, "n_states": 2, "n_restarts": 1, "seed": i},
           "/v1/regime/predict", {"data": _SP500, "include_probabilities": False}),
    Family("supervised", "/v1/supervised/fit",
           lambda i: {"features": _SUPERVISED, "target": _TARGET, "task": "classification", "n_estimators": 5 + i,
                      "seed": i},
           "/v1/supervised/predict", {"features": {"columns": ["x0", "x1"], "values": [[0.3, -0.2], [-1.5, 0.4]]}}),
    Family("cluster", "/v1/cluster/fit", lambda i: {"data": _ROWS, "n_clusters": 2 + i, "seed": i},
           "/v1/cluster/predict", {"data": _ROWS}),
    Family("decompose", "/v1/decompose/fit", lambda i: {"data": _ROWS, "n_components": 1 + i % 3},
           "/v1/decompose/transform", {"data": _ROWS}, logged=False),
    Family("anomaly", "/v1/anomaly/fit", lambda i: {"data": _SP500, "n_estimators": 20, "seed": i},
           "/v1/anomaly/score", {"data": _SP500}),
]


@pytest.fixture(params=FAMILIES, ids=[f.name for f in FAMILIES])
def family(request: pytest.FixtureRequest) -> Family:
    fam: Family = request.param
    return fam


def _fit(client: TestClient, fam: Family, name: str, i: int) -> str:
    resp = client.post(fam.fit_path, json={**fam.fit(i), "name": name})
    assert resp.status_code == 200, resp.text
    model_id: str = resp.json()["model_id"]
    return model_id


def _stage(client: TestClient, model_id: str, stage: str, **body: Any) -> None:
    resp = client.post(f"/v1/models/{model_id}/stage", json={"stage": stage, **body})
    assert resp.status_code == 200, resp.text


def _ask(client: TestClient, fam: Family, **pick: Any) -> dict[str, Any]:
    resp = client.post(fam.predict_path, json={**fam.predict, **pick})
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def _keys(name: str, share: float) -> tuple[str, str]:
    """A request key whose bucket falls below ``share`` (the candidate's) and one at or above it (the full's)."""
    keys = [f"client-{i}" for i in range(200)]
    below = next(k for k in keys if bucket(name, k) < share)
    above = next(k for k in keys if bucket(name, k) >= share)
    return below, above


def _log(client: TestClient) -> PredictionLog:
    log: PredictionLog = client.app.state.predictions  # type: ignore[attr-defined]
    assert log.flush()
    return log


def test_a_name_routes_each_key_to_the_full_or_canary_version_and_runs_the_shadow(client: TestClient,
                                                                                 family: Family) -> None:
    name = f"{family.name}-ab"
    full, canary, shadow = (_fit(client, family, name, i) for i in range(3))
    _stage(client, full, "full")
    _stage(client, canary, "canary", share=0.5)
    _stage(client, shadow, "shadow")
    to_canary, to_full = _keys(name, 0.5)

    for key, expected, variant in ((to_canary, canary, "canary"), (to_full, full, "full")):
        for _ in range(2):  # sticky: the same key, the same version
            reply = _ask(client, family, name=name, request_key=key)
            assert reply["model_id"] == expected
            served = reply["served_by"]
            assert (served["model_id"], served["name"], served["variant"]) == (expected, name, variant)
            assert served["bucket"] == pytest.approx(bucket(name, key))
            assert reply["model_version"] == served["version"]

    # the shadow ran on each of the four requests, never answered, and was logged as a shadow
    entries = client.get(f"/v1/ensemble/deployments/{shadow}/shadow").json()["entries"]
    assert len(entries) == 4
    assert {e["primary_model_id"] for e in entries} == {full, canary}
    assert {e["request_key"] for e in entries} == {to_canary, to_full}
    if family.logged:
        log = _log(client)
        assert [r.shadow for r in log.recent(shadow, 10)] == [True] * 4
        assert [r.shadow for r in log.recent(full, 10)] == [False] * 2
        assert [r.shadow for r in log.recent(canary, 10)] == [False] * 2


def test_the_request_key_defaults_to_the_symbol_else_the_name(client: TestClient) -> None:
    fam = FAMILIES[0]  # regime requests carry a symbol
    full, canary = _fit(client, fam, "keyed", 0), _fit(client, fam, "keyed", 1)
    _stage(client, full, "full")
    _stage(client, canary, "canary", share=0.5)
    to_canary, to_full = _keys("keyed", 0.5)
    assert _ask(client, fam, name="keyed", symbol=to_canary)["model_id"] == canary
    assert _ask(client, fam, name="keyed", symbol=to_full)["model_id"] == full
    by_name = _ask(client, fam, name="keyed")["served_by"]
    assert by_name["bucket"] == pytest.approx(bucket("keyed", "keyed"))


def test_a_pinned_model_id_answers_itself_whatever_the_stages(client: TestClient, family: Family) -> None:
    name = f"{family.name}-pin"
    full, other = _fit(client, family, name, 0), _fit(client, family, name, 1)
    _stage(client, full, "full")
    reply = _ask(client, family, model_id=other)
    assert reply["model_id"] == other and reply["served_by"] is None
    if family.logged:
        [record] = _log(client).recent(other, 10)
        assert record.shadow is False


@pytest.mark.parametrize("pick", [{}, {"model_id": "m-1", "name": "n"}], ids=["neither", "both"])
def test_naming_neither_or_both_of_model_id_and_name_is_a_422(client: TestClient, family: Family,
                                                              pick: dict[str, str]) -> None:
    resp = client.post(family.predict_path, json={**family.predict, **pick})
    assert resp.status_code == 422, resp.text
    message = resp.json()["error"]["message"]
    assert "model_id" in message and "name" in message


def test_a_name_with_no_deployed_version_is_a_404_naming_it(client: TestClient, family: Family) -> None:
    name = f"{family.name}-idle"
    stored = _fit(client, family, name, 0)
    for stage in (None, "shadow", "retired"):  # stored, then only shadowed, then retired: nothing answers
        if stage is not None:
            _stage(client, stored, stage)
        resp = client.post(family.predict_path, json={**family.predict, "name": name})
        assert resp.status_code == 404, resp.text
        assert name in resp.json()["error"]["message"]


def test_a_shadow_that_cannot_answer_never_fails_the_request(client: TestClient) -> None:
    fam = FAMILIES[1]  # supervised: a shadow fitted on other columns refuses these rows
    full = _fit(client, fam, "watched", 0)
    other = {"columns": ["y0", "y1"], "values": _SUPERVISED["values"]}
    resp = client.post(fam.fit_path, json={**fam.fit(1), "features": other, "name": "watched"})
    assert resp.status_code == 200, resp.text
    shadow = resp.json()["model_id"]
    _stage(client, full, "full")
    _stage(client, shadow, "shadow")
    reply = _ask(client, fam, name="watched")
    assert reply["model_id"] == full and reply["served_by"]["variant"] == "full"
    assert client.get(f"/v1/ensemble/deployments/{shadow}/shadow").json()["entries"] == []
    assert _log(client).recent(shadow, 10) == []
