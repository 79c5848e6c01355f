"""How a thread view is laid out in its Redis hash: one field per part.

    last      id of the last event folded in (the compare-and-set checkpoint)
    schema    SCHEMA_VERSION the fields were written with
    meta      the thread-level fields (title, version, problems, ...) as JSON
    m:<n>     message n, 0-based in thread order, as JSON
    r:<n>     run n, in order of request, as JSON

Messages and runs are only ever appended to a view, so a position names one
for good and the order needs no field of its own. An event rewrites `last`,
`meta` and the few `m:`/`r:` fields it changed; `meta` is bounded (the
problems kept are), so what one event writes does not grow with the thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import islice

from pydantic import ValidationError

from projections.thread_view import SCHEMA_VERSION, Changes, MessageView, RunView, ThreadView

_META_EXCLUDE = {"messages", "runs"}


class Unparseable(ValueError):
    """A stored view that cannot be used as it is: another schema, or corrupt."""


def decode(fields: Mapping[str, str]) -> tuple[ThreadView, dict[str, int]]:
    """The view, and the field number of each run, from the hash's fields."""
    schema = fields.get("schema")
    if schema != str(SCHEMA_VERSION):
        raise Unparseable(f"schema {schema or 'none'}, expected {SCHEMA_VERSION}")
    meta = fields.get("meta")
    if meta is None:
        raise Unparseable("no meta field")
    messages: dict[int, str] = {}
    runs: dict[int, str] = {}
    try:
        view = ThreadView.model_validate_json(meta)
        for name, raw in fields.items():
            kind, _, number = name.partition(":")
            if kind == "m":
                messages[int(number)] = raw
            elif kind == "r":
                runs[int(number)] = raw
        if set(messages) != set(range(len(messages))) or set(runs) != set(range(len(runs))):
            raise Unparseable("message or run fields are not numbered 0..n-1")
        view.messages = [MessageView.model_validate_json(messages[n]) for n in range(len(messages))]
        numbers: dict[str, int] = {}
        for n in range(len(runs)):
            run = RunView.model_validate_json(runs[n])
            if run.id in numbers:
                raise Unparseable(f"run {run.id} is stored twice")
            view.runs[run.id] = run
            numbers[run.id] = n
    except ValidationError as exc:
        raise Unparseable(f"a field the model rejects: {exc.errors()[0]['msg']}") from exc
    except Unparseable:
        raise
    except ValueError as exc:  # a field name whose number is not one
        raise Unparseable(str(exc)) from exc
    if view.last_event_id != fields.get("last"):
        raise Unparseable("meta and last name different events")
    return view, numbers


def encode(
    view: ThreadView, numbers: dict[str, int], changes: Changes | None
) -> tuple[list[str], list[RunView]]:
    """Field/value pairs to write, and the runs whose summaries change.

    With `changes` None everything is written and `numbers` is filled afresh;
    otherwise new runs get the next numbers (they are the last in `view.runs`).
    """
    if changes is None:
        numbers.clear()
        numbers.update((run_id, n) for n, run_id in enumerate(view.runs))
        message_numbers: list[int] = list(range(len(view.messages)))
        changed_runs = list(view.runs.values())
    else:
        message_numbers = sorted(changes.messages)
        fresh = list(islice(reversed(view.runs), len(view.runs) - len(numbers)))
        for run_id in reversed(fresh):
            numbers[run_id] = len(numbers)
        changed_runs = [view.runs[run_id] for run_id in sorted(changes.runs)]
    pairs = ["meta", view.model_dump_json(exclude=_META_EXCLUDE)]
    for n in message_numbers:
        pairs += (f"m:{n}", view.messages[n].model_dump_json())
    for run in changed_runs:
        pairs += (f"r:{numbers[run.id]}", run.model_dump_json())
    return pairs, changed_runs
