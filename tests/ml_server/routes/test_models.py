"""/v1/models: lineage of real fits, stages of any stateful family, promote, rollback, retention, compare."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from quantcrew import __version__
from quantcrew.config.settings import load_settings
from quantcrew.ml_server.app import create_app
from quantcrew.ml_server.schemas.common import ModelInfo
from quantcrew.ml_server.schemas.lineage import (
    CleanupResponse,
    CompareResponse,
    DeploymentEvent,
    LineageResponse,
    RollbackResponse,
    StageChange,
)
from tests.ml_server.services.supervised.test_service import linear_data
from tests.support.replies import invalid_input

SMALL = {"n_estimators": 10, "max_depth": 4}


def _fit_supervised(client: TestClient, name: str = "sup", *, seed: int = 0, scramble: bool = False,
                    **extra: Any) -> ModelInfo:
    features, y = linear_data(120, seed=seed)
    if scramble:  # a model of noise: clearly worse than one of the signal
        y = np.random.default_rng(seed + 100).permutation(y).tolist()
    resp = client.post("/v1/supervised/fit", json={"features": features, "target": y, "task": "regression",
                                                   "method": "random_forest", "name": name, **SMALL, **extra})
    assert resp.status_code == 200, resp.text
    return ModelInfo.model_validate(resp.json()["model"])


def _stage(client: TestClient, model_id: str, stage: str, **body: Any) -> StageChange:
    resp = client.post(f"/v1/models/{model_id}/stage", json={"stage": stage, **body})
    assert resp.status_code == 200, resp.text
    return StageChange.model_validate(resp.json())


def _promote(client: TestClient, name: str, **body: Any) -> StageChange:
    resp = client.post(f"/v1/models/{name}/promote", json=body)
    assert resp.status_code == 200, resp.text
    return StageChange.model_validate(resp.json())


def _stages(client: TestClient, name: str) -> dict[str, str]:
    return {d["model_id"]: d["stage"] for d in client.get("/v1/ensemble/deployments", params={"name": name})
            .json()["deployments"]}


# -- lineage ---------------------------------------------------------------------------------------


def test_real_fits_of_several_families_record_their_lineage(client: TestClient,
                                                             sp500_payload: dict[str, Any]) -> None:
    sup = _fit_supervised(client, trigger="schedule")
    features, _ = linear_data(120)
    assert sup.lineage.trigger == "schedule" and sup.lineage.code_version == __version__
    assert (sup.lineage.data_start, sup.lineage.data_end) == (
        f"{features['timestamps'][0]}T00:00:00", f"{features['timestamps'][-1]}T00:00:00")
    assert sup.lineage.data_hash == sup.metadata["data_hash"]
    assert sup.lineage.libraries == {"numpy": version("numpy"), "scikit-learn": version("scikit-learn")}
    regime = client.post("/v1/regime/fit", json={"data": sp500_payload, "n_states": 2, "name": "spx-regime",
                                                 "trigger": "drift"})
    assert regime.status_code == 200, regime.text
    reg = ModelInfo.model_validate(regime.json()["model"])
    assert reg.lineage.trigger == "drift" and "hmmlearn" in reg.lineage.libraries
    assert reg.lineage.data_start == sp500_payload["timestamps"][0][:10]
    assert reg.lineage.data_end == sp500_payload["timestamps"][-1][:10]
    anomaly = client.post("/v1/anomaly/fit", json={"data": sp500_payload, "name": "spx-anomaly"})
    assert anomaly.status_code == 200, anomaly.text
    ano = ModelInfo.model_validate(anomaly.json()["model"])
    assert ano.lineage.trigger == "manual" and ano.lineage.data_hash == anomaly.json()["data_hash"]
    assert client.get(f"/v1/models/{ano.model_id}").json()["lineage"] == ano.lineage.model_dump(mode="json")


def test_lineage_walks_the_parent_chain_with_each_versions_deployment_history(client: TestClient) -> None:
    v1 = _fit_supervised(client, "chain")
    _stage(client, v1.model_id, "full", reason="first champion", actor="alice")
    v2 = _fit_supervised(client, "chain", seed=1, trigger="quality")
    assert (v2.lineage.parent_model_id, v2.lineage.parent_version) == (v1.model_id, 1)
    v3 = _fit_supervised(client, "chain", seed=2)
    assert v3.lineage.parent_model_id == v1.model_id  # the full deployment, not the version before
    resp = client.get(f"/v1/models/{v2.model_id}/lineage")
    assert resp.status_code == 200, resp.text
    chain = LineageResponse.model_validate(resp.json()).chain
    assert [n.model_id for n in chain] == [v2.model_id, v1.model_id]
    assert chain[0].model is not None and chain[0].model.lineage.trigger == "quality"
    assert chain[0].deployment is None and chain[0].events == []
    assert chain[1].deployment is not None and chain[1].deployment.stage == "full"
    [event] = chain[1].events
    assert (event.action, event.from_stage, event.to_stage, event.reason, event.actor) == (
        "stage", None, "full", "first champion", "alice")


# -- stages, promotion, rollback -------------------------------------------------------------------


def test_promote_moves_the_candidate_shadow_canary_full_one_step_per_call(client: TestClient) -> None:
    v1, v2 = _fit_supervised(client, "promo"), _fit_supervised(client, "promo", seed=1)
    _stage(client, v1.model_id, "full")
    _stage(client, v2.model_id, "shadow")
    canary = _promote(client, "promo", reason="shadow looked fine")
    assert canary.deployment.model_id == v2.model_id and canary.deployment.stage == "canary"
    assert canary.deployment.share == pytest.approx(0.1)
    [step] = canary.events
    assert (step.action, step.from_stage, step.to_stage, step.reason) == ("promote", "shadow", "canary",
                                                                          "shadow looked fine")
    gate = {"gate": "challenger", "passed": True, "checks": [], "interval": None, "p_value": 0.01,
            "span_start": None, "span_end": None, "n": 40, "summary": "passed: better"}
    full = _promote(client, "promo", gate=gate)
    assert full.deployment.stage == "full" and _stages(client, "promo") == {v2.model_id: "full",
                                                                              v1.model_id: "retired"}
    by_model = {e.model_id: e for e in full.events}
    recorded = by_model[v2.model_id].gate
    assert recorded is not None and recorded["p_value"] == 0.01
    assert by_model[v1.model_id].action == "replaced" and by_model[v1.model_id].to_stage == "retired"
    again = client.post("/v1/models/promo/promote", json={})
    assert again.status_code == 409 and "nothing to promote" in again.json()["error"]["message"]


def test_a_failed_gate_is_refused_unless_forced_and_a_named_stage_must_come_later(client: TestClient) -> None:
    v1 = _fit_supervised(client, "gated")
    _stage(client, v1.model_id, "shadow")
    failed = {"gate": "challenger", "passed": False, "checks": [], "interval": None, "p_value": 0.6,
              "span_start": None, "span_end": None, "n": 40, "summary": "failed: mean loss 2.0 >= champion 1.0"}
    refused = client.post("/v1/models/gated/promote", json={"gate": failed})
    assert refused.status_code == 409 and "mean loss 2.0" in refused.json()["error"]["message"]
    assert _stages(client, "gated") == {v1.model_id: "shadow"}
    forced = _promote(client, "gated", gate=failed, force=True, to_stage="full")
    assert forced.deployment.stage == "full"
    wrong = client.post(f"/v1/models/{v1.model_id}/stage", json={"stage": "canary"})
    assert wrong.status_code == 422 and "share" in wrong.text


def test_rollback_restores_the_previous_champion_and_never_goes_back_to_the_one_it_left(
        client: TestClient) -> None:
    v1, v2 = _fit_supervised(client, "rb"), _fit_supervised(client, "rb", seed=1)
    _stage(client, v1.model_id, "full")
    _stage(client, v2.model_id, "shadow")
    _promote(client, "rb", to_stage="full")
    resp = client.post("/v1/models/rb/rollback", json={"reason": "live hit rate fell", "actor": "scheduler"})
    assert resp.status_code == 200, resp.text
    done = RollbackResponse.model_validate(resp.json())
    assert done.model_id == v1.model_id and done.restored.stage == "full"
    assert done.retired is not None and (done.retired.model_id, done.retired.stage) == (v2.model_id, "retired")
    assert {(e.model_id, e.action, e.to_stage) for e in done.events} == {
        (v1.model_id, "rollback", "full"), (v2.model_id, "rollback", "retired")}
    events = [DeploymentEvent.model_validate(e) for e in client.get("/v1/models/events", params={"name": "rb"})
              .json()]
    assert events[-1].reason is not None and "live hit rate fell" in events[-1].reason
    [alert] = [a for a in client.get("/v1/monitor/alerts").json()["alerts"] if a["rule"] == "model_rolled_back"]
    assert alert["labels"] == {"name": "rb"} and alert["severity"] == "warning"
    assert v2.model_id in alert["message"] and v1.model_id in alert["message"] and "live hit rate" in alert["message"]
    again = client.post("/v1/models/rb/rollback", json={})
    assert again.status_code == 409 and "no previous champion" in again.json()["error"]["message"]


def test_unknown_ids_and_names_are_404s_naming_them(client: TestClient) -> None:
    for resp, what in ((client.post("/v1/models/nope-123/stage", json={"stage": "full"}), "nope-123"),
                       (client.get("/v1/models/nope-123/lineage"), "nope-123"),
                       (client.post("/v1/models/nobody/promote", json={}), "nobody"),
                       (client.post("/v1/models/nobody/rollback", json={}), "nobody"),
                       (client.post("/v1/models/cleanup", json={"name": "nobody"}), "nobody")):
        assert resp.status_code == 404, resp.text
        assert what in resp.json()["error"]["message"]
    v1 = _fit_supervised(client, "lonely")
    no_champion = client.post("/v1/models/lonely/rollback", json={})
    assert no_champion.status_code == 409
    assert client.post("/v1/models/lonely/promote", json={}).status_code == 409
    assert client.post(f"/v1/models/{v1.model_id}/stage", json={"stage": "best"}).status_code == 422


# -- retention -------------------------------------------------------------------------------------


@pytest.fixture
def keep_two(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("QUANTCREW_MONITOR__KEEP_VERSIONS", "2")
    with TestClient(create_app(load_settings(home=tmp_path / "home"))) as tc:
        yield tc


def test_old_versions_are_deleted_after_each_save_but_deployed_ones_and_the_rollback_target_survive(
        keep_two: TestClient) -> None:
    client = keep_two
    v1, v2 = _fit_supervised(client, "ret"), _fit_supervised(client, "ret", seed=1)
    _stage(client, v1.model_id, "full")
    _stage(client, v2.model_id, "shadow")
    _promote(client, "ret", to_stage="full")  # v1 retired: the rollback target now
    v3 = _fit_supervised(client, "ret", seed=2)
    v4 = _fit_supervised(client, "ret", seed=3)
    v5 = _fit_supervised(client, "ret", seed=4)
    ids = {m["model_id"] for m in client.get("/v1/models", params={"name": "ret"}).json()}
    # newest two (v4, v5), the full one (v2) and the rollback target (v1); v3 is gone with its artifact
    assert ids == {v1.model_id, v2.model_id, v4.model_id, v5.model_id}
    assert client.get(f"/v1/models/{v3.model_id}").status_code == 404
    dry = CleanupResponse.model_validate(client.post("/v1/models/cleanup", json={"dry_run": True}).json())
    assert dry.deleted == [] and dry.keep_versions == 2
    assert {k.model_id: k.reason.split(" ")[0] for k in dry.kept} == {v2.model_id: "deployed",
                                                                       v1.model_id: "previous"}
    _stage(client, v4.model_id, "full")  # v2 is now the rollback target, v1 nothing
    planned = CleanupResponse.model_validate(client.post("/v1/models/cleanup", json={"dry_run": True}).json())
    assert [d.model_id for d in planned.deleted] == [v1.model_id]
    assert client.get(f"/v1/models/{v1.model_id}").status_code == 200  # a dry run deletes nothing
    done = CleanupResponse.model_validate(client.post("/v1/models/cleanup", json={}).json())
    assert [d.model_id for d in done.deleted] == [v1.model_id]
    assert client.get(f"/v1/models/{v1.model_id}").status_code == 404
    lineage = LineageResponse.model_validate(client.get(f"/v1/models/{v2.model_id}/lineage").json())
    assert [(n.model_id, n.missing) for n in lineage.chain] == [(v2.model_id, False), (v1.model_id, True)]


# -- compare ---------------------------------------------------------------------------------------


def _holdout(n: int, seed: int = 50) -> tuple[dict[str, Any], list[float]]:
    features, y = linear_data(n, seed=seed)
    return features, y


def test_compare_promotes_a_clearly_better_supervised_challenger_and_rejects_a_worse_one(
        client: TestClient) -> None:
    good, bad = _fit_supervised(client, "cmp"), _fit_supervised(client, "cmp", seed=1, scramble=True)
    features, y = _holdout(80)
    body = {"features": features, "target": y, "min_samples": 30}
    better = client.post("/v1/models/compare", json={"champion_id": bad.model_id, "challenger_id": good.model_id,
                                                     **body})
    assert better.status_code == 200, better.text
    up = CompareResponse.model_validate(better.json())
    assert up.decision == "promote" and up.passed and up.n == 80 and up.loss == "squared error"
    assert up.challenger_mean_loss is not None and up.champion_mean_loss is not None
    assert up.challenger_mean_loss < up.champion_mean_loss and up.verdict.gate == "challenger"
    worse = CompareResponse.model_validate(client.post("/v1/models/compare", json={
        "champion_id": good.model_id, "challenger_id": bad.model_id, **body}).json())
    assert worse.decision == "reject" and not worse.passed and worse.reason.startswith("failed")
    few_features, few_y = _holdout(12)
    few = CompareResponse.model_validate(client.post("/v1/models/compare", json={
        "champion_id": bad.model_id, "challenger_id": good.model_id, "features": few_features, "target": few_y,
        "min_samples": 30}).json())
    assert few.decision == "insufficient" and not few.passed and few.n == 12


def test_compare_refuses_unknown_ids_mixed_families_and_missing_rows(client: TestClient,
                                                                     sp500_payload: dict[str, Any]) -> None:
    sup = _fit_supervised(client, "cmp2")
    features, y = _holdout(40)
    unknown = client.post("/v1/models/compare", json={"champion_id": "ghost-1", "challenger_id": sup.model_id,
                                                      "features": features, "target": y})
    assert unknown.status_code == 404 and "ghost-1" in unknown.text
    regime = client.post("/v1/regime/fit", json={"data": sp500_payload, "n_states": 2}).json()["model"]
    mixed = client.post("/v1/models/compare", json={"champion_id": regime["model_id"], "challenger_id": sup.model_id,
                                                    "features": features, "target": y})
    assert "challenger_id" in str(invalid_input(mixed))
    no_rows = client.post("/v1/models/compare", json={"champion_id": sup.model_id, "challenger_id": sup.model_id,
                                                      "data": sp500_payload})
    assert "features" in str(invalid_input(no_rows))
    ragged = client.post("/v1/models/compare", json={"champion_id": sup.model_id, "challenger_id": sup.model_id,
                                                     "features": features, "target": y[:-1]})
    assert ragged.status_code == 422


def test_compare_scores_two_ensembles_on_the_same_bars_from_score_from(client: TestClient,
                                                                        sp500_payload: dict[str, Any]) -> None:
    from tests.ml_server.routes.test_ensemble import _seed_ensemble

    registry = client.app.state.registry  # type: ignore[attr-defined]
    champion, challenger = _seed_ensemble(registry), _seed_ensemble(registry)
    start = sp500_payload["timestamps"][-61]
    resp = client.post("/v1/models/compare", json={"champion_id": champion, "challenger_id": challenger,
                                                   "data": sp500_payload, "score_from": start, "min_samples": 30})
    assert resp.status_code == 200, resp.text
    same = CompareResponse.model_validate(resp.json())
    # the last 61 bars scored but the very last (it has no next bar); identical models: never promoted
    assert same.family == "ensemble" and same.n == 60 and same.decision == "reject"
    assert same.champion_mean_loss == same.challenger_mean_loss
    assert same.verdict.span_start is not None and same.verdict.span_start.startswith(start[:10])
    few = client.post("/v1/models/compare", json={"champion_id": champion, "challenger_id": challenger,
                                                  "data": sp500_payload,
                                                  "score_from": sp500_payload["timestamps"][-11]})
    assert few.json()["decision"] == "insufficient" and few.json()["n"] == 10
