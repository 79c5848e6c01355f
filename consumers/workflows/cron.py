"""Cron expressions (minute hour day-of-month month day-of-week), as pure functions.

`next_fire(expr, after)` takes time as an argument, so tests are a table of dates.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
}
_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_NAMES = ("minute", "hour", "day of month", "month", "day of week")


class CronError(ValueError):
    """The expression is not a five-field cron expression."""


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool
    any_weekday: bool

    def day_matches(self, at: datetime) -> bool:
        if at.month not in self.months:
            return False
        day_ok = at.day in self.days
        weekday_ok = (at.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return day_ok and weekday_ok
        return day_ok or weekday_ok  # cron's rule when both are restricted


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
                start, end = (int(v) for v in body.split("-", 1))
            else:
                start = end = int(body)
        except ValueError:
            raise CronError(
                f"{_NAMES[index]} field {text!r} is not a number, range or */step"
            ) from None
        if step < 1 or not (low <= start <= end <= high):
            raise CronError(f"{_NAMES[index]} field {text!r} must lie within {low}-{high}")
        values.update(range(start, end + 1, step))
    if index == 4 and 7 in values:
        values = (values - {7}) | {0}
    return frozenset(values)


def parse(expression: str) -> Cron:
    fields = ALIASES.get(expression.strip(), expression).split()
    if len(fields) != 5:
        raise CronError(
            f"{expression!r} has {len(fields)} fields; cron needs 5: minute hour day month weekday"
        )
    minutes, hours, days, months, weekdays = (_field(text, i) for i, text in enumerate(fields))
    return Cron(
        minutes,
        hours,
        days,
        months,
        weekdays,
        any_day=fields[2] == "*",
        any_weekday=fields[4] == "*",
    )


def next_fire(expression: str | Cron, after: datetime) -> datetime:
    """The first matching minute strictly after `after` (UTC)."""
    cron = parse(expression) if isinstance(expression, str) else expression
    at = after.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    limit = at + timedelta(days=366 * 5)  # five years: enough to reach a Feb 29
    while at < limit:
        if not cron.day_matches(at):
            at = (at + timedelta(days=1)).replace(hour=0, minute=0)
        elif at.hour not in cron.hours:
            at = (at + timedelta(hours=1)).replace(minute=0)
        elif at.minute not in cron.minutes:
            at += timedelta(minutes=1)
        else:
            return at
    raise CronError(f"{expression!r} never fires")
