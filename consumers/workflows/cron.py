"""Cron expressions, UTC, with the semantics of Vixie/Debian cron (by cronsim).

Five fields (minute hour day-of-month month day-of-week), names (`MON`, `JAN`),
steps from a start (`5/10` is 5, 15, ..., 55), `@hourly`-style aliases. The
day rule is Vixie cron's: if the day-of-month or the day-of-week field starts
with `*` (`*/2` included), a day must match both; if neither does, either.
`next_fire(expr, after)` takes time as an argument, so tests are a table of dates.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from cronsim import CronSim, CronSimError

# As Vixie cron has them; @reboot means nothing to a schedule that outlives processes.
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_WEEKDAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day-of-month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 7, _WEEKDAYS),
)
# Matches repeat every 400 years; cronsim gives up after 50 without one. The rarest
# expressions that fire at all (a given weekday on Feb 29) go at most 40 years between.
_REFERENCE = datetime(2000, 1, 1, tzinfo=UTC)


class CronError(ValueError):
    """The expression is not a cron expression, or one that never fires."""


@dataclass(frozen=True)
class Cron:
    expression: str  # as given
    fields: str  # the five fields, an alias expanded


@functools.lru_cache(maxsize=256)
def parse(expression: str) -> Cron:
    """Check the expression, and that it fires at all."""
    text = expression.strip()
    if text.startswith("@"):
        expanded = ALIASES.get(text.lower())
        if expanded is None:
            raise CronError(f"cron {expression!r}: unknown alias; known: {', '.join(ALIASES)}")
        text = expanded
    parts = text.split()
    if len(parts) != 5:
        fields = "1 field" if len(parts) == 1 else f"{len(parts)} fields"
        raise CronError(
            f"cron {expression!r} has {fields}; cron needs 5: "
            "minute hour day-of-month month day-of-week"
        )
    for index, part in enumerate(parts):
        problem = _problem(index, part)
        if problem:
            raise CronError(f"cron {expression!r}: {problem}")
    cron = Cron(expression, text)
    try:
        CronSim(text, _REFERENCE)
    except CronSimError as exc:
        if str(exc) != "Bad day-of-month":
            raise CronError(f"cron {expression!r}: {exc}") from None
        # The field is well formed, so cronsim objects to the combination: days of
        # the month that none of the months has, with the days ANDed.
        raise CronError(
            f"cron {expression!r} never fires: day {parts[2]} does not occur in month {parts[3]}"
        ) from None
    if _next(text, _REFERENCE) is None:
        raise CronError(f"cron {expression!r} never fires: no day matches all its fields")
    return cron


def next_fire(expression: str | Cron, after: datetime) -> datetime:
    """The first matching minute strictly after `after` (UTC)."""
    cron = parse(expression) if isinstance(expression, str) else expression
    found = _next(cron.fields, after.astimezone(UTC))
    if found is None:
        raise CronError(f"cron {cron.expression!r} never fires in the 50 years after {after}")
    return found


def _next(fields: str, after: datetime) -> datetime | None:
    try:
        return next(CronSim(fields, after))
    except StopIteration:
        return None


def _problem(index: int, text: str) -> str | None:
    """What is wrong with one field, said more plainly than cronsim's "Bad minute"."""
    name, low, high, names = _FIELDS[index]
    for term in text.split(","):
        body, slash, step = term.partition("/")
        if slash and not (step.isdigit() and int(step) >= 1):
            return f"{name} step {step!r} in {term!r} must be a whole number of 1 or more"
        if index == 2 and body.upper() in ("L", "LW"):  # the last day, the last weekday
            continue
        if index == 4 and (nth := re.search(r"#(.*)$", body)):
            if nth[1] not in ("1", "2", "3", "4", "5"):
                return f"{name} {term!r}: the nth weekday must be #1 to #5"
            body = body[: nth.start()]
        elif index == 4 and re.fullmatch(r".+[lL]", body):  # the last such weekday
            body = body[:-1]
        if body == "*":
            continue
        ends = body.split("-")
        if len(ends) > 2 or "" in ends:
            return f"{name} {term!r} is not a value, a range (a-b), * or a step (x/n)"
        values = []
        for end in ends:
            if end.upper() in names:
                values.append(names.index(end.upper()) + low)
            elif not end.isdigit():
                named = f" or a name ({names[0]}-{names[-1]})" if names else ""
                return f"{name} {end!r} is not a number{named}"
            elif not low <= int(end) <= high:
                return f"{name} {int(end)} is out of range {low}-{high}"
            else:
                values.append(int(end))
        if len(values) == 2 and values[0] > values[1]:
            return f"{name} range {body!r} runs backwards"
    return None
