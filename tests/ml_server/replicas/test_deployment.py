"""The replica's header middleware, on the real app (no Ray cluster needed)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from quantcrew.config.settings import Settings
from quantcrew.ml_server.app import create_app

pytest.importorskip("ray.serve")

from quantcrew.ml_server.replicas.deployment import REPLICA_HEADER, ReplicaHeaderMiddleware  # noqa: E402


def test_every_answer_names_the_replica_refusals_included(settings: Settings) -> None:
    settings.server.api_key = SecretStr("k")
    app = create_app(settings)
    app.add_middleware(ReplicaHeaderMiddleware, replica="r-1")
    with TestClient(app) as client:
        ok = client.get("/health")
        refused = client.post("/v1/cluster/fit", json={})
        invalid = client.post("/v1/cluster/fit", json={"data": {}}, headers={"Authorization": "Bearer k"})
    assert (ok.status_code, refused.status_code, invalid.status_code) == (200, 401, 422)
    assert ok.headers[REPLICA_HEADER] == refused.headers[REPLICA_HEADER] == invalid.headers[REPLICA_HEADER] == "r-1"
    assert ok.json()["status"] == "ok"
