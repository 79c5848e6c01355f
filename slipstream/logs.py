"""One log format for every process, and no secret in any line of it."""

from __future__ import annotations

import logging
import os

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


def setup(role: str) -> None:
    logging.basicConfig(
        level=os.environ.get("SLIPSTREAM_LOG_LEVEL", "INFO").upper(),
        format=f"%(asctime)s %(levelname)-7s {role} %(name)s: %(message)s",
    )
    mask = SecretMask(configured_secrets())
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, SecretMask) for f in handler.filters):
            handler.addFilter(mask)
