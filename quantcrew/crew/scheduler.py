"""The scheduler: fires every enabled schedule of the store and records each firing.

Built on APScheduler 3's ``BackgroundScheduler``. Per schedule: ``max_instances=1`` (a fire
time that comes while the previous run is still going is recorded ``skipped``, never run on
top of it), ``coalesce=True`` and a misfire grace window: fire times missed by less than the
window run once, older ones are recorded ``skipped`` ("missed by ..."). That holds across
restarts too: a schedule resumes from its last recorded fire time, so a fire time that passed
while the scheduler was down runs on start if it is within the window. A run that raises is
recorded ``failed`` with its error and the schedule carries on.

Runs execute on daemon threads (one per run) so that ``stop`` can bound how long it waits:
a run that outlives the timeout is recorded ``failed`` ("interrupted by shutdown") and no
thread keeps the process alive. ``run_forever`` turns SIGTERM / SIGINT into that stop.

The ML server is not this module's business: the ``quantcrew scheduler`` command starts one.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from apscheduler.events import (
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobEvent,
    JobExecutionEvent,
    JobSubmissionEvent,
)
from apscheduler.executors.base import BaseExecutor, run_job
from apscheduler.schedulers.background import BackgroundScheduler

from quantcrew.crew.retraining import RETRAIN_KIND
from quantcrew.crew.schedule import Schedule, ScheduleRun, ScheduleStore

if TYPE_CHECKING:
    from quantcrew.config.settings import Settings
    from quantcrew.crew.kickoff import RunOutcome
    from quantcrew.crew.retrain_runner import RetrainFiring

__all__ = ["DEFAULT_GRACE_S", "DEFAULT_RESYNC_S", "INTERRUPTED", "RunFunction", "Scheduler", "crew_runner"]

log = logging.getLogger(__name__)

DEFAULT_GRACE_S = 300
"""Misfire grace window: a fire time missed by less than this still runs (once)."""

DEFAULT_RESYNC_S = 5.0
"""How often ``run_forever`` re-reads the store for added or removed schedules."""

INTERRUPTED = "interrupted by shutdown"
"""The error text of a run still going when ``stop`` gave up waiting for it."""

RunFunction = Callable[[Schedule], "RunOutcome | RetrainFiring | str | None"]
"""Runs one firing of a schedule; returns the crew run's outcome (a ``degraded`` one makes a
``degraded`` firing), or its id, or None. An exception is a failed run; one with a ``run_id``
attribute (``CrewRunError``) has that id recorded."""

_EXECUTOR = "runs"


def crew_runner(settings: Settings) -> RunFunction:
    """The default run function: ``quantcrew.crew.kickoff.run(schedule.inputs, settings, kind=schedule.kind)``,
    or for a training schedule (kind ``retrain``) one firing of :func:`quantcrew.crew.retrain_runner.retrain_runner`.

    ``settings.client.url`` should name a running ML server (the ``scheduler`` command starts one);
    without it the tools answer from their fallbacks and say so.
    """

    def run(schedule: Schedule) -> RunOutcome | RetrainFiring:
        if schedule.kind == RETRAIN_KIND:  # a training schedule: no crew, the retraining pipeline
            from quantcrew.crew.retrain_runner import retrain_runner

            return retrain_runner(settings, schedule)
        from quantcrew.crew.kickoff import run as kickoff  # crewai is heavy: imported on first run only

        return kickoff(dict(schedule.inputs), settings, kind=schedule.kind)

    return run


class _FireTime(threading.local):
    value: datetime | None = None


_fire_time = _FireTime()


class _ThreadExecutor(BaseExecutor):  # type: ignore[misc]  # APScheduler 3 is untyped
    """One daemon thread per run, which knows the fire time it serves (APScheduler 3 does not pass it on)."""

    def __init__(self) -> None:
        super().__init__()
        self._threads: set[threading.Thread] = set()
        self._threads_lock = threading.Lock()

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        thread = threading.Thread(target=self._run, args=(job, run_times), name=f"schedule-{job.id}", daemon=True)
        with self._threads_lock:
            self._threads.add(thread)
        thread.start()

    def _run(self, job: Any, run_times: list[datetime]) -> None:
        events: list[JobExecutionEvent] = []
        try:
            for run_time in run_times:  # one with coalesce; run_job does the misfire check
                _fire_time.value = run_time
                events += run_job(job, job._jobstore_alias, [run_time], self._logger.name)
        except BaseException as exc:  # noqa: BLE001 - handed to APScheduler's own error path
            self._run_job_error(job.id, exc, exc.__traceback__)
        else:
            self._run_job_success(job.id, events)
        finally:
            _fire_time.value = None
            with self._threads_lock:
                self._threads.discard(threading.current_thread())

    def join(self, timeout_s: float | None) -> bool:
        """Wait for every run thread, at most ``timeout_s`` seconds (None: no limit); True when none is left."""
        end = None if timeout_s is None else time.monotonic() + timeout_s
        while alive := self._alive():
            for thread in alive:
                thread.join(None if end is None else max(0.0, end - time.monotonic()))
            if end is not None and time.monotonic() >= end:
                break
        return not self._alive()

    def _alive(self) -> list[threading.Thread]:
        with self._threads_lock:
            return [t for t in self._threads if t.is_alive()]

    def shutdown(self, wait: bool = True) -> None:
        if wait:
            self.join(None)


class Scheduler:
    """Fires the enabled schedules of ``settings.runs_db`` until stopped.

    Args:
        settings: The settings tree (``runs_db`` holds the schedules).
        run_function: Runs one firing; default :func:`crew_runner` (a real crew run).
        grace_s: Misfire grace window in whole seconds (APScheduler's ``misfire_grace_time``).
        resync_s: Seconds between re-reads of the store in :meth:`run_forever`.
        stop_timeout_s: How long :meth:`run_forever` waits for runs in flight on SIGTERM/SIGINT
            (None: as long as they take).
        on_run: Called with each firing once it is recorded finished (succeeded, failed, skipped).
        store: A store to use instead of one opened on ``settings.runs_db``.
    """

    def __init__(self, settings: Settings, *, run_function: RunFunction | None = None,
                 grace_s: int = DEFAULT_GRACE_S, resync_s: float = DEFAULT_RESYNC_S,
                 stop_timeout_s: float | None = None, on_run: Callable[[ScheduleRun], None] | None = None,
                 store: ScheduleStore | None = None) -> None:
        if isinstance(grace_s, bool) or not isinstance(grace_s, int) or grace_s < 1:
            raise ValueError(f"grace_s must be a whole number of seconds >= 1, got {grace_s!r}")
        if resync_s <= 0:
            raise ValueError(f"resync_s must be > 0 seconds, got {resync_s}")
        if stop_timeout_s is not None and stop_timeout_s < 0:
            raise ValueError(f"stop_timeout_s must be >= 0 seconds or None, got {stop_timeout_s}")
        self.store = store if store is not None else ScheduleStore(settings.runs_db)
        self._owns_store = store is None
        self._run_function = run_function if run_function is not None else crew_runner(settings)
        self.grace_s = grace_s
        self.resync_s = resync_s
        self.stop_timeout_s = stop_timeout_s
        self._on_run = on_run
        self._executor = _ThreadExecutor()
        self._aps = BackgroundScheduler(executors={_EXECUTOR: self._executor})
        self._aps.add_listener(self._on_not_run, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        self._schedules: dict[str, Schedule] = {}
        self._in_flight: dict[int, str] = {}
        self._lock = threading.Lock()
        self._started = False
        self._stopped = False
        self._stop_requested = threading.Event()

    # lifecycle

    def start(self, *, paused: bool = False) -> None:
        """Load the enabled schedules and start firing them (``paused``: start with firing held)."""
        if self._started:
            raise RuntimeError("this scheduler was already started")
        self._started = True
        self.sync()
        self._aps.start(paused=paused)

    def pause(self) -> None:
        """Hold firing; fire times that pass meanwhile are handled by coalesce and the grace window on resume."""
        self._aps.pause()

    def resume(self) -> None:
        self._aps.resume()

    @property
    def running(self) -> bool:
        return self._started and not self._stopped

    def stop(self, timeout_s: float | None = None) -> list[int]:
        """Stop firing, wait for runs in flight, and close the store.

        Args:
            timeout_s: Most seconds to wait for runs in flight; None waits for them to finish.

        Returns:
            The ``schedule_runs`` row ids of runs still going at the timeout; they are recorded
            ``failed`` with ``"interrupted by shutdown"`` (their threads are daemons: they do not
            keep the process alive).
        """
        if self._stopped:
            return []
        self._stopped = True
        self._stop_requested.set()
        if self._started:
            self._aps.shutdown(wait=False)  # no new fire times; runs in flight go on
        interrupted: list[int] = []
        try:
            finished = self._executor.join(timeout_s)
        except KeyboardInterrupt:  # a second Ctrl-C while waiting: give up on the runs, keep the record right
            finished = False
        if not finished:
            with self._lock:
                rows = list(self._in_flight)
            for row_id in rows:
                if self.store.finish_run(row_id, status="failed", error=INTERRUPTED):
                    interrupted.append(row_id)
                    self._notify(row_id)
        if self._owns_store and finished:
            self.store.close()  # a run thread left behind may still write its (ignored) outcome otherwise
        return interrupted

    def run_forever(self) -> None:
        """Fire schedules until SIGTERM or SIGINT, re-reading the store every ``resync_s`` seconds.

        The signal handlers only ask for the stop; it happens here, in the main thread: no new
        fire time starts, runs in flight finish (or are recorded interrupted after
        ``stop_timeout_s``), and every record is written before this returns. A second signal
        while waiting falls through to the previous handlers (a second Ctrl-C interrupts the wait).

        Must be called from the main thread (signal handlers).
        """

        def request_stop(signum: int, frame: FrameType | None) -> None:
            log.info("signal %s: stopping the scheduler", signal.Signals(signum).name)
            self._stop_requested.set()

        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            if not self._started:
                self.start()
            while not self._stop_requested.wait(self.resync_s):
                try:
                    self.sync()
                except Exception:  # a locked or briefly unreadable store must not end the scheduler
                    log.exception("could not re-read the schedules; keeping the current ones")
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stop(self.stop_timeout_s)

    def __enter__(self) -> Scheduler:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop(self.stop_timeout_s)

    # schedules

    def sync(self) -> tuple[list[str], list[str]]:
        """Match the jobs to the enabled schedules in the store.

        Returns:
            The ids added and the ids removed.
        """
        wanted = {s.schedule_id: s for s in self.store.list(enabled_only=True)}
        added: list[str] = []
        removed: list[str] = []
        with self._lock:
            for schedule_id in list(self._schedules):
                if schedule_id not in wanted:
                    del self._schedules[schedule_id]
                    removed.append(schedule_id)
            for schedule_id, schedule in wanted.items():
                if schedule_id not in self._schedules:
                    self._schedules[schedule_id] = schedule
                    added.append(schedule_id)
        for schedule_id in removed:
            if self._aps.get_job(schedule_id) is not None:
                self._aps.remove_job(schedule_id)
            log.info("schedule %s removed", schedule_id)
        for schedule_id in added:
            schedule = wanted[schedule_id]
            trigger = schedule.trigger()
            self._aps.add_job(self._fire, trigger=trigger, args=[schedule_id], id=schedule_id,
                              name=f"{schedule.kind} {schedule.trigger_text}", executor=_EXECUTOR,
                              max_instances=1, coalesce=True, misfire_grace_time=self.grace_s,
                              replace_existing=True, next_run_time=self._resume_from(schedule, trigger))
            log.info("schedule %s added: %s %s", schedule_id, schedule.kind, schedule.trigger_text)
        return added, removed

    def _resume_from(self, schedule: Schedule, trigger: Any) -> datetime | None:
        """The first fire time after the schedule's last recorded one (or its creation).

        When it is already past (the scheduler was down, or the schedule is new to this
        process), APScheduler treats it as a misfire: run once if within the grace window,
        else reported missed and recorded ``skipped``. A restart never silently drops a fire time.
        """
        last = self.store.last_fire_time(schedule.schedule_id)
        since = last if last is not None else datetime.fromisoformat(schedule.created_at)
        fire: datetime | None = trigger.get_next_fire_time(None, since + timedelta(microseconds=1))
        return fire

    @property
    def schedules(self) -> list[Schedule]:
        """The schedules being fired."""
        with self._lock:
            return list(self._schedules.values())

    # firing

    def _fire(self, schedule_id: str) -> None:
        """The job: record the firing, run it, record how it ended. Never raises."""
        scheduled_for = _fire_time.value or datetime.now(UTC)
        with self._lock:
            schedule = self._schedules.get(schedule_id)
        if schedule is None:  # removed between the fire time and now
            return
        try:
            row_id = self.store.start_run(schedule_id, scheduled_for)
        except Exception:  # the store is unwritable: nothing to record into, do not run blind
            log.exception("schedule %s: could not record the firing at %s; not running it", schedule_id,
                          scheduled_for)
            return
        with self._lock:
            self._in_flight[row_id] = schedule_id
        try:
            ran = self._run_function(schedule)
        except Exception as exc:  # any failure of a run is recorded, and the schedule goes on
            log.warning("schedule %s: run failed: %s: %s", schedule_id, type(exc).__name__, exc)
            self._finish(row_id, status="failed", run_id=getattr(exc, "run_id", None),
                         error=f"{type(exc).__name__}: {exc}")
        else:
            run_id = ran if isinstance(ran, str) or ran is None else ran.run_id
            status = "degraded" if getattr(ran, "status", None) == "degraded" else "succeeded"
            self._finish(row_id, status=status, run_id=run_id)
        finally:
            with self._lock:
                self._in_flight.pop(row_id, None)

    def _finish(self, row_id: int, *, status: str, run_id: str | None = None, error: str | None = None) -> None:
        try:
            if self.store.finish_run(row_id, status=status, run_id=run_id, error=error):
                self._notify(row_id)
        except Exception:  # noqa: BLE001 - logged; the scheduler must outlive a store hiccup
            log.exception("schedule run %s: could not record its outcome (%s)", row_id, status)

    def _on_not_run(self, event: JobEvent) -> None:
        """APScheduler listener: a fire time skipped (previous run still going) or missed (past grace)."""
        try:
            if isinstance(event, JobSubmissionEvent):  # EVENT_JOB_MAX_INSTANCES
                scheduled_for = event.scheduled_run_times[-1]
                reason = "previous run still in flight (max_instances=1)"
            else:
                assert isinstance(event, JobExecutionEvent)  # EVENT_JOB_MISSED
                scheduled_for = event.scheduled_run_time
                late = (datetime.now(UTC) - scheduled_for).total_seconds()
                reason = f"missed by {late:.1f} s, past the misfire grace window of {self.grace_s} s"
            row_id = self.store.record_skipped(event.job_id, scheduled_for, reason)
            self._notify(row_id)
        except Exception:  # noqa: BLE001 - a listener must never raise into APScheduler's loop
            log.exception("schedule %s: could not record a skipped fire time", event.job_id)

    def _notify(self, row_id: int) -> None:
        if self._on_run is None:
            return
        found = self.store.get_run(row_id)
        if found is not None:
            try:
                self._on_run(found)
            except Exception:  # noqa: BLE001 - a display callback must not break the scheduler
                log.exception("on_run callback failed for schedule run %s", row_id)
