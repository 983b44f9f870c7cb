"""Crontab grammar: crontab day-of-week numbering, whole-expression checks, interval triggers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.triggers.interval import IntervalTrigger

from quantcrew.crew.cron import ScheduleError, cron_trigger, make_trigger, validate_trigger


def test_cron_day_of_week_follows_crontab_not_apscheduler() -> None:
    trigger = cron_trigger("0 22 * * 1-5")
    moment = datetime(2024, 6, 2, 12, tzinfo=trigger.timezone)  # a Sunday
    fired = []
    previous = None
    for _ in range(6):
        previous = trigger.get_next_fire_time(previous, moment)
        moment = previous
        fired.append(previous.strftime("%a %H:%M"))
    assert fired == ["Mon 22:00", "Tue 22:00", "Wed 22:00", "Thu 22:00", "Fri 22:00", "Mon 22:00"]
    for sunday in ("0", "7", "sun"):
        nxt = cron_trigger(f"0 9 * * {sunday}").get_next_fire_time(None, datetime(2024, 6, 3, tzinfo=UTC))
        assert nxt is not None and nxt.strftime("%a") == "Sun"


def test_cron_refuses_day_of_month_and_day_of_week_together() -> None:
    with pytest.raises(ScheduleError, match="restrict day-of-month or day-of-week, not both"):
        cron_trigger("0 0 1 * 1")


def test_cron_trigger_names_the_expression_when_malformed() -> None:
    with pytest.raises(ScheduleError, match=r"invalid cron expression '0 22 \* \*': expected 5 fields.*got 4"):
        cron_trigger("0 22 * *")
    with pytest.raises(ScheduleError, match=r"day-of-week step '0' is not a number >= 1"):
        cron_trigger("0 9 * * */0")
    with pytest.raises(ScheduleError, match=r"day-of-week range '5-1' runs backwards"):
        cron_trigger("0 9 * * 5-1")
    with pytest.raises(ScheduleError, match="never fires"):
        cron_trigger("0 0 31 2 *")


def test_make_trigger_interval_counts_from_start() -> None:
    start = datetime(2024, 6, 3, 12, tzinfo=UTC)
    trigger = make_trigger(None, 30, start=start)
    assert isinstance(trigger, IntervalTrigger)
    assert trigger.get_next_fire_time(None, start) == start + timedelta(seconds=30)


@pytest.mark.parametrize(("cron", "every"), [("* * * * *", 5), (None, None), (None, 0), (None, True)])
def test_validate_trigger_refuses_both_neither_or_a_bad_interval(cron: str | None, every: int | None) -> None:
    with pytest.raises(ScheduleError):
        validate_trigger(cron, every)


def test_schedule_error_is_a_value_error() -> None:
    assert issubclass(ScheduleError, ValueError)
