"""Decides when streamed text becomes a delta event.

One event per token would flood the streams; holding text back makes the
answer feel slow. So text is flushed at a sentence end, but never more often
than once per interval, and no text waits longer than the interval.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

_SENTENCE_END = re.compile(r"[.!?:;]\s*$|\n\s*$")


class Coalescer:
    def __init__(self, interval_ms: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval_ms / 1000
        self.clock = clock
        self._buffer: list[str] = []
        self._oldest: float | None = None
        self._last_flush = float("-inf")

    def add(self, text: str) -> None:
        if not text:
            return
        if self._oldest is None:
            self._oldest = self.clock()
        self._buffer.append(text)

    @property
    def pending(self) -> bool:
        return bool(self._buffer)

    def deadline(self) -> float | None:
        """When the buffered text must go out at the latest."""
        return None if self._oldest is None else self._oldest + self.interval

    def due(self) -> bool:
        if self._oldest is None:
            return False
        now = self.clock()
        if now >= self._oldest + self.interval:
            return True
        return now - self._last_flush >= self.interval and bool(
            _SENTENCE_END.search(self._buffer[-1])
        )

    def restore(self, text: str) -> None:
        """Put taken text back in front, when writing it failed."""
        if text:
            self._buffer.insert(0, text)
            if self._oldest is None:
                self._oldest = self.clock()

    def take(self) -> str:
        text = "".join(self._buffer)
        self._buffer.clear()
        self._oldest = None
        self._last_flush = self.clock()
        return text
