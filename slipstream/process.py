"""Starting and stopping a role's process.

A start that fails exits at once, non-zero, with one line saying why, after
stopping whatever it had started (`exit_on_startup_error`). SIGTERM and
SIGINT ask every role to stop (`on_signals`); a second signal, or a stop
still going after `STOP_GRACE_S`, ends the process at once: leases and the
embedded redis-server's AOF make that as safe as a kill -9.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from types import FrameType
from typing import NoReturn

from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.errors import ConfigError

log = logging.getLogger("slipstream.process")

STOP_GRACE_S = 10.0
"""The longest a stop may take once asked for; after it the process exits at once."""


class StartupError(Exception):
    """The process cannot start; the message is the one line the operator sees."""


class Stopped(BaseException):
    """A signal came before the roles ran: unwinds the start, stopping what it started.

    A BaseException, like KeyboardInterrupt, so that no `except Exception` keeps it.
    """


class _Signals:
    """What the first signal does, and what a forced exit must not leave behind."""

    def __init__(self) -> None:
        self.prog = "slipstream"
        self.received = 0
        self.stop: Callable[[], None] | None = None
        self.before_forced_exit: list[Callable[[], None]] = []

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.received += 1
        name = signal.Signals(signum).name
        if self.received > 1:
            self.force(f"{name} again: stopping at once")
        log.info("%s: stopping (send it again to stop at once)", name)
        timer = threading.Timer(
            STOP_GRACE_S, self.force, [f"still stopping after {STOP_GRACE_S:g} s: stopping at once"]
        )
        timer.daemon = True
        timer.start()
        if self.stop is None:
            raise Stopped(name)
        self.stop()

    def force(self, why: str) -> NoReturn:
        for cleanup in self.before_forced_exit:
            with contextlib.suppress(Exception):
                cleanup()
        sys.stderr.write(f"{self.prog}: {why}\n")
        sys.stderr.flush()
        os._exit(1)


_signals = _Signals()


def on_signals(prog: str) -> None:
    """Take SIGTERM and SIGINT for this process; call first thing in `main`.

    Until `stopping_with` names how to stop, the first signal raises `Stopped`.
    """
    _signals.prog = prog
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _signals.handle)


@contextlib.contextmanager
def stopping_with(stop: Callable[[], None]) -> Iterator[None]:
    """While inside, the first signal calls `stop` (from the main thread); after it,
    the roles are stopping already and a first signal only starts the grace timer."""
    _signals.stop = stop
    try:
        if _signals.received:  # came while the roles were being built
            stop()
        yield
    finally:
        _signals.stop = _nothing


def _nothing() -> None:
    pass


def before_forced_exit(cleanup: Callable[[], None]) -> None:
    """Run `cleanup` (quick, never blocking) if the process is made to exit at once."""
    _signals.before_forced_exit.append(cleanup)


@contextlib.contextmanager
def exit_on_startup_error(prog: str) -> Iterator[None]:
    """Turn a StartupError into its one line and exit status 1; a signal before the
    roles ran into a clean exit. Whatever the body started it stops on its way out."""
    try:
        yield
    except StartupError as exc:
        sys.exit(f"{prog}: {exc}")
    except Stopped:
        sys.exit(0)


def connect_or_exit(settings: Settings, role: str) -> Backend:
    if settings.redis_url is None:
        sys.exit(
            f"{role}: REDIS_URL is not set. Point it at the Redis the web process uses, "
            "e.g. REDIS_URL=redis://127.0.0.1:6379/0, or run `python -m service` alone "
            "for the embedded system that runs every role in one process."
        )
    return Backend.connect(settings.redis_url, timeout_s=settings.redis_timeout_ms / 1000)


def settings_or_exit() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        sys.exit(f"configuration error: {exc}")


async def until_signalled(body: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `body(stop)`; the first SIGTERM or SIGINT sets `stop`."""
    if signal.getsignal(signal.SIGTERM) != _signals.handle:
        on_signals(_signals.prog)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def set_stop() -> None:
        loop.call_soon_threadsafe(stop.set)

    with stopping_with(set_stop):
        await body(stop)
