"""What the operator commands (`users`, `inspect`, `replay`, `export`, `import`) share:
the Redis they talk to, and how they say that they cannot."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from service.embedded import EmbeddedRedis
from slipstream.backend import redacted
from slipstream.config import Settings
from slipstream.process import StartupError
from slipstream.supervise import is_redis_fault


@contextlib.contextmanager
def redis_url(settings: Settings, *, needed_for: str = "keep users") -> Iterator[str]:
    """REDIS_URL, or the data dir's embedded redis-server: the running one, else one
    started for the command and stopped after it."""
    if settings.redis_url:
        yield settings.redis_url
        return
    embedded = EmbeddedRedis(settings.data_dir)
    running = embedded.running_url()
    if running is not None:
        yield running
        return
    if not EmbeddedRedis.available():
        raise StartupError(f"no REDIS_URL and no redis-server on PATH: nowhere to {needed_for}")
    url = embedded.start()
    try:
        yield url
    finally:
        embedded.stop()


def say_in_one_line(command: str, url: str, exc: Exception) -> None:
    """A start error or a Redis fault as one line on stderr; anything else is a bug, raised."""
    if isinstance(exc, StartupError):
        print(f"{command}: {exc}", file=sys.stderr)
    elif is_redis_fault(exc):
        print(
            f"{command}: cannot reach Redis at {redacted(url)}: {type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
    else:
        raise exc
