"""Every error Slipstream raises on purpose, each saying what to check."""

from __future__ import annotations


class SlipstreamError(Exception):
    """Base of the errors below."""


class ConfigError(SlipstreamError):
    """A setting in the environment is missing or malformed."""


class ThreadNotFound(SlipstreamError):
    """The thread has no stream: it was never created (or its id is mistyped)."""

    def __init__(self, thread_id: str) -> None:
        super().__init__(f"thread {thread_id!r} does not exist")
        self.thread_id = thread_id


class ThreadExists(SlipstreamError):
    """A thread with this id was created before."""

    def __init__(self, thread_id: str) -> None:
        super().__init__(f"thread {thread_id!r} already exists")
        self.thread_id = thread_id


class RunNotFound(SlipstreamError):
    """No run with this id was ever requested."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id!r} does not exist")
        self.run_id = run_id


class VersionConflict(SlipstreamError):
    """The thread moved on since the caller read it; re-read and decide again."""

    def __init__(self, thread_id: str, expected: int, actual: int) -> None:
        super().__init__(
            f"thread {thread_id!r} is at version {actual}, not the expected {expected}; "
            "read it again and retry"
        )
        self.expected = expected
        self.actual = actual


class StaleFence(SlipstreamError):
    """The run's lease was taken over: this writer's fencing token is no longer current."""

    def __init__(self, run_id: str, token: int) -> None:
        super().__init__(f"run {run_id!r}: fencing token {token} is stale; another worker owns it")
        self.run_id = run_id


class RunCancelled(SlipstreamError):
    """The run was cancelled; its output is refused from now on."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id!r} was cancelled")
        self.run_id = run_id


class RunFinished(SlipstreamError):
    """The run already reached a terminal state."""

    def __init__(self, run_id: str, status: str) -> None:
        super().__init__(f"run {run_id!r} already finished as {status}")
        self.run_id = run_id
        self.status = status


class RunStatusChanged(SlipstreamError):
    """The run moved to another status while the request was being decided."""

    def __init__(self, run_id: str, status: str) -> None:
        super().__init__(f"run {run_id!r} is now {status}")
        self.run_id = run_id
        self.status = status


class ThreadBusy(SlipstreamError):
    """The thread has an active run and the message asked not to queue behind it."""

    def __init__(self, thread_id: str, run_id: str) -> None:
        super().__init__(
            f"thread {thread_id!r} is busy with run {run_id!r}; send with on_busy='queue' "
            "to wait for it or 'interrupt' to cancel it"
        )
        self.thread_id = thread_id
        self.run_id = run_id


class QueueFull(SlipstreamError):
    """The thread already has as many runs waiting as its queue may hold."""

    def __init__(self, thread_id: str, waiting: int) -> None:
        super().__init__(
            f"thread {thread_id!r} already has {waiting} runs waiting, its limit "
            "(SLIPSTREAM_QUEUE_MAX); nothing was written: send again once some have finished"
        )
        self.thread_id = thread_id
        self.waiting = waiting


class SignalRefused(SlipstreamError):
    """The run will never wait for this signal."""

    def __init__(self, run_id: str, why: str) -> None:
        super().__init__(f"run {run_id!r} takes no such signal: {why}")
        self.run_id = run_id


class SignalInvalid(SlipstreamError):
    """The signal's payload is not what the run takes: nothing was written."""

    def __init__(self, run_id: str, why: str) -> None:
        super().__init__(f"run {run_id!r}: bad signal payload: {why}")
        self.run_id = run_id


class SignalUnawaited(SlipstreamError):
    """The run takes this signal, but is not waiting for this one now."""

    def __init__(self, run_id: str, why: str) -> None:
        super().__init__(f"run {run_id!r} is not waiting for it: {why}")
        self.run_id = run_id


class ProviderError(SlipstreamError):
    """The LLM provider failed; `retryable` says whether trying again can help.

    The message is the whole story, for the server's log only (a provider's body
    can quote the request); `summary` is the short classified text users are shown
    ("overloaded (HTTP 529)"). A provider whose message is already short and safe
    may leave `summary` out.
    """

    def __init__(self, message: str, *, retryable: bool, summary: str | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.summary = summary if summary is not None else message


# What a run's writes meet once its thread was deleted (service/deletion.py): no stream,
# no run hash. Not a failure of the run, which has nowhere left to write: it just ends.
RUN_GONE: tuple[type[SlipstreamError], ...] = (ThreadNotFound, RunNotFound)
