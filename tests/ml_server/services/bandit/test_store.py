"""Bandit store: records, decisions and rewards saved in SQLite, read back under one lock, across stores."""

from __future__ import annotations

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
