"""A scheduler in a child process, for the signal tests.

``python -m tests.support.scheduler_child HOME RUN_SECONDS [STOP_TIMEOUT_S]``: fires the
schedules stored under HOME with a run function that sleeps RUN_SECONDS and returns
``"child-run"``, until SIGTERM / SIGINT.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from quantcrew.config.settings import load_settings
from quantcrew.crew.schedule import Schedule
from quantcrew.crew.scheduler import Scheduler


def main(argv: list[str]) -> int:
    home, run_seconds = Path(argv[0]), float(argv[1])
    stop_timeout_s = float(argv[2]) if len(argv) > 2 else None

    def run(schedule: Schedule) -> str:
        time.sleep(run_seconds)
        return "child-run"

    scheduler = Scheduler(load_settings(home=home), run_function=run, resync_s=0.2, stop_timeout_s=stop_timeout_s)
    scheduler.start()
    print("ready", flush=True)
    scheduler.run_forever()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
