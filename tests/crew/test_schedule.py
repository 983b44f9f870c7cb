"""The schedule store: schedules and their firings in the runs store's SQLite file."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from quantcrew.config.settings import Settings
from quantcrew.crew.runs import RunsStore
from quantcrew.crew.schedule import ScheduleError, ScheduleNotFound, ScheduleStore


@pytest.fixture
def store(settings: Settings) -> ScheduleStore:
    return ScheduleStore(settings.runs_db)


def test_add_list_get_round_trip(store: ScheduleStore) -> None:
    cron = store.add("0 22 * * 1-5", "full", {"symbols": "SP500"})
    every = store.add(kind="regime", inputs={"symbol": "VIX"}, every_seconds=2)

    assert [s.schedule_id for s in store.list()] == [cron.schedule_id, every.schedule_id]
    assert store.get(cron.schedule_id) == cron
    assert (cron.cron, cron.every_seconds, cron.kind, cron.inputs, cron.enabled) == (
        "0 22 * * 1-5", None, "full", {"symbols": "SP500"}, True)
    assert (every.cron, every.every_seconds, every.trigger_text) == (None, 2, "every 2 s")
    assert len(cron.schedule_id) == 8 and int(cron.schedule_id, 16) >= 0


def test_add_invalid_cron_names_the_expression_and_stores_nothing(store: ScheduleStore) -> None:
    with pytest.raises(ScheduleError, match=r"invalid cron expression '61 \* \* \* \*'.*'61'"):
        store.add("61 * * * *", "full", {})
    with pytest.raises(ScheduleError, match=r"invalid cron expression '0 22 \* \*': expected 5 fields.*got 4"):
        store.add("0 22 * *", "full", {})
    with pytest.raises(ScheduleError, match=r"day-of-week 'funday'"):
        store.add("0 22 * * funday", "full", {})
    with pytest.raises(ScheduleError, match="never fires"):
        store.add("0 0 31 2 *", "full", {})
    assert store.list() == []


def test_add_needs_exactly_one_valid_trigger(store: ScheduleStore) -> None:
    with pytest.raises(ScheduleError, match="either a cron expression or every_seconds"):
        store.add("* * * * *", "full", {}, every_seconds=5)
    with pytest.raises(ScheduleError, match="either a cron expression or every_seconds"):
        store.add(None, "full", {})
    for bad in (0, -3, True, 1.5):
        with pytest.raises(ScheduleError, match=rf"every_seconds must be .* >= 1, got {bad!r}"):
            store.add(kind="full", inputs={}, every_seconds=bad)  # type: ignore[arg-type]
    with pytest.raises(ScheduleError, match="kind must be a crew name"):
        store.add("* * * * *", " ", {})
    with pytest.raises(ScheduleError, match="JSON-serialisable"):
        store.add("* * * * *", "full", {"when": object()})
    assert store.list() == []


def test_remove_unknown_id_lists_the_known_ids(store: ScheduleStore) -> None:
    with pytest.raises(ScheduleNotFound, match="no schedule 'nosuch'.*none yet"):
        store.remove("nosuch")
    kept = store.add("0 22 * * 1-5", "full", {"symbols": "SP500"})
    with pytest.raises(ScheduleNotFound, match=rf"no schedule 'nosuch' in .*known schedule ids: {kept.schedule_id}"):
        store.remove("nosuch")
    with pytest.raises(LookupError):
        store.get("nosuch")
    assert store.list() == [kept]


def test_remove_deletes_the_schedule_and_keeps_its_firings(store: ScheduleStore) -> None:
    schedule = store.add(kind="full", inputs={}, every_seconds=1)
    row = store.start_run(schedule.schedule_id, datetime.now(UTC))
    store.finish_run(row, status="succeeded", run_id="abc")

    assert store.remove(schedule.schedule_id) == schedule
    assert store.list() == []
    assert [r.run_id for r in store.list_runs(schedule.schedule_id)] == ["abc"]


def test_schedules_persist_across_store_instances(settings: Settings) -> None:
    with ScheduleStore(settings.runs_db) as first:
        added = first.add("30 6 * * *", "risk", {"symbols": "SP500,NASDAQ"})
        row = first.start_run(added.schedule_id, datetime.now(UTC))
    with ScheduleStore(settings.runs_db) as second:
        assert second.list() == [added]
        assert second.finish_run(row, status="failed", error="boom")
        assert second.list_runs()[0].status == "failed"


def test_firings_round_trip_and_first_outcome_wins(store: ScheduleStore) -> None:
    schedule = store.add(kind="full", inputs={}, every_seconds=1)
    fire = datetime.now(UTC) - timedelta(seconds=2)
    row = store.start_run(schedule.schedule_id, fire)
    running = store.get_run(row)
    assert running is not None and running.status == "running" and running.finished_at is None
    assert running.duration_s is None and 1.5 < running.lag_s < 10

    assert store.finish_run(row, status="failed", error="interrupted by shutdown")
    assert not store.finish_run(row, status="succeeded", run_id="late")  # the run ended after the shutdown mark
    done = store.get_run(row)
    assert done is not None and (done.status, done.run_id, done.error) == ("failed", None, "interrupted by shutdown")
    with pytest.raises(ValueError, match="status must be 'succeeded', 'degraded' or 'failed', got 'running'"):
        store.finish_run(row, status="running")


def test_list_runs_filters_by_schedule_newest_first(store: ScheduleStore) -> None:
    a = store.add(kind="full", inputs={}, every_seconds=1)
    b = store.add(kind="full", inputs={}, every_seconds=1)
    now = datetime.now(UTC)
    first = store.start_run(a.schedule_id, now)
    skipped = store.record_skipped(a.schedule_id, now, "previous run still in flight")
    other = store.start_run(b.schedule_id, now)

    assert [r.id for r in store.list_runs(a.schedule_id)] == [skipped, first]
    assert [r.id for r in store.list_runs()] == [other, skipped, first]
    assert [r.id for r in store.list_runs(limit=1)] == [other]
    assert store.get_run(skipped) is not None and store.get_run(skipped).status == "skipped"  # type: ignore[union-attr]
    assert store.get_run(999) is None


def test_disabled_schedules_are_left_out_of_enabled_only(store: ScheduleStore) -> None:
    schedule = store.add(kind="full", inputs={}, every_seconds=1)
    assert store.set_enabled(schedule.schedule_id, False).enabled is False
    assert store.list(enabled_only=True) == []
    assert store.list()[0].enabled is False


def test_store_shares_the_runs_db_in_wal_mode(settings: Settings) -> None:
    RunsStore(settings.runs_db).close()
    ScheduleStore(settings.runs_db).close()
    ScheduleStore(settings.runs_db).close()  # a second open finds the tables there
    conn = sqlite3.connect(settings.runs_db)
    tables = {row[0] for row in conn.execute("select name from sqlite_master where type = 'table'")}
    assert {"runs", "tool_calls", "schedules", "schedule_runs"} <= tables
    assert conn.execute("pragma journal_mode").fetchone()[0] == "wal"
