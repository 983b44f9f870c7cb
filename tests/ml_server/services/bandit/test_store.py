"""Bandit store: records, decisions and rewards saved in SQLite, read back under one lock, across stores."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from quantcrew.ml_server.errors import ConflictError, NotFoundError
from quantcrew.ml_server.services.bandit.policies import make_policy
from quantcrew.ml_server.services.bandit.store import BanditRecord, BanditStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[BanditStore]:
    s = BanditStore(tmp_path / "registry.db")
    yield s
    s.close()


def _record(name: str = "meta", policy: str = "ucb1", bandit_id: str = "bandit-0000000000000001") -> BanditRecord:
    params = make_policy(policy, 2).params.to_dict()
    return BanditRecord(bandit_id=bandit_id, name=name, policy=policy, arms=("a", "b"), regimes=("calm", "storm"),
                        params=params, seed=1, created_at=datetime(2024, 1, 2, tzinfo=UTC))


def test_find_by_id_or_name_and_none_when_unknown(store: BanditStore) -> None:
    record = _record()
    store.create(record)
    assert store.find("meta") == store.find(record.bandit_id) == record
    assert store.find("ghost") is None


def test_find_reads_a_record_another_store_wrote(tmp_path: Path) -> None:
    first, second = BanditStore(tmp_path / "r.db"), BanditStore(tmp_path / "r.db")
    first.create(_record())
    assert second.find("meta") == _record()
    first.close()
    second.close()


def test_create_taken_name_is_conflict_naming_the_field(store: BanditStore) -> None:
    store.create(_record())
    with pytest.raises(ConflictError, match="exists already") as info:
        store.create(_record(bandit_id="bandit-0000000000000002"))
    assert info.value.details[0]["loc"] == ["name"]


def test_select_saves_the_decision_and_the_regime_state(store: BanditStore) -> None:
    record = _record()
    store.create(record)
    choice = store.select(record, "storm")
    assert choice.decision_id.startswith("dec-") and choice.arm in (0, 1) and choice.propensity is None
    assert choice.view.decisions == 1 and choice.view.pulls == 0 and choice.digest.startswith("sha256:")
    storm = store.snapshot(record)[1]
    assert storm.regime == "storm" and storm.pending == 1 and storm.updated_at is not None
    assert store.usage() == [(record, 1, 0)]


def test_learn_updates_the_decision_regime_once(store: BanditStore) -> None:
    record = _record()
    store.create(record)
    choice = store.select(record, "calm")
    learned = store.learn(choice.decision_id, 0.75)
    assert learned.record == record and learned.regime == "calm" and learned.arm == choice.arm
    assert learned.view.pulls == 1 and not learned.clipped and learned.view.last_reward_at == learned.rewarded_at
    with pytest.raises(ConflictError, match="already rewarded"):
        store.learn(choice.decision_id, 0.0)
    assert store.snapshot(record)[0].view.pulls == 1


def test_learn_unknown_decision_is_not_found(store: BanditStore) -> None:
    with pytest.raises(NotFoundError, match="no decision") as info:
        store.learn("dec-nope", 1.0)
    assert info.value.details[0]["loc"] == ["decision_id"]


def test_snapshot_of_an_unused_regime_writes_nothing(store: BanditStore) -> None:
    record = _record()
    store.create(record)
    snaps = store.snapshot(record)
    assert [s.regime for s in snaps] == ["calm", "storm"]
    assert all(s.view.decisions == 0 and s.updated_at is None and s.pending == 0 for s in snaps)
    assert store.usage() == [(record, 0, 0)]


def test_a_second_store_reloads_a_regime_the_first_changed(tmp_path: Path) -> None:
    a, b = BanditStore(tmp_path / "r.db"), BanditStore(tmp_path / "r.db")
    record = _record()
    a.create(record)
    a.learn(a.select(record, "calm").decision_id, 1.0)
    choice = b.select(record, "calm")
    assert choice.view.pulls == 1 and choice.view.decisions == 2
    b.learn(choice.decision_id, 0.5)
    assert a.select(record, "calm").view.pulls == 2
    a.close()
    b.close()


def test_reset_by_another_store_is_seen_by_one_that_cached_the_policy(tmp_path: Path) -> None:
    first, second = BanditStore(tmp_path / "r.db"), BanditStore(tmp_path / "r.db")
    record = _record()
    first.create(record)
    for _ in range(3):
        first.learn(first.select(record, "calm").decision_id, 1.0)
    second.reset(record, ("calm",))
    assert first.select(record, "calm").view.pulls == 0  # the version kept counting: reloaded, not stale
    first.close()
    second.close()


def test_delete_by_another_store_is_not_undone_by_one_that_cached_the_record(tmp_path: Path) -> None:
    first, second = BanditStore(tmp_path / "r.db"), BanditStore(tmp_path / "r.db")
    record = _record()
    first.create(record)
    first.select(record, "calm")
    assert second.delete(record) == (["calm"], 1)
    with pytest.raises(NotFoundError, match="deleted"):
        first.select(record, "storm")  # its first use would otherwise write a state for a deleted bandit
    assert first.find("meta") is None and second.usage() == []
    first.close()
    second.close()


def test_bandit_saved_with_params_no_longer_accepted_is_conflict_then_deletable(store: BanditStore) -> None:
    record = _record()
    record.params["reward_range"] = [-1e200, 1e200]  # an older version accepted it
    store.create(record)
    with pytest.raises(ConflictError, match="delete it"):
        store.select(record, "calm")
    with pytest.raises(ConflictError, match="delete it"):
        store.snapshot(record)
    assert store.delete(record) == ([], 0)


# -- replays and the store written by the previous version ----------------------------------------

# The tables exactly as the version before warm-start replays created them (no bandit_replays).
_PREVIOUS_SCHEMA = """
CREATE TABLE bandits (
    bandit_id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, policy TEXT NOT NULL, arms TEXT NOT NULL,
    regimes TEXT NOT NULL, params TEXT NOT NULL, seed INTEGER NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE bandit_state (
    bandit_id TEXT NOT NULL REFERENCES bandits(bandit_id), regime TEXT NOT NULL, state TEXT NOT NULL,
    rng_state TEXT NOT NULL, pulls INTEGER NOT NULL, decisions INTEGER NOT NULL, version INTEGER NOT NULL,
    updated_at TEXT NOT NULL, last_reward_at TEXT, PRIMARY KEY (bandit_id, regime));
CREATE TABLE bandit_decisions (
    decision_id TEXT PRIMARY KEY, bandit_id TEXT NOT NULL REFERENCES bandits(bandit_id), regime TEXT NOT NULL,
    arm INTEGER NOT NULL, propensity REAL, created_at TEXT NOT NULL, reward REAL, rewarded_at TEXT);
CREATE INDEX bandit_decisions_pending ON bandit_decisions (bandit_id, regime, reward);
"""


def _claim(store: BanditStore, record: BanditRecord, key: str = "k" * 64) -> object:
    return store.claim_replay(record, key, symbol="SP500", model_ids=("rl-b", "rl-a"), span_start="2019-01-02",
                              span_end="2019-06-28", bars=120)


def test_a_database_of_the_previous_version_opens_and_gains_the_replay_table(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    record = _record()
    db = sqlite3.connect(path)
    db.executescript(_PREVIOUS_SCHEMA)
    db.execute("INSERT INTO bandits VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
               (record.bandit_id, record.name, record.policy, json.dumps(record.arms), json.dumps(record.regimes),
                json.dumps(record.params), record.seed, record.created_at.isoformat()))
    db.execute("INSERT INTO bandit_decisions VALUES ('dec-old', ?, 'calm', 1, NULL, '2024-01-03', 0.5, '2024-01-04')",
               (record.bandit_id,))
    db.commit()
    db.close()
    store = BanditStore(path)
    assert store.find("meta") == record
    store.learn(store.select(record, "calm").decision_id, 1.0)  # the old bandit works as before
    assert _claim(store, record) is None
    replay = store.replay("k" * 64)
    assert replay is not None and replay.status == "running" and replay.model_ids == ("rl-a", "rl-b")
    store.close()
    tables = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "bandit_replays" in tables


def test_a_replay_key_is_claimed_once_and_its_outcome_kept(store: BanditStore) -> None:
    record = _record()
    store.create(record)
    assert _claim(store, record) is None
    store.attach_replay_job("k" * 64, "job-1")
    store.progress_replay("k" * 64, 7)
    earlier = _claim(store, record)
    assert earlier == store.replay("k" * 64) and store.replay("k" * 64).bars_done == 7  # type: ignore[union-attr]
    store.finish_replay("k" * 64, 120, {"bars": 120})
    done = store.replay("k" * 64)
    assert done is not None and done.status == "done" and done.result == {"bars": 120} and done.job_id == "job-1"
    assert done.finished_at is not None


def test_a_replay_stopped_part_way_keeps_its_key_and_one_stopped_before_any_reward_frees_it(
        store: BanditStore) -> None:
    record = _record()
    store.create(record)
    _claim(store, record, "a" * 64)
    store.stop_replay("a" * 64, 30, "cancelled after 30 of 120 bars")
    stopped = store.replay("a" * 64)
    assert stopped is not None and stopped.status == "stopped" and stopped.bars_done == 30
    assert stopped.note == "cancelled after 30 of 120 bars"
    _claim(store, record, "b" * 64)
    store.stop_replay("b" * 64, 0, "cancelled before the first bar")
    assert store.replay("b" * 64) is None and _claim(store, record, "b" * 64) is None


def test_reset_of_every_regime_forgets_finished_replays_and_delete_removes_them(store: BanditStore) -> None:
    record = _record()
    store.create(record)
    _claim(store, record, "a" * 64)
    store.finish_replay("a" * 64, 120, {})
    _claim(store, record, "b" * 64)  # still running: kept by a reset
    store.reset(record, ("calm",))
    assert store.replay("a" * 64) is not None
    store.reset(record, ("calm", "storm"))
    assert store.replay("a" * 64) is None and store.replay("b" * 64) is not None
    store.delete(record)
    assert store.replay("b" * 64) is None
