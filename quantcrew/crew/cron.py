"""Crontab grammar and schedule triggers: a 5-field expression or an interval, as an APScheduler trigger.

Day-of-week numbers follow crontab (0 or 7 = Sunday, 1-5 = Monday-Friday), not APScheduler
3's own numbering (0 = Monday): :func:`cron_trigger` translates them. Expressions are
checked whole when parsed (field values, ranges, a day-of-month and a day-of-week both
restricted, an expression that never fires), so a bad schedule is refused before it is stored.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

__all__ = ["ScheduleError", "cron_trigger", "make_trigger", "validate_trigger"]

_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


class ScheduleError(ValueError):
    """A schedule that cannot be stored: bad cron expression, bad interval, bad kind or inputs.

    Defined with the grammar, which raises it first; :mod:`quantcrew.crew.schedule` raises it
    for the rest and exports it too.
    """


def _weekday(token: str, expr: str) -> int:
    text = token.strip().lower()
    if text.isdigit() and 0 <= int(text) <= 7:
        return int(text)
    if text[:3] in _WEEKDAYS and len(text) == 3:
        return _WEEKDAYS.index(text)
    raise ScheduleError(f"invalid cron expression {expr!r}: day-of-week {token!r} is not 0-7 or sun..sat")


def _weekdays_for_apscheduler(dow: str, expr: str) -> str:
    """A crontab day-of-week field (0/7 = Sunday) as an APScheduler 3 field (0 = Monday)."""
    if dow in ("*", "?"):
        return "*"
    days: set[int] = set()
    for part in dow.split(","):
        body, slash, step_text = part.partition("/")
        if slash and not (step_text.isdigit() and int(step_text) >= 1):
            raise ScheduleError(f"invalid cron expression {expr!r}: day-of-week step {step_text!r} "
                                "is not a number >= 1")
        step = int(step_text) if slash else 1
        if body == "*":
            first, last = 0, 6
        elif "-" in body:
            low, _, high = body.partition("-")
            first, last = _weekday(low, expr), _weekday(high, expr)
        else:
            first = _weekday(body, expr)
            last = 6 if slash else first
        if first > last:
            raise ScheduleError(f"invalid cron expression {expr!r}: day-of-week range {body!r} runs backwards")
        days.update(day % 7 for day in range(first, last + 1, step))
    return ",".join(str(index) for index in sorted((day - 1) % 7 for day in days))


def cron_trigger(expr: str) -> CronTrigger:
    """A trigger for a standard 5-field crontab expression (minute hour day month day-of-week).

    Day-of-week follows crontab (0 or 7 = Sunday, 1-5 = Monday-Friday). Times are the
    scheduler machine's local time.

    Raises:
        ScheduleError: the expression is malformed; the message names it and what is wrong.
    """
    fields = expr.split()
    if len(fields) != 5:
        raise ScheduleError(f"invalid cron expression {expr!r}: expected 5 fields (minute hour day month "
                            f"day-of-week), got {len(fields)}; e.g. '0 22 * * 1-5' for 22:00 Monday to Friday")
    minute, hour, day, month, dow = fields
    weekdays = _weekdays_for_apscheduler(dow, expr)
    try:
        trigger = CronTrigger(minute=minute, hour=hour, day=None if day == "?" else day, month=month,
                              day_of_week=weekdays)
    except ValueError as exc:
        raise ScheduleError(f"invalid cron expression {expr!r}: {exc}") from exc
    if day not in ("*", "?") and dow not in ("*", "?"):
        raise ScheduleError(f"invalid cron expression {expr!r}: restrict day-of-month or day-of-week, not both "
                            f"(crontab fires when either matches; this scheduler would need both)")
    if trigger.get_next_fire_time(None, datetime.now(trigger.timezone)) is None:
        raise ScheduleError(f"invalid cron expression {expr!r}: it never fires")
    return trigger


def make_trigger(cron: str | None, every_seconds: int | None, *, start: datetime | None = None) -> BaseTrigger:
    """The trigger for a cron expression or an interval, whichever is given.

    Args:
        cron: A 5-field crontab expression.
        every_seconds: An interval in seconds.
        start: When an interval starts counting (first fire ``start + every_seconds``); default now.

    Raises:
        ScheduleError: both or neither given, a bad expression, or an interval under 1 s.
    """
    validate_trigger(cron, every_seconds)
    if cron is not None:
        return cron_trigger(cron)
    assert every_seconds is not None
    return IntervalTrigger(seconds=every_seconds,
                           start_date=None if start is None else start + timedelta(seconds=every_seconds))


def validate_trigger(cron: str | None, every_seconds: int | None) -> None:
    """Check that exactly one of ``cron`` / ``every_seconds`` is given and that it is valid.

    Raises:
        ScheduleError: the message names the bad value.
    """
    if (cron is None) == (every_seconds is None):
        raise ScheduleError("give either a cron expression or every_seconds, not both and not neither")
    if cron is not None:
        cron_trigger(cron)
        return
    if isinstance(every_seconds, bool) or not isinstance(every_seconds, int) or every_seconds < 1:
        raise ScheduleError(f"every_seconds must be a whole number of seconds >= 1, got {every_seconds!r}")
