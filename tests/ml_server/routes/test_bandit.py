"""Bandit routes over HTTP: create, list, select, reward, state, reset, delete, simulate; errors; restarts."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest
from fastapi.testclient import TestClient

from quantcrew.config.settings import Settings
from quantcrew.data import generate_regime_market, to_payload_dict
from quantcrew.ml_server.app import create_app
from quantcrew.ml_server.schemas.bandit import (
    BanditDecision,
    BanditDeleted,
    BanditInfo,
    BanditList,
    BanditReplayResult,
    BanditRewardResponse,
    BanditSimulateResponse,
    BanditState,
)
from quantcrew.ml_server.schemas.jobs import JobInfo
from quantcrew.ml_server.schemas.rl import RLTrainResult
from tests.support.jobs import wait_job
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


# -- poisoning, reset and delete ----------------------------------------------------------------------


def _reward(client: TestClient, reward: float, regime: str = "bull") -> Any:
    decision = client.post("/v1/bandit/select", json={"bandit": "meta", "regime": regime})
    assert decision.status_code == 200, decision.text
    return client.post("/v1/bandit/reward", json={"decision_id": decision.json()["decision_id"], "reward": reward})


@pytest.mark.parametrize("policy", ["thompson_gaussian", "ucb1", "exp3"])
def test_huge_reward_is_422_naming_bound_and_later_selects_are_200(client: TestClient, policy: str) -> None:
    _create(client, policy=policy)
    for reward in (1e160, 1e308, -1e308, 1e6 * 1.5):
        err = invalid_input(_reward(client, reward))
        assert "1e+06" in err["message"] and "QUANTCREW_SERVER__MAX_ABS_REWARD" in err["message"]
        assert err["details"][0]["loc"][-1] == "reward" and "1e+06" in err["details"][0]["msg"]
    for reward in (1e6, -1e6, 1e6, 0.0):  # at the bound: accepted, and harmless
        resp = _reward(client, reward)
        assert resp.status_code == 200, resp.text
        assert_finite(resp.json())
    for _ in range(5):
        resp = client.post("/v1/bandit/select", json={"bandit": "meta", "regime": "bull"})
        assert resp.status_code == 200, resp.text
        assert_finite(resp.json())
    state = client.get("/v1/bandit/meta")
    assert state.status_code == 200 and state.json()["pulls"] == 4
    assert_finite(state.json())


def test_reward_bound_follows_the_setting(settings: Settings) -> None:
    settings.server.max_abs_reward = 10.0
    with TestClient(create_app(settings)) as client:
        _create(client)
        assert "+-10 " in invalid_input(_reward(client, 10.5))["message"]
        assert _reward(client, -10.0).status_code == 200


def test_delete_removes_bandit_then_404_and_survives_restart(settings: Settings) -> None:
    with TestClient(create_app(settings)) as first:
        created = _create(first)
        _step(first, regime="bull")
        _step(first, regime="bear")
        pending = first.post("/v1/bandit/select", json={"bandit": "meta", "regime": "bull"}).json()
        resp = first.delete("/v1/bandit/meta")
        assert resp.status_code == 200, resp.text
        body = BanditDeleted.model_validate(resp.json())
        assert (body.bandit_id, body.name, body.regimes, body.decisions) == (created["bandit_id"], "meta",
                                                                            ["bear", "bull"], 3)
        assert first.get("/v1/bandit/meta").status_code == 404
        assert first.delete("/v1/bandit/meta").status_code == 404
        late = first.post("/v1/bandit/reward", json={"decision_id": pending["decision_id"], "reward": 1.0})
        assert late.status_code == 404
    with TestClient(create_app(settings)) as second:
        assert second.get("/v1/bandit/meta").status_code == 404
        assert second.get("/v1/bandit").json()["bandits"] == []
        _create(second)  # the name is free again, and the new bandit starts from nothing
        assert second.get("/v1/bandit/meta").json()["pulls"] == 0


def test_reset_clears_every_regime_and_keeps_configuration(client: TestClient) -> None:
    created = _create(client, policy="ucb1", params={"c": 0.5})
    fresh = client.get("/v1/bandit/meta").json()
    for regime in ("bull", "bear"):
        for _ in range(3):
            _step(client, regime=regime)
    resp = client.post("/v1/bandit/meta/reset")  # no body: every regime
    assert resp.status_code == 200, resp.text
    body = BanditState.model_validate(resp.json())
    assert body.pulls == 0 and body.bandit.params.c == 0.5 and body.bandit.bandit_id == created["bandit_id"]
    assert all(r.pulls == r.decisions == r.pending == 0 and r.best_arm is None for r in body.regimes)
    # Each regime starts again from its seeded stream: the same choices as a never-used bandit.
    assert [e["estimate"] for r in resp.json()["regimes"] for e in r["explanation"]] == \
        [e["estimate"] for r in fresh["regimes"] for e in r["explanation"]]
    assert _step(client, regime="bull")["arm"] == "conservative"


def test_reset_one_regime_leaves_the_others(client: TestClient) -> None:
    _create(client)
    _step(client, regime="bull")
    _step(client, regime="bear")
    resp = client.post("/v1/bandit/meta/reset", json={"regime": "bear"})
    assert resp.status_code == 200, resp.text
    pulls = {r["regime"]: r["pulls"] for r in resp.json()["regimes"]}
    assert pulls == {"bull": 1, "bear": 0, "sideways": 0, "volatile": 0}
    assert "regimes" in invalid_input(client.post("/v1/bandit/meta/reset", json={"regime": "crash"}))["message"]
    assert client.post("/v1/bandit/nope/reset").status_code == 404


def _corrupt(settings: Settings, regime: str, field: str, value: float) -> None:
    with sqlite3.connect(settings.registry_db) as db:
        (text,) = db.execute("SELECT state FROM bandit_state WHERE regime = ?", (regime,)).fetchone()
        state = json.loads(text)
        state[field][0] = value
        # An older version wrote overflowed figures like this (json's Infinity / NaN tokens).
        db.execute("UPDATE bandit_state SET state = ?, version = version + 1 WHERE regime = ?",
                   (json.dumps(state), regime))


@pytest.mark.parametrize(("policy", "field", "value"), [
    ("thompson_gaussian", "m2", float("inf")),
    ("ucb1", "raw_sum", float("nan")),
    ("exp3", "logw", float("-inf")),
])
def test_corrupt_stored_state_is_409_not_500_until_reset(settings: Settings, policy: str, field: str,
                                                         value: float) -> None:
    with TestClient(create_app(settings)) as first:
        _create(first, policy=policy)
        _step(first, regime="bull")
        _step(first, regime="bear")
    _corrupt(settings, "bull", field, value)
    with TestClient(create_app(settings), raise_server_exceptions=False) as second:
        for resp in (second.post("/v1/bandit/select", json={"bandit": "meta", "regime": "bull"}),
                     second.get("/v1/bandit/meta")):
            assert resp.status_code == 409, resp.text
            message = resp.json()["error"]["message"]
            assert "'meta'" in message and "'bull'" in message and "reset" in message
        assert second.post("/v1/bandit/select", json={"bandit": "meta", "regime": "bear"}).status_code == 200
        assert second.post("/v1/bandit/meta/reset", json={"regime": "bull"}).status_code == 200
    with TestClient(create_app(settings)) as third:  # the reset was saved
        _step(third, regime="bull")
        assert third.get("/v1/bandit/meta").status_code == 200


def test_corrupt_state_is_409_for_the_server_that_cached_it(client: TestClient, settings: Settings) -> None:
    _create(client, policy="thompson_gaussian")
    _step(client, regime="bull")
    _corrupt(settings, "bull", "mean", float("inf"))  # as another process writing it would
    resp = client.post("/v1/bandit/select", json={"bandit": "meta", "regime": "bull"})
    assert resp.status_code == 409 and "reset" in resp.json()["error"]["message"]
    assert client.delete("/v1/bandit/meta").status_code == 200


def test_openapi_documents_reset_and_delete(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    delete, reset = paths["/v1/bandit/{bandit}"]["delete"], paths["/v1/bandit/{bandit}/reset"]["post"]
    assert delete["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/BanditDeleted")
    assert reset["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/BanditState")
    for op in (delete, reset):
        assert {"404", "409", "422"} <= set(op["responses"])
    assert "requestBody" in reset and not reset["requestBody"].get("required", False)


# -- deterministic selection and warm-start replay -------------------------------------------------


def test_exploit_select_gives_one_arm_and_leaves_the_state(client: TestClient) -> None:
    _create(client, policy="discounted_thompson")
    for _ in range(20):
        _step(client)
    before = client.get("/v1/bandit/meta").json()
    replies = [client.post("/v1/bandit/select", json={"bandit": "meta", "regime": "bull", "mode": "exploit"})
               for _ in range(5)]
    assert all(r.status_code == 200 for r in replies), replies[0].text
    decisions = [BanditDecision.model_validate(r.json()) for r in replies]
    assert len({d.arm for d in decisions}) == 1 and all(d.mode == "exploit" for d in decisions)
    assert "has the highest mean reward in the bull regime" in decisions[0].reason
    after = client.get("/v1/bandit/meta").json()
    assert after["data_hash"] == before["data_hash"] and after["pulls"] == before["pulls"]
    resp = client.post("/v1/bandit/select", json={"bandit": "meta", "regime": "bull", "mode": "greedy"})
    assert resp.status_code == 422 and "mode" in resp.text


def _wait(client: TestClient, job_id: str, timeout_s: float = 300.0) -> JobInfo:
    return wait_job(client, job_id, timeout_s)


def test_replay_warm_starts_a_bandit_once_then_409(client: TestClient) -> None:
    bars = to_payload_dict(generate_regime_market(450, seed=5).bars)
    train = client.post("/v1/rl/train", json={"data": bars, "agents": ["aggressive", "balanced"], "algorithm": "a2c",
                                              "timesteps": 256, "regime_features": False, "n_envs": 2,
                                              "seeds": 1, "grid": {"reward_scale": [1.0]}})
    assert train.status_code == 202, train.text
    trained = _wait(client, train.json()["job_id"])
    assert trained.status == "succeeded", trained.error
    ids = [p.model_id for p in RLTrainResult.model_validate(trained.result).policies]
    body = {"symbol": "SYN", "data": bars, "model_ids": ids, "create": {"arms": ["aggressive", "balanced"]}}

    resp = client.post("/v1/bandit/replay", json=body)
    assert resp.status_code == 202, resp.text
    job = _wait(client, resp.json()["job_id"])
    assert job.kind == "bandit_replay" and job.status == "succeeded", job.error
    assert_finite(job.result)
    result = BanditReplayResult.model_validate(job.result)
    assert result.bandit_name == "meta-orchestrator" and result.regime_model_id is None
    assert "every bar counted as 'sideways'" in result.regime_source
    assert {r.regime: r.bars for r in result.regimes} == {"bull": 0, "bear": 0, "sideways": result.bars,
                                                          "volatile": 0}
    assert result.regret == pytest.approx(max(result.agent_rewards.values()) - result.bandit_reward)
    state = BanditState.model_validate(client.get("/v1/bandit/meta-orchestrator").json())
    assert state.pulls == state.bandit.decisions == result.bars

    again = client.post("/v1/bandit/replay", json=body)
    assert again.status_code == 409, again.text
    error = again.json()["error"]
    assert error["code"] == "conflict" and "already replayed" in error["message"]
    assert BanditReplayResult.model_validate(error["details"]["result"]) == result
    assert client.get("/v1/bandit/meta-orchestrator").json()["pulls"] == result.bars

    unknown = client.post("/v1/bandit/replay", json={**body, "model_ids": [ids[0], "rl-000000000000"]})
    assert unknown.status_code == 404, unknown.text
    short = client.post("/v1/bandit/replay", json={**body, "model_ids": ids[:1]})
    assert invalid_input(short)["details"][0]["loc"] == ["body", "model_ids"]
    assert "/v1/bandit/replay" in client.get("/openapi.json").json()["paths"]
