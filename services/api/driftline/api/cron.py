"""Five-field cron schedules (minute hour day-of-month month day-of-week), in UTC.

Scheduled retraining is written once in the spec and run by two clocks: a
Kubernetes CronJob and the local runtime's timer. Both read the schedule through
this module: `parse` checks it (the spec refuses a bad one), `next_after` is the
local timer's clock, and `from_seconds` turns the older `scheduleSeconds` into the
cron a CronJob needs. Fields take `*`, numbers, `a-b`, lists and `/step`; day of
week runs 0-6 from Sunday (7 is Sunday too). As in cron, when both day fields are
restricted a day matching either one fires.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_NAMES = ("minute", "hour", "day of month", "month", "day of week")


class CronError(ValueError):
    """A cron string that cannot be read; the message names the field."""


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool

    def matches(self, t: datetime) -> bool:
        if t.minute not in self.minutes or t.hour not in self.hours or t.month not in self.months:
            return False
        day_ok = t.day in self.days
        weekday_ok = (t.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return day_ok and weekday_ok
        return day_ok or weekday_ok


def _field(text: str, index: int) -> frozenset[int]:
    low, high = _RANGES[index]
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if body == "*":
                start, end = low, high
            elif "-" in body:
                a, b = body.split("-", 1)
                start, end = int(a), int(b)
            else:
                start = int(body)
                end = high if step_text else start
        except ValueError:
            raise CronError(f"{_NAMES[index]} field {text!r} is not cron") from None
        if step < 1 or not low <= start <= end <= high:
            raise CronError(f"{_NAMES[index]} field {text!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def parse(text: str) -> Cron:
    fields = text.split()
    if len(fields) != 5:
        raise CronError(f"{text!r} has {len(fields)} fields; cron has five")
    parsed = [_field(f, i) for i, f in enumerate(fields)]
    weekdays = frozenset(d % 7 for d in parsed[4])
    return Cron(
        parsed[0], parsed[1], parsed[2], parsed[3], weekdays, fields[2] == "*", fields[4] == "*"
    )


def next_after(cron: Cron, after: datetime) -> datetime:
    """The first minute strictly after `after` (UTC) that the schedule fires at."""
    t = after.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    for _ in range(366 * 24 * 60 * 5):  # a schedule that never fires (Feb 30) ends here
        if cron.matches(t):
            return t
        t += timedelta(minutes=1)
    raise CronError("the schedule never fires")


def from_seconds(seconds: float) -> str:
    """The cron nearest to "every `seconds`": minutes, hours or days that divide evenly
    into the hour, the day or the month are exact; others are rounded to the nearest
    step that does (a CronJob cannot fire more often than once a minute)."""
    minutes = max(1, round(seconds / 60))
    if minutes < 60:
        step = min(
            (d for d in (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30)), key=lambda d: abs(d - minutes)
        )
        return "* * * * *" if step == 1 else f"*/{step} * * * *"
    hours = round(minutes / 60)
    if hours < 24:
        step = min((1, 2, 3, 4, 6, 8, 12), key=lambda d: abs(d - hours))
        return "0 * * * *" if step == 1 else f"0 */{step} * * *"
    days = round(hours / 24)
    return "0 0 * * *" if days <= 1 else f"0 0 */{min(days, 28)} * *"
