"""Soak of the scheduler: one schedule firing every N seconds for M seconds, one run made to crash.

By default each firing is a real crew run (``kickoff.run``, kind ``regime``, offline planner) against
a local ML server started for the soak (one warm-up run first: imports and the first fit);
``--fake`` makes each firing a synthetic run that sleeps ``--fake-seconds`` (+-50% jitter).
The ``--crash-at``-th run raises RuntimeError.

Prints: fire times expected, recorded, succeeded, failed, skipped, overlapping pairs of runs,
fire times lost (expected - recorded), run duration and scheduling lag (start - fire time)
percentiles, and whether every succeeded firing's crew run is in the runs store.

Run: .venv/bin/python bench/scheduler_soak.py [--seconds 120] [--every 2] [--fake] [--crash-at 5]
"""

from __future__ import annotations

import argparse
import logging
import random
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from _table import print_table, summary

from quantcrew.config.settings import Settings, load_settings
from quantcrew.crew.runs import RunsStore
from quantcrew.crew.schedule import Schedule, ScheduleRun, ScheduleStore
from quantcrew.crew.scheduler import Scheduler, crew_runner
from quantcrew.crew.server_process import LocalServer


def _crashing(run: Callable[[Schedule], str | None], crash_at: int) -> Callable[[Schedule], str | None]:
    calls = [0]
    lock = threading.Lock()

    def wrapped(schedule: Schedule) -> str | None:
        with lock:
            calls[0] += 1
            n = calls[0]
        if n == crash_at:
            raise RuntimeError(f"soak: planned crash on run {n}")
        return run(schedule)

    return wrapped


def _fake(seconds: float) -> Callable[[Schedule], str | None]:
    rng = random.Random(0)

    def run(schedule: Schedule) -> str:
        time.sleep(seconds * rng.uniform(0.5, 1.5))
        return f"fake-{rng.getrandbits(32):08x}"

    return run


def _soak(settings: Settings, run: Callable[[Schedule], str | None], *, seconds: int, every: int, grace: int,
          kind: str, inputs: dict[str, object]) -> tuple[int, list[ScheduleRun], float]:
    store = ScheduleStore(settings.runs_db)
    schedule = store.add(kind=kind, inputs=inputs, every_seconds=every)
    scheduler = Scheduler(settings, run_function=run, grace_s=grace, store=store)
    started = time.monotonic()
    scheduler.start()
    time.sleep(seconds + every / 2)  # stop mid-interval: no fire time on the edge
    wall = time.monotonic() - started
    scheduler.stop()  # waits for the run in flight
    rows = list(reversed(store.list_runs(schedule.schedule_id, limit=None)))
    store.close()
    return seconds // every, rows, wall


def _overlaps(rows: list[ScheduleRun]) -> int:
    spans = [(datetime.fromisoformat(r.started_at), datetime.fromisoformat(r.finished_at or r.started_at))
             for r in rows if r.status != "skipped"]
    return sum(1 for i, (s1, e1) in enumerate(spans) for s2, e2 in spans[i + 1:] if s1 < e2 and s2 < e1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=120, help="How long the soak fires.")
    parser.add_argument("--every", type=int, default=2, help="Seconds between fire times.")
    parser.add_argument("--crash-at", type=int, default=5, help="This run (1-based) raises RuntimeError.")
    parser.add_argument("--grace", type=int, default=300, help="Misfire grace window, seconds.")
    parser.add_argument("--fake", action="store_true", help="Synthetic runs instead of real crew runs.")
    parser.add_argument("--fake-seconds", type=float, default=0.5, help="Mean duration of a synthetic run.")
    parser.add_argument("--symbol", default="SP500", help="Symbol(s) of the real crew runs (comma-separated).")
    parser.add_argument("--kind", default="regime", help="Crew of the real runs: regime (0.6 s) or full (3 s: "
                                                          "longer than a 2 s interval, so overlaps are skipped).")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the planned crash and any skips are counted below, not logged

    home = Path(tempfile.mkdtemp(prefix="qc-scheduler-soak-"))
    settings = load_settings(home=home)
    inputs: dict[str, object] = {"symbols": args.symbol}
    if args.fake:
        mode = f"synthetic runs of {args.fake_seconds:g} s +-50%"
        expected, rows, wall = _soak(settings, _crashing(_fake(args.fake_seconds), args.crash_at),
                                     seconds=args.seconds, every=args.every, grace=args.grace, kind=args.kind,
                                     inputs=inputs)
    else:
        from quantcrew.crew.kickoff import run as kickoff

        mode = f"real crew runs (kickoff.run, kind {args.kind}, {args.symbol}, offline planner, local ML server)"
        with LocalServer(env={"QUANTCREW_HOME": str(home)}, log_path=home / "server.log") as server:
            settings.client.url = server.url
            t = time.perf_counter()
            kickoff(dict(inputs), settings, kind=args.kind)  # warm-up: crewai imports, first HMM fit
            print(f"warm-up crew run: {time.perf_counter() - t:.1f} s")
            expected, rows, wall = _soak(settings, _crashing(crew_runner(settings), args.crash_at),
                                         seconds=args.seconds, every=args.every, grace=args.grace, kind=args.kind,
                                         inputs=inputs)

    ran = [r for r in rows if r.status in ("succeeded", "failed")]
    count = {s: sum(1 for r in rows if r.status == s) for s in ("succeeded", "failed", "skipped", "running")}
    durations = [r.duration_s for r in ran if r.duration_s is not None]
    lags = [r.lag_s for r in ran]
    runs = RunsStore(settings.runs_db)
    crew_runs = [runs.get_run(r.run_id) for r in rows if r.status == "succeeded" and r.run_id is not None]
    runs.close()
    in_store = sum(1 for c in crew_runs if c is not None and c["status"] == "succeeded")
    degraded = sum(1 for c in crew_runs if c is not None and any(t["degraded"] for t in c["tool_calls"]))
    tool_calls = sum(len(c["tool_calls"]) for c in crew_runs if c is not None)
    fired = len({r.scheduled_for for r in rows})
    d, g = summary(durations or [0.0]), summary(lags or [0.0])
    print(f"scheduler soak: one schedule every {args.every} s for {args.seconds} s ({wall:.1f} s wall), {mode}; "
          f"run {args.crash_at} crashes")
    print_table(["measure", "value"], [
        ["fire times expected", expected],
        ["recorded (rows)", len(rows)],
        ["distinct fire times recorded", fired],
        ["succeeded", count["succeeded"]],
        ["failed", count["failed"]],
        ["skipped (previous run in flight / missed)", count["skipped"]],
        ["left 'running'", count["running"]],
        ["overlapping pairs of runs", _overlaps(rows)],
        ["lost (expected - recorded)", expected - len(rows)],
        ["succeeded with their crew run in the runs store",
         "n/a (synthetic)" if args.fake else f"{in_store}/{count['succeeded']}"],
        ["their tool calls / runs with a fallback answer",
         "n/a (synthetic)" if args.fake else f"{tool_calls} / {degraded}"],
        ["run duration median s", d["median"]],
        ["run duration p95 s", d["p95"]],
        ["run duration p99 s", d["p99"]],
        ["scheduling lag median ms", g["median"] * 1000],
        ["scheduling lag p95 ms", g["p95"] * 1000],
        ["scheduling lag p99 ms", g["p99"] * 1000],
    ])
    failed = [r for r in rows if r.status == "failed"]
    if failed:
        print(f"failed: {failed[0].error}")


if __name__ == "__main__":
    main()
