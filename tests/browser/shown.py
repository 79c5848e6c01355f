"""What a reader sees of an answer's markdown, to compare with a page's inner text.

The chat renders answers as markdown: list markers, code fences and backslash
escapes are markup, not text. This covers what the scripted model writes
(paragraphs, `- ` lists, fenced code, escaped punctuation in its quote), also
cut short mid-stream, not markdown at large.
"""

from __future__ import annotations

import re

_ESCAPED = re.compile(r"\\([!-/:-@\[-`{-~])")  # CommonMark: any ASCII punctuation
_BULLET = re.compile(r"^- |^-$")


def shown(markdown: str) -> str:
    """The words of `markdown` as the page shows them, whitespace collapsed."""
    lines: list[str] = []
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif in_code:
            lines.append(line)  # code is shown as written
        else:
            lines.append(_ESCAPED.sub(r"\1", _BULLET.sub("", line)))
    return " ".join(" ".join(lines).split())
