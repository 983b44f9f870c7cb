"""POST /v1/regime/causal over HTTP: a job that labels every bar from fits on earlier bars, through both clients."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from quantcrew.config.settings import Settings
from quantcrew.data.loaders import to_payload_dict
from quantcrew.data.synthetic import generate_regime_market
from quantcrew.ml_server.app import create_app
from quantcrew.ml_server.schemas.jobs import JobInfo
from quantcrew.ml_server.schemas.regime import RegimeCausalRequest, RegimeCausalResult
from quantcrew.tools.client import AsyncMLClient, MLClient
from tests.support.jobs import wait_job

FAST = {"n_states": 2, "n_restarts": 1}


@pytest.fixture(scope="module")
def bars() -> dict[str, Any]:
    return to_payload_dict(generate_regime_market(300, seed=2).bars)


def _wait(client: TestClient, job_id: str, timeout_s: float = 120.0) -> JobInfo:
    return wait_job(client, job_id, timeout_s)


def test_causal_job_labels_every_bar_after_min_train(client: TestClient, bars: dict[str, Any]) -> None:
    body = {"data": bars, "symbol": "SYN", "min_train": 200, "refit_every": 50, "seed": 1, **FAST}
    resp = client.post("/v1/regime/causal", json=body)
    assert resp.status_code == 202, resp.text
    submitted = JobInfo.model_validate(resp.json())
    assert submitted.kind == "regime_causal"
    assert submitted.params["fits"] == 2 and submitted.params["symbol"] == "SYN"
    assert submitted.params["first_label"] == bars["timestamps"][200][:10]
    job = _wait(client, submitted.job_id)
    assert job.status == "succeeded", job.error
    assert job.progress.done == job.progress.total == 2
    result = RegimeCausalResult.model_validate(job.result)
    assert result.timestamps == [t[:10] for t in bars["timestamps"]]
    assert len(result.labels) == len(result.probabilities) == len(result.fit_of_bar) == 300
    assert result.labels[:200] == [None] * 200 and None not in result.labels[200:]
    assert all(0.0 < p <= 1.0 + 1e-9 for p in result.probabilities[200:] if p is not None)
    assert [(f.first_bar, f.bars_used, f.bars_labelled) for f in result.fits] == [(200, 200, 50), (250, 250, 50)]
    assert result.seed == 1 and result.min_train == 200 and result.refit_every == 50
    assert result.label_probabilities is None
    again = RegimeCausalResult.model_validate(
        _wait(client, client.post("/v1/regime/causal", json=body).json()["job_id"]).result)
    timeless = {"fits": {"__all__": {"seconds"}}}
    assert again.model_dump(exclude=timeless) == result.model_dump(exclude=timeless)  # deterministic for a seed


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"min_train": 300}, "min_train"),  # 300 bars: one short of min_train + 1
        ({"min_train": 5}, "min_train"),
        ({"refit_every": 0}, "refit_every"),
        ({"n_states": 1}, "n_states"),
        ({"features": ["volume"]}, "features"),
        ({"include_probabilities": "maybe"}, "include_probabilities"),
    ],
)
def test_bad_causal_requests_are_422_naming_the_field(client: TestClient, bars: dict[str, Any],
                                                       change: dict[str, Any], field: str) -> None:
    resp = client.post("/v1/regime/causal", json={"data": bars, **change})
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"] == "invalid_input"
    assert any(d["loc"][:2] == ["body", field] for d in error["details"]), error
    assert client.get("/v1/jobs").json()["jobs"] == []  # nothing was started


def test_the_client_starts_the_job_and_waits_for_its_result(client: TestClient, bars: dict[str, Any]) -> None:
    request = RegimeCausalRequest.model_validate({"data": bars, "min_train": 250, "refit_every": 63, **FAST})
    ml = MLClient(client)
    job = ml.regime_causal(request)
    assert job.kind == "regime_causal" and job.status in ("queued", "running", "succeeded")
    done = ml.wait_for_job(job.job_id, poll_s=0.05, timeout_s=120)
    assert done.status == "succeeded", done.error
    result = RegimeCausalResult.model_validate(done.result)
    assert [f.first_bar for f in result.fits] == [250] and result.counts == {
        label: result.labels.count(label) for label in ("bull", "bear", "sideways", "volatile")}


async def test_the_async_client_starts_the_job_and_waits_for_its_result(settings: Settings,
                                                                          bars: dict[str, Any]) -> None:
    request = RegimeCausalRequest.model_validate({"data": bars, "min_train": 280, "refit_every": 63, **FAST})
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ml.test") as http:
            ml = AsyncMLClient(http)
            job = await ml.regime_causal(request)
            done = await ml.wait_for_job(job.job_id, poll_s=0.05, timeout_s=120)
    assert done.status == "succeeded", done.error
    result = RegimeCausalResult.model_validate(done.result)
    assert result.labels[:280] == [None] * 280 and None not in result.labels[280:]


def test_a_running_causal_job_is_cancelled_before_its_next_fit(client: TestClient, bars: dict[str, Any]) -> None:
    body = {"data": bars, "min_train": 20, "refit_every": 1, **FAST}  # 280 fits: far longer than this test
    job_id = client.post("/v1/regime/causal", json=body).json()["job_id"]
    deadline = time.monotonic() + 60
    while JobInfo.model_validate(client.get(f"/v1/jobs/{job_id}").json()).progress.done < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 202
    job = _wait(client, job_id)
    assert job.status == "cancelled" and job.result is None
    assert job.progress.message is not None and "of 280 fits" in job.progress.message
    assert job.progress.done < 280
