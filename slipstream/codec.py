"""Turns events into flat stream entries and back.

Decoding never raises: an entry that cannot be read becomes an `Unreadable`
that names its stream key and id, so readers report it and move on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from slipstream.events import EVENT_ADAPTER, SCHEMA_VERSION, Event

log = logging.getLogger("slipstream.codec")

# Envelope fields stored flat beside the JSON body; the body holds the rest.
_FLAT = {"event_id": "eid", "run_id": "run", "agent": "agent"}


@dataclass(frozen=True)
class Unreadable:
    """A stream entry that is not a known event of a known schema version."""

    stream: str
    id: str
    reason: str
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def type(self) -> str:
        return "unreadable"

    def as_json(self) -> dict[str, Any]:
        return {
            "type": "unreadable",
            "stream": self.stream,
            "id": self.id,
            "reason": self.reason,
            "fields": self.fields,
        }


def encode(event: Event) -> dict[str, str]:
    data = event.model_dump(mode="json", exclude_none=True)
    entry: dict[str, str] = {"type": data.pop("type"), "v": str(SCHEMA_VERSION)}
    for name, flat in _FLAT.items():
        value = data.pop(name, None)
        if value is not None:
            entry[flat] = str(value)
    entry["body"] = orjson.dumps(data).decode()
    return entry


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def decode(stream: str, entry_id: str, raw: Mapping[Any, Any]) -> Event | Unreadable:
    fields = {_text(k): _text(v) for k, v in raw.items()}
    try:
        version = int(fields.get("v", "0"))
    except ValueError:
        return _unreadable(stream, entry_id, f"bad schema version {fields.get('v')!r}", fields)
    if version != SCHEMA_VERSION:
        return _unreadable(
            stream, entry_id, f"schema version {version}, this code reads {SCHEMA_VERSION}", fields
        )
    try:
        body = orjson.loads(fields.get("body", "{}"))
    except orjson.JSONDecodeError as exc:
        return _unreadable(stream, entry_id, f"body is not JSON: {exc}", fields)
    if not isinstance(body, dict):
        return _unreadable(stream, entry_id, "body is not a JSON object", fields)
    body["type"] = fields.get("type")
    for name, flat in _FLAT.items():
        if flat in fields:
            body[name] = fields[flat]
    try:
        return EVENT_ADAPTER.validate_python(body)
    except ValidationError as exc:
        reason = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'entry'}: {err['msg']}"
            for err in exc.errors()
        )
        return _unreadable(stream, entry_id, reason, fields)


def _unreadable(stream: str, entry_id: str, reason: str, fields: dict[str, str]) -> Unreadable:
    log.warning("unreadable entry %s %s: %s", stream, entry_id, reason)
    return Unreadable(stream=stream, id=entry_id, reason=reason, fields=fields)


def event_json(event: Event | Unreadable) -> dict[str, Any]:
    if isinstance(event, Unreadable):
        return event.as_json()
    return event.model_dump(mode="json", exclude_none=True)


def delta_json(fields: Mapping[str, str]) -> dict[str, Any] | None:
    """A well-formed message.delta entry as event JSON, without building the model.

    Deltas are most of what fans out to sockets, so they skip pydantic when
    they hold exactly what `encode` writes; anything else returns None and
    goes through `decode`, which reports what is wrong.
    """
    if fields.get("type") != "message.delta" or fields.get("v") != str(SCHEMA_VERSION):
        return None
    try:
        body = orjson.loads(fields.get("body", ""))
    except orjson.JSONDecodeError:
        return None
    if not (
        isinstance(body, dict)
        and isinstance(body.get("seq"), int)
        and isinstance(body.get("text"), str)
        and isinstance(body.get("message_id"), str)
        and isinstance(body.get("attempt", 1), int)
        and "eid" in fields
        and "run" in fields
        and set(body) <= _DELTA_BODY
    ):
        return None
    event: dict[str, Any] = {
        "type": "message.delta",
        "event_id": fields["eid"],
        "run_id": fields["run"],
        **body,
    }
    if "agent" in fields:
        event["agent"] = fields["agent"]
    return event


_DELTA_BODY = frozenset({"message_id", "seq", "text", "attempt"})
