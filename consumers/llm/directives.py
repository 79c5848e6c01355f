"""The scripted model's directives, read from the message it answers.

`[[tool NAME {json}]]` asks for a call of tool NAME with that JSON object as its
arguments (`[[tool NAME]]` alone means no arguments); `[[handoff AGENT]]` asks for
a hand-off to AGENT. Both may appear anywhere in the message, any number of times.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from pydantic import JsonValue

from slipstream.errors import ProviderError

_OPENING = re.compile(r"\[\[(tool|handoff)\s+([^\s\[\]{}]+)")
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class ToolDirective:
    name: str
    args: dict[str, JsonValue]


@dataclass(frozen=True)
class HandoffDirective:
    agent: str


Directive = ToolDirective | HandoffDirective


@dataclass(frozen=True)
class Directives:
    found: tuple[Directive, ...]
    text: str  # the message with the directives taken out (one space where each was)

    @property
    def tools(self) -> list[ToolDirective]:
        return [d for d in self.found if isinstance(d, ToolDirective)]

    @property
    def handoff(self) -> HandoffDirective | None:
        return next((d for d in self.found if isinstance(d, HandoffDirective)), None)


def read_directives(message: str) -> Directives:
    """The directives in `message`, in order, and the message without them.

    A message with no directive comes back unchanged. A directive that starts but
    is malformed is a `ProviderError` naming it, rather than text the model ignores.
    """
    found: list[Directive] = []
    kept: list[str] = []
    position = 0
    for match in _OPENING.finditer(message):
        if match.start() < position:  # inside the JSON of a directive already read
            continue
        kind, name = match.groups()
        cursor = _skip_spaces(message, match.end())
        if kind == "tool":
            args: JsonValue = {}
            if not message.startswith("]]", cursor):
                try:
                    args, cursor = _DECODER.raw_decode(message, cursor)
                except json.JSONDecodeError as exc:
                    raise _malformed(
                        message, match.start(), f"arguments are not JSON: {exc}"
                    ) from exc
                if not isinstance(args, dict):
                    raise _malformed(message, match.start(), "arguments must be a JSON object")
                cursor = _skip_spaces(message, cursor)
            assert isinstance(args, dict)
            found.append(ToolDirective(name, args))
        else:
            found.append(HandoffDirective(name))
        if not message.startswith("]]", cursor):
            raise _malformed(message, match.start(), "expected ']]' to close it")
        kept.append(message[position : match.start()])
        position = cursor + 2
    if not found:
        return Directives((), message)
    kept.append(message[position:])
    return Directives(tuple(found), _joined(kept))


def _joined(pieces: list[str]) -> str:
    """The text around the directives, with one space where a directive was."""
    text = ""
    for piece in pieces:
        piece = piece.strip()
        if piece:
            text = f"{text} {piece}" if text else piece
    return text


def _skip_spaces(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at


def _malformed(message: str, start: int, why: str) -> ProviderError:
    excerpt = message[start : start + 60]
    return ProviderError(f"scripted model: bad directive {excerpt!r}: {why}", retryable=False)
