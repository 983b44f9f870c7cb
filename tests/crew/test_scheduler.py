"""The scheduler, with an injected run function: records, non-overlap, failures, misfires, signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from quantcrew.config.settings import Settings
from quantcrew.crew.schedule import Schedule, ScheduleRun, ScheduleStore
from quantcrew.crew.scheduler import INTERRUPTED, Scheduler, crew_runner

REPO = Path(__file__).resolve().parents[2]


def wait_for(condition: Callable[[], bool], timeout_s: float = 8.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(0.05)


def finished(store: ScheduleStore, status: str | None = None) -> list[ScheduleRun]:
    """Finished firings, oldest first (optionally of one status)."""
    rows = [r for r in reversed(store.list_runs(limit=None)) if r.status != "running"]
    return [r for r in rows if status is None or r.status == status]


def _at(iso: str | None) -> datetime:
    assert iso is not None
    return datetime.fromisoformat(iso)


@pytest.fixture
def store(settings: Settings) -> Iterator[ScheduleStore]:
    with ScheduleStore(settings.runs_db) as opened:
        yield opened


@pytest.fixture
def make_scheduler(settings: Settings) -> Iterator[Callable[..., Scheduler]]:
    made: list[Scheduler] = []

    def make(run_function: Callable[[Schedule], str | None], **kwargs: Any) -> Scheduler:
        scheduler = Scheduler(settings, run_function=run_function, **kwargs)
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        scheduler.stop(timeout_s=5)


def test_each_firing_is_recorded_with_its_crew_run_id(store: ScheduleStore,
                                                      make_scheduler: Callable[..., Scheduler]) -> None:
    schedule = store.add(kind="regime", inputs={"symbol": "SP500"}, every_seconds=1)
    seen: list[Schedule] = []

    def run(s: Schedule) -> str:
        seen.append(s)
        return f"crew-{len(seen)}"

    scheduler = make_scheduler(run)
    scheduler.start()
    wait_for(lambda: len(finished(store)) >= 2)
    scheduler.stop()

    rows = finished(store)
    assert [(r.status, r.run_id, r.error) for r in rows[:2]] == [("succeeded", "crew-1", None),
                                                                ("succeeded", "crew-2", None)]
    assert seen[0] == schedule
    first, second = (datetime.fromisoformat(r.scheduled_for) for r in rows[:2])
    assert (second - first).total_seconds() == pytest.approx(1.0, abs=0.01)  # the fire times, not the start times
    assert all(0 <= r.lag_s < 0.5 for r in rows)
    assert not [r for r in store.list_runs(limit=None) if r.status == "running"]


def test_runs_of_one_schedule_never_overlap_and_skips_are_recorded(
        store: ScheduleStore, make_scheduler: Callable[..., Scheduler]) -> None:
    store.add(kind="full", inputs={}, every_seconds=1)
    active, most = [0], [0]
    lock = threading.Lock()

    def run(s: Schedule) -> str:
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(1.3 if not finished(store, "succeeded") else 0.0)  # only the first run outlasts the interval
        with lock:
            active[0] -= 1
        return "ok"

    scheduler = make_scheduler(run)
    scheduler.start()
    wait_for(lambda: len(finished(store, "succeeded")) >= 2)
    scheduler.stop()

    rows = finished(store)
    runs = [r for r in rows if r.status == "succeeded"]
    skipped = [r for r in rows if r.status == "skipped"]
    assert most[0] == 1
    assert len(skipped) >= 1 and skipped[0].error == "previous run still in flight (max_instances=1)"
    assert _at(runs[0].started_at) < _at(skipped[0].scheduled_for) < _at(runs[0].finished_at)
    for earlier, later in zip(runs, runs[1:], strict=False):
        assert _at(earlier.finished_at) <= _at(later.started_at)


def test_failed_run_is_recorded_and_the_next_runs_succeed(store: ScheduleStore,
                                                          make_scheduler: Callable[..., Scheduler]) -> None:
    class FakeCrewRunError(RuntimeError):
        run_id = "crew-broken"

    store.add(kind="full", inputs={}, every_seconds=1)
    calls = [0]

    def run(s: Schedule) -> str:
        calls[0] += 1
        if calls[0] == 1:
            raise FakeCrewRunError("the HMM did not converge")
        return f"crew-{calls[0]}"

    scheduler = make_scheduler(run)
    scheduler.start()
    wait_for(lambda: len(finished(store)) >= 3)
    scheduler.stop()

    rows = finished(store)
    assert (rows[0].status, rows[0].run_id, rows[0].error) == (
        "failed", "crew-broken", "FakeCrewRunError: the HMM did not converge")
    assert [(r.status, r.run_id) for r in rows[1:3]] == [("succeeded", "crew-2"), ("succeeded", "crew-3")]


def test_a_degraded_run_is_recorded_as_a_degraded_firing(store: ScheduleStore,
                                                         make_scheduler: Callable[..., Scheduler]) -> None:
    store.add(kind="full", inputs={}, every_seconds=1)
    scheduler = make_scheduler(lambda s: types.SimpleNamespace(run_id="crew-fallback", status="degraded"))
    scheduler.start()
    wait_for(lambda: len(finished(store)) >= 1)
    scheduler.stop()
    row = finished(store)[0]
    assert (row.status, row.run_id, row.error) == ("degraded", "crew-fallback", None)


def test_fire_times_missed_within_grace_run_once(store: ScheduleStore,
                                                 make_scheduler: Callable[..., Scheduler]) -> None:
    store.add(kind="full", inputs={}, every_seconds=1)
    scheduler = make_scheduler(lambda s: "late-but-run", grace_s=300)
    scheduler.start(paused=True)  # firing held: two fire times pass
    time.sleep(2.5)
    scheduler.resume()
    wait_for(lambda: len(finished(store)) >= 1)
    scheduler.stop()

    rows = finished(store)
    assert [(r.status, r.run_id) for r in rows] == [("succeeded", "late-but-run")]  # coalesced: once, not twice
    assert 0.3 < rows[0].lag_s < 1.0  # it served the last missed fire time, late


def test_fire_times_missed_past_grace_are_recorded_skipped(store: ScheduleStore,
                                                           make_scheduler: Callable[..., Scheduler]) -> None:
    store.add(kind="full", inputs={}, every_seconds=2)
    calls: list[Schedule] = []

    def run(s: Schedule) -> str:
        calls.append(s)
        return "never"

    scheduler = make_scheduler(run, grace_s=1)
    scheduler.start(paused=True)
    time.sleep(3.3)  # the fire time at 2 s is 1.3 s old on resume: past the 1 s window
    scheduler.resume()
    wait_for(lambda: len(finished(store)) >= 1)
    scheduler.stop()

    rows = finished(store)
    assert calls == []
    assert [r.status for r in rows] == ["skipped"]
    assert rows[0].error is not None and rows[0].error.startswith("missed by 1.")
    assert rows[0].error.endswith("past the misfire grace window of 1 s")


def _minute_start() -> datetime:
    """The start of the current minute (UTC), at least 2 s ago."""
    now = datetime.now(UTC)
    if now.second < 2:
        time.sleep(2.1 - now.second - now.microsecond / 1e6)
        now = datetime.now(UTC)
    return now.replace(second=0, microsecond=0)


def test_fire_time_missed_while_down_runs_on_start_within_grace(store: ScheduleStore,
                                                                make_scheduler: Callable[..., Scheduler]) -> None:
    schedule = store.add("* * * * *", "full", {})
    minute = _minute_start()
    store.record_skipped(schedule.schedule_id, minute - timedelta(minutes=2), "an earlier run of the scheduler")
    scheduler = make_scheduler(lambda s: "caught-up", grace_s=300)  # fire times at -1 min and 0 passed while down
    scheduler.start()
    wait_for(lambda: len(finished(store)) >= 2)
    scheduler.stop()

    newest = store.list_runs(schedule.schedule_id)
    assert len(newest) == 2  # coalesced: one run for the two missed fire times
    assert (newest[0].status, newest[0].run_id) == ("succeeded", "caught-up")
    assert _at(newest[0].scheduled_for) == minute


def test_fire_time_missed_while_down_past_grace_is_recorded_skipped(
        store: ScheduleStore, make_scheduler: Callable[..., Scheduler]) -> None:
    schedule = store.add("* * * * *", "full", {})
    minute = _minute_start()
    store.record_skipped(schedule.schedule_id, minute - timedelta(minutes=1), "an earlier run of the scheduler")
    calls: list[Schedule] = []

    def run(s: Schedule) -> str:
        calls.append(s)
        return "never"

    scheduler = make_scheduler(run, grace_s=1)
    scheduler.start()
    wait_for(lambda: len(finished(store)) >= 2)
    scheduler.stop()

    newest = store.list_runs(schedule.schedule_id)[0]
    assert calls == []
    assert (newest.status, _at(newest.scheduled_for)) == ("skipped", minute)
    assert newest.error is not None and newest.error.startswith("missed by ")


def test_sync_picks_up_added_and_removed_schedules(store: ScheduleStore,
                                                   make_scheduler: Callable[..., Scheduler]) -> None:
    first = store.add("0 22 * * 1-5", "full", {})
    scheduler = make_scheduler(lambda s: None)
    scheduler.start()
    assert [s.schedule_id for s in scheduler.schedules] == [first.schedule_id]

    second = store.add(kind="full", inputs={}, every_seconds=60)
    store.remove(first.schedule_id)
    disabled = store.add(kind="full", inputs={}, every_seconds=60)
    store.set_enabled(disabled.schedule_id, False)
    assert scheduler.sync() == ([second.schedule_id], [first.schedule_id])
    assert [s.schedule_id for s in scheduler.schedules] == [second.schedule_id]
    assert scheduler.sync() == ([], [])


def test_stop_timeout_records_the_run_in_flight_as_interrupted(store: ScheduleStore,
                                                               make_scheduler: Callable[..., Scheduler]) -> None:
    store.add(kind="full", inputs={}, every_seconds=1)
    release = threading.Event()
    scheduler = make_scheduler(lambda s: "finished-too-late" if release.wait(10) else None)
    scheduler.start()
    wait_for(lambda: any(r.status == "running" for r in store.list_runs()))

    started = time.monotonic()
    interrupted = scheduler.stop(timeout_s=0.2)
    assert time.monotonic() - started < 1.0
    release.set()

    rows = store.list_runs(limit=None)
    assert [r.id for r in rows] == interrupted
    assert (rows[0].status, rows[0].error) == ("failed", INTERRUPTED)
    time.sleep(0.1)  # the run thread ends now; its late outcome does not overwrite the record
    assert store.list_runs()[0].status == "failed"


def test_scheduler_refuses_bad_windows(settings: Settings) -> None:
    with pytest.raises(ValueError, match="grace_s must be a whole number of seconds >= 1, got 0"):
        Scheduler(settings, run_function=lambda s: None, grace_s=0)
    with pytest.raises(ValueError, match="resync_s must be > 0"):
        Scheduler(settings, run_function=lambda s: None, resync_s=0)


def test_crew_runner_calls_kickoff_with_the_schedule(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[dict[str, Any], Settings, str]] = []

    def fake_run(inputs: dict[str, Any], s: Settings, *, kind: str = "regime") -> Any:
        calls.append((inputs, s, kind))
        return types.SimpleNamespace(run_id="crew-42", status="succeeded")

    fake = types.ModuleType("quantcrew.crew.kickoff")
    fake.run = fake_run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "quantcrew.crew.kickoff", fake)  # crewai stays unimported
    schedule = Schedule(schedule_id="abc", kind="full", inputs={"symbols": "SP500"})

    assert crew_runner(settings)(schedule).run_id == "crew-42"
    assert calls == [({"symbols": "SP500"}, settings, "full")]



def test_a_training_schedule_fires_the_retraining_pipeline_not_a_crew(settings: Settings,
                                                                      store: ScheduleStore) -> None:
    from quantcrew.crew.retraining import RETRAIN_KIND
    from quantcrew.crew.server_process import free_port

    settings.client.url = f"http://127.0.0.1:{free_port()}"  # nobody answers: every symbol fails, recorded
    store.add(None, RETRAIN_KIND, {"symbols": "SP500"}, every_seconds=1)
    scheduler = Scheduler(settings, store=store)  # the default run function: crew_runner
    scheduler.start()
    try:
        wait_for(lambda: bool(finished(store)), timeout_s=20)
    finally:
        scheduler.stop(timeout_s=10)
    first = finished(store)[0]
    assert first.status == "failed" and first.run_id is None
    assert first.error is not None and first.error.startswith("RetrainFailed: SP500: failed")


def _child(settings: Settings, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "tests.support.scheduler_child", str(settings.home), *args],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow  # the child imports quantcrew.crew, hence crewai: ~10 s
def test_sigterm_lets_the_run_in_flight_finish_and_record(settings: Settings, store: ScheduleStore) -> None:
    store.add(kind="full", inputs={}, every_seconds=1)
    proc = _child(settings, "1.5")
    try:
        wait_for(lambda: any(r.status == "running" for r in store.list_runs()), timeout_s=60)
        proc.send_signal(signal.SIGTERM)
        signalled = datetime.now().astimezone()
        out, err = proc.communicate(timeout=5)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out.split() == ["ready", "stopped"]
    rows = store.list_runs(limit=None)
    assert [(r.status, r.run_id) for r in rows] == [("succeeded", "child-run")]  # no new run after the signal
    assert rows[0].finished_at is not None and datetime.fromisoformat(rows[0].finished_at) > signalled


@pytest.mark.slow  # the child imports quantcrew.crew, hence crewai: ~10 s
def test_sigterm_past_stop_timeout_records_interrupted_and_exits(settings: Settings, store: ScheduleStore) -> None:
    store.add(kind="full", inputs={}, every_seconds=1)
    proc = _child(settings, "60", "0.3")
    try:
        wait_for(lambda: any(r.status == "running" for r in store.list_runs()), timeout_s=60)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=5)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert time.monotonic() - started < 3  # the 60 s run thread does not hold the process
    # (a tick that came while the run was in flight, on a loaded machine, is recorded as skipped)
    rows = [(r.status, r.error) for r in store.list_runs(limit=None) if r.status != "skipped"]
    assert rows == [("failed", INTERRUPTED)]
