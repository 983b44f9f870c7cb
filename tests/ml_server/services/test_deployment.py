"""Deployment stages: sticky buckets, canary shares, gradual ramps and promotion, retirement, shadow log, restart."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from quantcrew.ml_server.errors import ConflictError, InvalidInputError, NotFoundError
from quantcrew.ml_server.services.deployment import STAGES, Deployment, DeploymentStore, bucket

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
KEYS = [f"client-{i}" for i in range(10_000)]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DeploymentStore]:
    s = DeploymentStore(tmp_path / "registry.db")
    yield s
    s.close()


def _deploy(store: DeploymentStore, version: int, stage: str, **kwargs: Any) -> Deployment:
    return store.set(model_id=f"ens-v{version}", name="ens", version=version, stage=stage, now=T0, **kwargs)


def _to_candidate(store: DeploymentStore, keys: list[str], now: datetime) -> set[str]:
    return {k for k in keys if store.route("ens", k, now=now).variant != "full"}


def test_bucket_is_sticky_and_pinned() -> None:
    assert bucket("m", "k") == bucket("m", "k")
    # Pinned: a change of hashing would move every client to another version.
    assert bucket("m", "k") == pytest.approx(0.3087161468561538, abs=1e-15)
    assert bucket("m", "k") != bucket("other", "k")
    assert all(0.0 <= bucket("ens", k) < 1.0 for k in KEYS[:1000])


def test_bucket_is_uniform_over_keys() -> None:
    counts = [0] * 10
    for key in KEYS:
        counts[int(bucket("ens", key) * 10)] += 1
    assert all(850 <= c <= 1150 for c in counts), counts


def test_route_canary_takes_its_share_stickily(store: DeploymentStore) -> None:
    _deploy(store, 1, "full")
    _deploy(store, 2, "canary", share=0.2)
    routes = [store.route("ens", k, now=T0) for k in KEYS]
    canary = [r for r in routes if r.variant == "canary"]
    assert abs(len(canary) / len(KEYS) - 0.2) <= 0.02
    assert all(r.primary.model_id == "ens-v2" and r.bucket < 0.2 for r in canary)
    assert all(r.primary.model_id == "ens-v1" and r.bucket >= 0.2 for r in routes if r.variant == "full")
    again = [store.route("ens", k, now=T0 + timedelta(days=3)).primary.model_id for k in KEYS[:500]]
    assert again == [r.primary.model_id for r in routes[:500]]  # a canary's share does not move


def test_set_full_retires_previous_full(store: DeploymentStore) -> None:
    _deploy(store, 1, "full")
    later = T0 + timedelta(hours=1)
    v2 = store.set(model_id="ens-v2", name="ens", version=2, stage="full", now=later)
    v1 = store.get("ens-v1")
    assert v2.stage == "full" and v2.share == 1.0
    assert v1 is not None and v1.stage == "retired" and v1.share == 0.0 and v1.updated_at == later
    assert store.route("ens", "anyone").primary.model_id == "ens-v2"


def test_set_candidate_retires_other_candidate_and_keeps_full_and_shadows(store: DeploymentStore) -> None:
    _deploy(store, 1, "full")
    _deploy(store, 2, "canary", share=0.3)
    _deploy(store, 3, "shadow")
    _deploy(store, 4, "shadow")
    _deploy(store, 5, "gradual", share=0.2, ramp_seconds=600)
    stages = {d.model_id: d.stage for d in store.list("ens")}
    assert stages == {"ens-v1": "full", "ens-v2": "retired", "ens-v3": "shadow", "ens-v4": "shadow",
                      "ens-v5": "gradual"}
    route = store.route("ens", "k", now=T0)
    assert {d.model_id for d in route.shadows} == {"ens-v3", "ens-v4"}
    assert route.primary.model_id in {"ens-v1", "ens-v5"}


def test_set_other_name_is_untouched(store: DeploymentStore) -> None:
    _deploy(store, 1, "full")
    store.set(model_id="exec-v1", name="exec", version=1, stage="full", now=T0)
    store.set(model_id="exec-v2", name="exec", version=2, stage="full", now=T0)
    assert store.get("ens-v1") is not None and store.get("ens-v1").stage == "full"  # type: ignore[union-attr]
    assert [d.model_id for d in store.list("exec")] == ["exec-v2", "exec-v1"]
    assert [d.model_id for d in store.list()][-1] == "ens-v1"  # newest first


def test_route_gradual_ramps_with_time_and_promotes(store: DeploymentStore) -> None:
    _deploy(store, 1, "full")
    v2 = _deploy(store, 2, "gradual", share=0.0, ramp_seconds=100)
    assert v2.current_share(T0) == 0.0
    assert v2.current_share(T0 + timedelta(seconds=25)) == pytest.approx(0.25)
    assert v2.current_share(T0 - timedelta(seconds=5)) == 0.0
    keys = KEYS[:2000]
    assert _to_candidate(store, keys, T0) == set()
    quarter = _to_candidate(store, keys, T0 + timedelta(seconds=25))
    half = _to_candidate(store, keys, T0 + timedelta(seconds=50))
    assert abs(len(quarter) / len(keys) - 0.25) <= 0.04 and abs(len(half) / len(keys) - 0.5) <= 0.04
    assert quarter < half  # keys only move toward the candidate as the share grows
    assert store.get("ens-v2").stage == "gradual"  # type: ignore[union-attr]
    done = T0 + timedelta(seconds=100)
    route = store.route("ens", keys[0], now=done)
    assert route.variant == "full" and route.primary.model_id == "ens-v2"
    promoted, old = store.get("ens-v2"), store.get("ens-v1")
    assert promoted is not None and promoted.stage == "full" and promoted.share == 1.0 and promoted.started_at == done
    assert old is not None and old.stage == "retired"


def test_a_ramp_finished_in_two_processes_is_promoted_once(store: DeploymentStore, tmp_path: Path) -> None:
    # replicas on a shared home: each routes, and both may see the ramp end before either has promoted it
    other = DeploymentStore(tmp_path / "registry.db")
    try:
        _deploy(store, 1, "full")
        _deploy(store, 2, "gradual", share=0.0, ramp_seconds=100)
        done = T0 + timedelta(seconds=100)
        assert store.route("ens", "k", now=done).primary.model_id == "ens-v2"
        # the other replica's promotion, decided on what it read before the first one committed
        again = other.set(model_id="ens-v2", name="ens", version=2, stage="full", now=done + timedelta(seconds=1),
                          action="auto", reason="gradual rollout reached 100%")
        assert again.stage == "full" and again.started_at == done  # the first promotion stands, unchanged
        autos = [e for e in other.events(name="ens") if e.action == "auto"]
        assert [(e.model_id, e.from_stage, e.to_stage) for e in autos] == [("ens-v2", "gradual", "full")]
        assert other.route("ens", "k", now=done).primary.model_id == "ens-v2"
    finally:
        other.close()


def test_set_gradual_defaults_share_and_restarts_ramp(store: DeploymentStore) -> None:
    v2 = _deploy(store, 2, "gradual", ramp_seconds=60)
    assert (v2.share, v2.ramp_seconds, v2.started_at) == (0.1, 60.0, T0)
    later = T0 + timedelta(seconds=30)
    again = store.set(model_id="ens-v2", name="ens", version=2, stage="gradual", share=0.5, ramp_seconds=60,
                      now=later)
    assert again.started_at == later and again.current_share(later) == 0.5


def test_set_canary_again_keeps_started_at(store: DeploymentStore) -> None:
    _deploy(store, 2, "canary", share=0.1)
    naive_later = datetime(2024, 3, 1, 13, 0)  # naive: taken as UTC
    again = store.set(model_id="ens-v2", name="ens", version=2, stage="canary", share=0.3, now=naive_later)
    assert again.share == 0.3 and again.started_at == T0
    assert again.updated_at == datetime(2024, 3, 1, 13, 0, tzinfo=UTC)


def test_route_candidate_without_full_answers_everyone(store: DeploymentStore) -> None:
    _deploy(store, 2, "canary", share=0.05)
    assert {store.route("ens", k, now=T0).primary.model_id for k in KEYS[:200]} == {"ens-v2"}


@pytest.mark.parametrize("stage", [None, "shadow", "retired"])
def test_route_with_nothing_answering_raises_not_found(store: DeploymentStore, stage: str | None) -> None:
    if stage is not None:
        _deploy(store, 1, stage)
    with pytest.raises(NotFoundError, match="no deployed version of 'ens'") as info:
        store.route("ens", "k")
    assert info.value.status_code == 404


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"stage": "live"}, "stage"),
    ({"stage": "canary"}, "share"),
    ({"stage": "canary", "share": 0.0}, "share"),
    ({"stage": "canary", "share": 1.0}, "share"),
    ({"stage": "canary", "share": float("nan")}, "share"),
    ({"stage": "canary", "share": 0.2, "ramp_seconds": 10}, "ramp_seconds"),
    ({"stage": "gradual", "share": 0.1}, "ramp_seconds"),
    ({"stage": "gradual", "share": 0.1, "ramp_seconds": 0}, "ramp_seconds"),
    ({"stage": "gradual", "share": 1.0, "ramp_seconds": 10}, "share"),
    ({"stage": "gradual", "share": -0.1, "ramp_seconds": 10}, "share"),
    ({"stage": "full", "share": 1.0}, "share"),
    ({"stage": "shadow", "ramp_seconds": 5}, "ramp_seconds"),
    ({"stage": "full", "version": 0}, "version"),
    ({"stage": "full", "name": " "}, "name"),
])
def test_set_invalid_input_names_the_field(store: DeploymentStore, kwargs: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {"model_id": "ens-v1", "name": "ens", "version": 1}
    args.update(kwargs)
    with pytest.raises(InvalidInputError) as info:
        store.set(**args)
    assert info.value.status_code == 422
    assert field in info.value.message and info.value.details[0]["loc"] == [field]
    assert store.list() == []  # nothing written


def test_set_unknown_stage_lists_valid_stages(store: DeploymentStore) -> None:
    with pytest.raises(InvalidInputError) as info:
        store.set(model_id="x", name="ens", version=1, stage="prod")
    assert all(stage in info.value.message for stage in STAGES)


def test_set_model_id_under_another_name_conflicts(store: DeploymentStore) -> None:
    _deploy(store, 1, "full")
    with pytest.raises(ConflictError, match="deployed as 'ens' version 1"):
        store.set(model_id="ens-v1", name="other", version=1, stage="full")
    assert store.get("ens-v1").stage == "full"  # type: ignore[union-attr]


def test_shadow_log_round_trip_newest_first(store: DeploymentStore) -> None:
    for i in range(5):
        store.log_shadow(model_id="ens-v3", primary_model_id="ens-v1", request_key=f"k{i}",
                         output={"signal": i * 0.5, "regime": "bull", "probs": [0.25, 0.75]},
                         at=T0 + timedelta(seconds=i))
    store.log_shadow(model_id="ens-v4", primary_model_id="ens-v1", request_key="k0", output={"signal": 9.0}, at=T0)
    entries = store.shadow_log("ens-v3", limit=3)
    assert [e["request_key"] for e in entries] == ["k4", "k3", "k2"]
    assert entries[0] == {"model_id": "ens-v3", "primary_model_id": "ens-v1", "request_key": "k4",
                          "output": {"signal": 2.0, "regime": "bull", "probs": [0.25, 0.75]},
                          "at": T0 + timedelta(seconds=4)}
    assert len(store.shadow_log("ens-v3")) == 5 and len(store.shadow_log("ens-v4")) == 1
    assert store.shadow_log("nobody") == []


@pytest.mark.parametrize("output", [{"x": float("nan")}, {"x": object()}])
def test_log_shadow_refuses_output_that_is_not_json(store: DeploymentStore, output: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError, match="output"):
        store.log_shadow(model_id="a", primary_model_id="b", request_key="k", output=output)


def test_shadow_log_refuses_bad_limit(store: DeploymentStore) -> None:
    with pytest.raises(InvalidInputError, match="limit"):
        store.shadow_log("a", limit=0)


def test_restart_sees_the_same_state(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    first = DeploymentStore(path)
    first.set(model_id="ens-v1", name="ens", version=1, stage="full", now=T0)
    first.set(model_id="ens-v2", name="ens", version=2, stage="canary", share=0.2, now=T0)
    first.log_shadow(model_id="ens-v2", primary_model_id="ens-v1", request_key="k", output={"a": 1}, at=T0)
    before = [first.route("ens", k, now=T0).primary.model_id for k in KEYS[:300]]
    listed = first.list()
    first.close()
    second = DeploymentStore(path)
    try:
        assert second.list() == listed
        assert [second.route("ens", k, now=T0).primary.model_id for k in KEYS[:300]] == before
        assert second.shadow_log("ens-v2")[0]["output"] == {"a": 1}
    finally:
        second.close()


# -- deployment events -----------------------------------------------------------------------------


def test_every_set_records_its_step_and_the_versions_it_retires(store: DeploymentStore) -> None:
    _deploy(store, 1, "full")
    _deploy(store, 2, "full", action="promote", reason="better", actor="alice", gate={"passed": True})
    first, retire, second = store.events(name="ens")  # the version retired is recorded first
    assert (first.model_id, first.from_stage, first.to_stage, first.action) == ("ens-v1", None, "full", "stage")
    assert (second.model_id, second.to_stage, second.action, second.actor, second.gate) == (
        "ens-v2", "full", "promote", "alice", {"passed": True})
    assert (retire.model_id, retire.from_stage, retire.to_stage, retire.action) == ("ens-v1", "full", "retired",
                                                                                    "replaced")
    assert retire.reason == "replaced by ens-v2 (version 2): better"
    assert [e.model_id for e in store.events(model_id="ens-v1")] == ["ens-v1", "ens-v1"]


def test_previous_champions_are_newest_first_and_skip_the_ones_rolled_back_from(store: DeploymentStore) -> None:
    for version in (1, 2, 3):
        _deploy(store, version, "full")
    assert store.previous_champions("ens") == ["ens-v2", "ens-v1"]
    _deploy(store, 2, "full", action="rollback")  # v3 rolled back from: never a target again
    assert store.previous_champions("ens") == ["ens-v1"]
    assert store.champion("ens") is not None and store.champion("ens").model_id == "ens-v2"  # type: ignore[union-attr]
    assert not store.forget("ens-v2")  # deployed: kept
    assert store.forget("ens-v3") and store.get("ens-v3") is None


def test_a_route_read_again_runs_no_statement_until_a_write(store: DeploymentStore) -> None:
    _deploy(store, 1, "full")
    store.route("ens", "SPY")
    statements: list[str] = []
    store._db.conn.set_trace_callback(statements.append)
    assert store.route("ens", "SPY").primary.version == 1
    assert statements == []
    _deploy(store, 2, "full")
    statements.clear()
    assert store.route("ens", "SPY").primary.version == 2
    assert any("FROM deployments" in s for s in statements)


def test_a_version_deployed_by_another_process_is_routed_to_at_the_next_request(tmp_path: Path) -> None:
    here, there = DeploymentStore(tmp_path / "registry.db"), DeploymentStore(tmp_path / "registry.db")
    try:
        _deploy(here, 1, "full")
        assert here.route("ens", "SPY").primary.version == 1  # read and kept
        _deploy(there, 2, "full")
        assert here.route("ens", "SPY").primary.version == 2
        there.set(model_id="ens-v2", name="ens", version=2, stage="shadow", now=T0)  # v1 retired: nothing full
        with pytest.raises(NotFoundError):
            here.route("ens", "SPY")
    finally:
        here.close()
        there.close()


def test_peek_answers_as_route_once_the_names_versions_are_kept(store: DeploymentStore) -> None:
    _deploy(store, 1, "full")
    _deploy(store, 2, "canary", share=0.5)
    assert store.peek("ens", "SPY", now=T0) is None  # never read: route() would run a statement
    store.route("ens", "SPY", now=T0)
    statements: list[str] = []
    store._db.conn.set_trace_callback(statements.append)
    for key in KEYS[:200]:
        peeked = store.peek("ens", key, now=T0)
        assert peeked is not None
        assert peeked == store.route("ens", key, now=T0)
    assert statements == []
    assert store.peek("nothing", "SPY") is None


def test_peek_declines_after_a_write_a_shadow_or_a_due_promotion(store: DeploymentStore) -> None:
    _deploy(store, 1, "full")
    store.route("ens", "SPY", now=T0)
    _deploy(store, 2, "gradual", share=0.0, ramp_seconds=100)
    assert store.peek("ens", "SPY", now=T0) is None  # written since it was read
    store.route("ens", "SPY", now=T0)
    assert store.peek("ens", "SPY", now=T0) is not None
    done = T0 + timedelta(seconds=100)
    assert store.peek("ens", "SPY", now=done) is None  # route() would promote v2: a write
    assert store.route("ens", "SPY", now=done).primary.model_id == "ens-v2"
    _deploy(store, 3, "shadow")
    store.route("ens", "SPY", now=done)
    assert store.peek("ens", "SPY", now=done) is None  # a shadow's answer is written to the shadow log


def test_peek_declines_a_name_with_nothing_answering(store: DeploymentStore) -> None:
    _deploy(store, 1, "shadow")
    with pytest.raises(NotFoundError):
        store.route("ens", "SPY")
    assert store.peek("ens", "SPY") is None  # route() raises the 404 on the request's own path
