"""What a tool knows about the call it serves: `current_tool()`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

from consumers.tools.errors import NotInToolCall, ToolError
from projections.thread_view import MessageView, ThreadView, branch_messages
from slipstream.keys import derived_hex

# The loop passes the thread's messages as a loader, so only a tool that reads
# them (search_thread) costs a read, and it sees the thread as it is then.
MessagesSource = Callable[[], Awaitable[Sequence[MessageView]]]


@dataclass(frozen=True)
class ToolCall:
    """One call of a tool in a run; the same ids on every attempt give the same key."""

    run_id: str
    thread_id: str
    call_id: str
    messages: MessagesSource | None = None

    @property
    def idempotency_key(self) -> str:
        """Stable across attempts of this call: send it with any side effect the tool makes."""
        return derived_hex("tool-call", self.run_id, self.call_id, digits=32)

    async def thread_messages(self) -> Sequence[MessageView]:
        """The thread's messages, oldest first, as the caller provided them."""
        if self.messages is None:
            raise ToolError("this call was made without the thread's messages")
        return await self.messages()


def messages_of(view: ThreadView, run_id: str | None = None) -> MessagesSource:
    """A messages source over a thread view already in hand; with `run_id`, only the
    run's branch, so a tool finds nothing its model was not shown (an edited-away text)."""

    async def load() -> Sequence[MessageView]:
        return view.messages if run_id is None else branch_messages(view, run_id)

    return load


_CURRENT: ContextVar[ToolCall | None] = ContextVar("slipstream_tool_call", default=None)


def current_tool() -> ToolCall:
    """The call the running tool serves; outside a tool call, NotInToolCall."""
    call = _CURRENT.get()
    if call is None:
        raise NotInToolCall()
    return call
