"""One log format for every process, and no secret in any line of it.

Plain text by default; with SLIPSTREAM_LOG_FORMAT=json, one JSON object per line
(for a log shipper), and every line logged while a worker handles a run carries
that run's ids (`thread`, `run`, `attempt`, `worker`), whichever logger wrote it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from contextvars import ContextVar

import orjson

from slipstream.secrets import configured_secrets, masked


class SecretMask(logging.Filter):
    """Masks URL userinfo and configured secrets in a record's message and tracebacks.

    On the root handler, so it sees every line that reaches the log, whatever
    logger wrote it; the record is rewritten (message formatted, exception text
    rendered), so any handler after this one gets the masked text too.
    """

    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__()
        self.secrets = secrets
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: left for the handler to report as logging does
            return True
        record.msg = masked(message, self.secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = masked(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = masked(record.stack_info, self.secrets)
        return True


FORMATS = ("text", "json")
# The ids of the run whose handling this task (and the tasks it starts) is part of.
_RUN: ContextVar[dict[str, str] | None] = ContextVar("slipstream_run", default=None)


@contextlib.contextmanager
def run_context(*, thread: str, run: str, attempt: int, worker: str) -> Iterator[None]:
    """Every line logged inside (by this task and the tasks it starts) names this run."""
    token = _RUN.set({"thread": thread, "run": run, "attempt": str(attempt), "worker": worker})
    try:
        yield
    finally:
        _RUN.reset(token)


class RunIds(logging.Filter):
    """Puts the current run's ids on the record (`record.run_ids`), or {} outside a run."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.run_ids = _RUN.get() or {}
        return True


class JsonLines(logging.Formatter):
    """One JSON object per record: time, level, role, logger, message, the run's ids, and
    the traceback when there is one."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname,
            "role": self.role,
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "run_ids", {}),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        return orjson.dumps(line).decode()


def log_format() -> str:
    """SLIPSTREAM_LOG_FORMAT, checked: a wrong one stops the process with one line."""
    chosen = os.environ.get("SLIPSTREAM_LOG_FORMAT", "text").strip().lower() or "text"
    if chosen not in FORMATS:
        sys.exit(f"SLIPSTREAM_LOG_FORMAT={chosen!r} is not a log format; use 'text' or 'json'")
    return chosen


def setup(role: str) -> None:
    logging.basicConfig(
        level=os.environ.get("SLIPSTREAM_LOG_LEVEL", "INFO").upper(),
        format=f"%(asctime)s %(levelname)-7s {role} %(name)s: %(message)s",
    )
    as_json = log_format() == "json"
    mask = SecretMask(configured_secrets())
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, SecretMask) for f in handler.filters):
            handler.addFilter(mask)
        if not any(isinstance(f, RunIds) for f in handler.filters):
            handler.addFilter(RunIds())
        if as_json:
            handler.setFormatter(JsonLines(role))
