"""Bandit routes over HTTP: create, list, select, reward, state, simulate; errors; state across a restart."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from quantcrew.config.settings import Settings
from quantcrew.ml_server.app import create_app
from quantcrew.ml_server.schemas.bandit import (
    BanditDecision,
    BanditInfo,
    BanditList,
    BanditRewardResponse,
    BanditSimulateResponse,
    BanditState,
)
from tests.support.replies import assert_finite, invalid_input

_PAYS = {"conservative": 0.2, "aggressive": 0.3, "balanced": 0.9, "contrarian": 0.1}


def _create(client: TestClient, **body: Any) -> dict[str, Any]:
    resp = client.post("/v1/bandit", json={"name": "meta", **body})
    assert resp.status_code == 201, resp.text
    reply: dict[str, Any] = resp.json()
    return reply


def _step(client: TestClient, regime: str = "bull", bandit: str = "meta") -> dict[str, Any]:
    resp = client.post("/v1/bandit/select", json={"bandit": bandit, "regime": regime})
    assert resp.status_code == 200, resp.text
    decision: dict[str, Any] = resp.json()
    resp = client.post("/v1/bandit/reward", json={"decision_id": decision["decision_id"],
                                                  "reward": _PAYS[decision["arm"]]})
    assert resp.status_code == 200, resp.text
    return decision


def test_create_returns_201_with_defaults(client: TestClient) -> None:
    body = BanditInfo.model_validate(_create(client))
    assert body.policy == "thompson_beta" and body.seed == 0 and body.decisions == body.pulls == 0
    assert body.arms == ["conservative", "aggressive", "balanced", "contrarian"]
    assert body.regimes == ["bull", "bear", "sideways", "volatile"]
    assert body.params.reward_range == (0.0, 1.0) and body.params.discount == 0.998


def test_list_shows_bandits_with_counts(client: TestClient) -> None:
    _create(client, policy="ucb1")
    _create(client, name="second", arms=["x", "y"], regimes=["calm"])
    _step(client)
    body = BanditList.model_validate(client.get("/v1/bandit").json())
    assert [(b.name, b.decisions, b.pulls) for b in body.bandits] == [("meta", 1, 1), ("second", 0, 0)]


def test_select_reward_state_round_trip(client: TestClient) -> None:
    created = _create(client, policy="ucb1")
    for _ in range(30):
        _step(client)
    resp = client.post("/v1/bandit/select", json={"bandit": created["bandit_id"], "regime": "bull"})
    assert resp.status_code == 200, resp.text
    assert_finite(resp.json())
    decision = BanditDecision.model_validate(resp.json())
    assert decision.model_id == created["bandit_id"] and decision.method_used == "ucb1" and not decision.fallback
    assert decision.arm == "balanced" and decision.pulls == 30 and decision.pseudo_regret > 0.0
    assert decision.reason.startswith("balanced has the highest upper confidence bound")
    assert [a.arm for a in decision.explanation] == created["arms"]

    resp = client.post("/v1/bandit/reward", json={"decision_id": decision.decision_id, "reward": 0.9})
    assert resp.status_code == 200, resp.text
    reward = BanditRewardResponse.model_validate(resp.json())
    assert reward.pulls == 31 and reward.arm == "balanced" and reward.clipped is False

    resp = client.get("/v1/bandit/meta")
    assert resp.status_code == 200, resp.text
    assert_finite(resp.json())
    state = BanditState.model_validate(resp.json())
    assert state.bandit.name == "meta" and state.pulls == 31 and state.bandit.decisions == 31
    bull = state.regimes[0]
    assert bull.best_arm == "balanced" and bull.pending == 0
    assert bull.explanation[2].estimate == pytest.approx(0.9)


def test_reward_out_of_range_says_clipped(client: TestClient) -> None:
    _create(client, params={"reward_range": [-0.05, 0.05]})
    decision = client.post("/v1/bandit/select", json={"bandit": "meta", "regime": "bear"}).json()
    resp = client.post("/v1/bandit/reward", json={"decision_id": decision["decision_id"], "reward": -0.3})
    assert resp.status_code == 200 and resp.json()["clipped"] is True


def test_restart_sees_same_state(settings: Settings) -> None:
    with TestClient(create_app(settings)) as first:
        _create(first, policy="discounted_thompson")
        for _ in range(15):
            _step(first, regime="sideways")
        pending = first.post("/v1/bandit/select", json={"bandit": "meta", "regime": "sideways"}).json()
        before = first.get("/v1/bandit/meta").json()
    with TestClient(create_app(settings)) as second:
        after = second.get("/v1/bandit/meta").json()
        assert after == before
        resp = second.post("/v1/bandit/reward", json={"decision_id": pending["decision_id"], "reward": 1.0})
        assert resp.status_code == 200, resp.text
        assert resp.json()["pulls"] == 16


def test_simulate_reports_regret_checkpoints(client: TestClient) -> None:
    resp = client.post("/v1/bandit/simulate", json={"policy": "ucb1", "means": [0.5, 0.45, 0.4, 0.35, 0.3],
                                                    "rounds": 2000, "seed": 1, "checkpoints": 4})
    assert resp.status_code == 200, resp.text
    assert_finite(resp.json())
    body = BanditSimulateResponse.model_validate(resp.json())
    assert body.checkpoints == [500, 1000, 1500, 2000] and body.final_regret == body.cumulative_regret[-1]
    assert body.cumulative_regret == sorted(body.cumulative_regret) and body.final_regret > 0.0
    assert sum(body.pulls) == 2000 and body.best_arms == [0] and body.model_id is None and body.seed == 1
    again = client.post("/v1/bandit/simulate", json={"policy": "ucb1", "means": [0.5, 0.45, 0.4, 0.35, 0.3],
                                                     "rounds": 2000, "seed": 1, "checkpoints": 4}).json()
    assert again == resp.json()


def test_simulate_schedule_uses_dynamic_oracle(client: TestClient) -> None:
    schedule = [{"start": 0, "means": [0.8, 0.2]}, {"start": 500, "means": [0.2, 0.8]}]
    resp = client.post("/v1/bandit/simulate", json={"policy": "sliding_window_ucb", "schedule": schedule,
                                                    "rounds": 1000, "params": {"window": 100}})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["best_arms"] == [0, 1] and body["change_points"] == [0, 500] and body["pulls"][1] > 400


# ------------------------------------------------------------------ errors


def test_unknown_bandit_is_404(client: TestClient) -> None:
    resp = client.get("/v1/bandit/ghost")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"
    resp = client.post("/v1/bandit/select", json={"bandit": "ghost", "regime": "bull"})
    assert resp.status_code == 404 and "ghost" in resp.json()["error"]["message"]


def test_reward_unknown_decision_is_404(client: TestClient) -> None:
    resp = client.post("/v1/bandit/reward", json={"decision_id": "dec-nope", "reward": 1.0})
    assert resp.status_code == 404, resp.text
    error = resp.json()["error"]
    assert error["code"] == "not_found" and "dec-nope" in error["message"]


def test_double_reward_is_409(client: TestClient) -> None:
    _create(client)
    decision = _step(client)
    resp = client.post("/v1/bandit/reward", json={"decision_id": decision["decision_id"], "reward": 0.0})
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "conflict"
    assert "already rewarded" in resp.json()["error"]["message"]


def test_taken_name_is_409(client: TestClient) -> None:
    _create(client)
    resp = client.post("/v1/bandit", json={"name": "meta"})
    assert resp.status_code == 409 and "meta" in resp.json()["error"]["message"]


def test_unknown_policy_is_422_listing_valid_ones(client: TestClient) -> None:
    err = invalid_input(client.post("/v1/bandit", json={"name": "meta", "policy": "softmax"}))
    assert err["details"][0]["loc"] == ["body", "policy"]
    for name in ("ucb1", "thompson_beta", "thompson_gaussian", "exp3", "discounted_thompson", "sliding_window_ucb"):
        assert name in err["message"]


def test_unknown_regime_is_422_listing_regimes(client: TestClient) -> None:
    _create(client)
    err = invalid_input(client.post("/v1/bandit/select", json={"bandit": "meta", "regime": "crash"}))
    assert "crash" in err["message"] and "'bull', 'bear', 'sideways', 'volatile'" in err["message"]


@pytest.mark.parametrize(("body", "field"), [
    ({"params": {"reward_range": [1.0, 0.0]}}, "reward_range"),
    ({"params": {"discount": 1.5}}, "discount"),
    ({"params": {"window": 0}}, "window"),
    ({"params": {"gamma": 0}}, "gamma"),
    ({"params": {"temperature": 1.0}}, "temperature"),
    ({"arms": ["a", "a"]}, "arms"),
    ({"arms": ["solo"]}, "arms"),
    ({"arms": ["a", ""]}, "arms"),
    ({"regimes": []}, "regimes"),
    ({"name": "bad name!"}, "name"),
])
def test_bad_create_is_422_naming_field(client: TestClient, body: dict[str, Any], field: str) -> None:
    err = invalid_input(client.post("/v1/bandit", json={"name": "meta", **body}))
    assert field in err["message"]


def test_non_finite_reward_is_422(client: TestClient) -> None:
    _create(client)
    decision = client.post("/v1/bandit/select", json={"bandit": "meta", "regime": "bull"}).json()
    resp = client.post("/v1/bandit/reward", content=b'{"decision_id": "%s", "reward": NaN}'
                       % decision["decision_id"].encode(), headers={"content-type": "application/json"})
    assert "reward" in invalid_input(resp)["message"]


@pytest.mark.parametrize(("body", "fragment"), [
    ({"means": [0.5, 0.4], "schedule": [{"start": 0, "means": [0.5, 0.4]}]}, "exactly one of means or schedule"),
    ({}, "exactly one of means or schedule"),
    ({"means": [0.5, 1.4]}, "means: Value error, Bernoulli means must lie in [0, 1]"),
    ({"schedule": [{"start": 0, "means": [0.5, 0.4]}, {"start": 5, "means": [0.4, -0.1]}]}, "schedule[1].means"),
    ({"schedule": [{"start": 0, "means": [0.5, 0.4]}, {"start": 50, "means": [0.4, 0.5]}], "rounds": 50},
     "must be below rounds (50)"),
    ({"schedule": [{"start": 3, "means": [0.5, 0.4]}]}, "schedule[0].start must be 0"),
    ({"schedule": [{"start": 0, "means": [0.5, 0.4]}, {"start": 0, "means": [0.4, 0.5]}]}, "schedule[1].start"),
    ({"schedule": [{"start": 0, "means": [0.5, 0.4]}, {"start": 9, "means": [0.4]}]}, "schedule[1].means"),
    ({"means": [0.5, 0.4], "rounds": 200_000}, "rounds"),
    ({"means": [0.5, 0.4], "policy": "greedy"}, "policy"),
])
def test_bad_simulate_is_422_naming_field(client: TestClient, body: dict[str, Any], fragment: str) -> None:
    assert fragment in invalid_input(client.post("/v1/bandit/simulate", json=body))["message"]
