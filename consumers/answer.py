"""Streams one model answer into the thread as coalesced, fenced delta events."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from consumers.coalescer import Coalescer
from consumers.llm.parts import Part, StopPart, TextPart, ToolCallPart, UsagePart
from slipstream import errors, metrics
from slipstream import events as ev
from slipstream.store import Append, EventStore


@dataclass(frozen=True)
class Attempt:
    """What every write of one run attempt carries."""

    thread_id: str
    run_id: str
    reply_id: str
    agent: str
    attempt: int
    token: int
    entry_id: str
    requested_ms: int = 0
    """When the run was asked for (Redis time, ms): its first text is timed from it; 0, not."""

    def fenced(
        self,
        events: list[ev.Event],
        *,
        refuse_if_cancelled: bool = True,
        run_fields: dict[str, str] | None = None,
        timer_at_ms: int | None = None,
        dead_letter: str | None = None,
        release_thread: bool = False,
        signals_seen: tuple[str, int] | None = None,
        ack: bool = False,
    ) -> Append:
        """An append of this attempt: fenced by its token, and a no-op if retried."""
        return Append(
            thread_id=self.thread_id,
            events=events,
            run_id=self.run_id,
            fence=self.token,
            refuse_if_cancelled=refuse_if_cancelled,
            batch_id=events[0].event_id if events else None,
            run_fields=run_fields or {},
            timer_at_ms=timer_at_ms,
            dead_letter=dead_letter,
            release_thread=release_thread,
            signals_seen=signals_seen,
            ack=self.entry_id if ack else None,
        )


class AnswerWriter:
    """Appends deltas for one attempt; the last delta goes out with the completion.

    Only text reaches the thread. The model's other parts of the last `stream` call
    are kept for the caller: `tool_calls` (in order), `usage` (also when the call
    failed after starting) and `stop_reason` (None until the model ended its turn).
    """

    def __init__(self, store: EventStore, attempt: Attempt, flush_ms: int) -> None:
        self.store = store
        self.attempt = attempt
        self.coalescer = Coalescer(flush_ms)
        self.seq = 0
        self.text: list[str] = []
        self.events_written = 0
        self._first_text_timed = False
        self.tool_calls: list[ToolCallPart] = []
        self.usage: UsagePart | None = None
        self.stop_reason: str | None = None

    def usage_event(self, default_model: str) -> ev.ModelUsage | None:
        """The last model call's tokens as this attempt's event (None if it gave none).

        Counted in the metrics here, once per call: the tokens were spent whether or
        not the event that records them is written.
        """
        part = self.usage
        if part is None:
            return None
        usage = ev.ModelUsage(
            run_id=self.attempt.run_id,
            agent=self.attempt.agent,
            model=part.model or default_model,
            input_tokens=part.input_tokens,
            output_tokens=part.output_tokens,
            cache_read_tokens=part.cache_read_tokens,
            cache_write_tokens=part.cache_write_tokens,
            attempt=max(1, self.attempt.attempt),
        )
        metrics.model_used(usage.agent, usage.model, usage.input_tokens, usage.output_tokens)
        return usage

    def _delta(self, text: str) -> ev.MessageDelta:
        self.seq += 1
        a = self.attempt
        return ev.MessageDelta(
            run_id=a.run_id,
            message_id=a.reply_id,
            seq=self.seq,
            text=text,
            attempt=a.attempt,
            agent=a.agent if self.seq == 1 else None,
        )

    async def _write(
        self, events: list[ev.Event], run_fields: dict[str, str] | None = None, ack: bool = False
    ) -> None:
        await self.store.append(self.attempt.fenced(events, run_fields=run_fields, ack=ack))
        self.events_written += len(events)
        if self.seq and not self._first_text_timed:
            self._first_text_timed = True
            if self.attempt.requested_ms:
                metrics.FIRST_TOKEN_SECONDS.labels(self.attempt.agent or metrics.UNKNOWN).observe(
                    metrics.seconds_since_ms(self.attempt.requested_ms)
                )

    async def stream(self, parts: AsyncIterator[Part], cancelled: asyncio.Event) -> None:
        """Consume the model's parts, flushing text at sentence ends or the deadline.

        Raises `RunCancelled` as soon as `cancelled` is set, even between two
        parts: the model stream is closed rather than waited on.

        A task of its own reads the model into an inbox, and this loop wakes once
        for whatever arrived meanwhile, not once per part: a burst of parts (a
        network read holding several events, or a model that is fast next to a
        busy worker) costs one wake-up and goes out in one delta, and the model is
        read on while a delta is being written.
        """
        self.tool_calls, self.usage, self.stop_reason = [], None, None
        iterator = aiter(parts)
        inbox: deque[Part] = deque()
        wake = asyncio.Event()

        async def read_model() -> None:
            async for part in iterator:
                inbox.append(part)
                wake.set()

        reading = asyncio.create_task(read_model())
        reading.add_done_callback(lambda _: wake.set())
        watching = asyncio.create_task(cancelled.wait())
        watching.add_done_callback(lambda _: wake.set())
        try:
            while True:
                ended = reading.done()  # before draining: nothing can arrive after it ends
                while inbox:  # what came before a cancel is kept (its tool calls too)
                    self._take(inbox.popleft())
                if cancelled.is_set():
                    raise errors.RunCancelled(self.attempt.run_id)
                if ended:
                    reading.result()  # the model's error, after every part it gave before it
                    return
                if self.coalescer.due():
                    await self._flush()
                    continue
                wake.clear()
                if inbox or reading.done() or cancelled.is_set():
                    continue
                deadline = self.coalescer.deadline()
                timeout = None if deadline is None else max(0.0, deadline - self.coalescer.clock())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await wake.wait()
        finally:
            watching.cancel()
            if not reading.done():
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reading
            elif not reading.cancelled():
                # Left by a cancel or a failed write after the model raised: its error
                # is not this call's to raise, and is not left unretrieved (logged) either.
                reading.exception()
            if hasattr(iterator, "aclose"):
                await iterator.aclose()

    def _take(self, part: Part) -> None:
        if isinstance(part, TextPart):
            self.text.append(part.text)
            self.coalescer.add(part.text)
        elif isinstance(part, ToolCallPart):
            self.tool_calls.append(part)
        elif isinstance(part, UsagePart):
            self.usage = part
        elif isinstance(part, StopPart):
            self.stop_reason = part.reason
        else:
            raise TypeError(f"model stream yielded {type(part).__name__}, not a part")

    async def _flush(self) -> None:
        text = self.coalescer.take()
        try:
            await self._write([self._delta(text)])
        except BaseException:
            # Not written: the sequence number and the text are still to be used.
            self.seq -= 1
            self.coalescer.restore(text)
            raise

    def held_back(self) -> list[ev.Event]:
        """A delta with the text not yet written, if any: it goes out with the run's end."""
        return [self._delta(self.coalescer.take())] if self.coalescer.pending else []

    async def complete(
        self,
        then: Callable[[str], list[ev.Event]],
        *,
        run_fields: dict[str, str] | None = None,
        ack: bool = False,
    ) -> str:
        """Write the held-back tail, the full text and what follows it, in one append."""
        a = self.attempt
        full = "".join(self.text)
        held = self.coalescer.take() if self.coalescer.pending else ""
        events: list[ev.Event] = [self._delta(held)] if held else []
        events.append(
            ev.MessageCompleted(
                run_id=a.run_id, message_id=a.reply_id, text=full, agent=a.agent, seq=self.seq
            )
        )
        try:
            await self._write([*events, *then(full)], run_fields=run_fields, ack=ack)
        except BaseException:
            if held:  # not written: it goes out with whatever ends the run instead
                self.seq -= 1
                self.coalescer.restore(held)
            raise
        return full
