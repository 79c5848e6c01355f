"""The answer writer on a stream of parts: only text reaches the thread; tool calls, usage
and the stop reason are kept for the runner; cancel still lands between any two parts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from consumers.answer import AnswerWriter, Attempt
from consumers.llm.parts import Part, StopPart, TextPart, ToolCallPart, UsagePart
from service import commands
from slipstream import errors
from slipstream import events as ev
from slipstream.errors import ProviderError
from slipstream.store import EventStore

CALL = ToolCallPart("call_1", "calculator", {"expression": "2+2"})
USAGE = UsagePart(40, 7, 30, 2, "model-x")


async def attempt_for(store: EventStore) -> Attempt:
    """A run that this test holds with token 1, as a worker's claim would leave it."""
    thread_id, _ = await commands.create_thread(store)
    sent = await commands.send_message(store, thread_id, "hi", "assistant")
    await store.redis.hset(store.keys.partition(thread_id).run(sent.run_id), "token", "1")
    return Attempt(thread_id, sent.run_id, "m-reply", "assistant", 1, 1, "")


async def from_list(parts: list[Part]) -> AsyncIterator[Part]:
    for part in parts:
        yield part


async def written(store: EventStore, attempt: Attempt) -> list[ev.Event]:
    return [s.event for s in await store.read(attempt.thread_id)][3:]  # after the run's request


async def test_only_text_is_written_and_the_other_parts_are_kept(store: EventStore) -> None:
    attempt = await attempt_for(store)
    writer = AnswerWriter(store, attempt, flush_ms=50)
    parts: list[Part] = [
        TextPart("Let me add. "),
        CALL,
        TextPart("Done"),
        USAGE,
        StopPart("tool_use"),
    ]

    await writer.stream(from_list(parts), asyncio.Event())
    full = await writer.complete(lambda _text: [ev.RunCompleted(run_id=attempt.run_id)])

    assert full == "Let me add. Done"
    assert (writer.tool_calls, writer.usage, writer.stop_reason) == ([CALL], USAGE, "tool_use")
    events = await written(store, attempt)
    assert {e.type for e in events} == {"message.delta", "message.completed", "run.completed"}
    assert "".join(e.text for e in events if isinstance(e, ev.MessageDelta)) == full


async def test_cancel_lands_after_a_tool_call_and_closes_the_model_stream(
    store: EventStore,
) -> None:
    attempt = await attempt_for(store)
    writer = AnswerWriter(store, attempt, flush_ms=50)
    cancelled, closed = asyncio.Event(), asyncio.Event()

    async def model() -> AsyncIterator[Part]:
        try:
            yield CALL
            cancelled.set()  # the cancel arrives while the model is between parts
            await asyncio.Event().wait()
            yield TextPart("never")
        finally:
            closed.set()

    with pytest.raises(errors.RunCancelled):
        await writer.stream(model(), cancelled)

    assert closed.is_set()
    assert writer.tool_calls == [CALL] and writer.stop_reason is None
    assert writer.text == []


async def test_the_usage_of_a_call_that_failed_is_kept(store: EventStore) -> None:
    writer = AnswerWriter(store, await attempt_for(store), flush_ms=50)

    async def model() -> AsyncIterator[Part]:
        yield TextPart("partial")
        yield USAGE
        raise ProviderError("dropped", retryable=True)

    with pytest.raises(ProviderError):
        await writer.stream(model(), asyncio.Event())

    assert writer.usage == USAGE and writer.stop_reason is None


async def test_each_stream_call_starts_with_nothing_kept(store: EventStore) -> None:
    writer = AnswerWriter(store, await attempt_for(store), flush_ms=50)
    await writer.stream(from_list([CALL, USAGE, StopPart("tool_use")]), asyncio.Event())
    await writer.stream(from_list([TextPart("Next."), StopPart("end_turn")]), asyncio.Event())

    assert (writer.tool_calls, writer.usage, writer.stop_reason) == ([], None, "end_turn")


async def test_a_model_yielding_bare_text_is_a_clear_error(store: EventStore) -> None:
    writer = AnswerWriter(store, await attempt_for(store), flush_ms=50)

    async def old_style() -> AsyncIterator[str]:
        yield "text"

    with pytest.raises(TypeError, match="yielded str, not a part"):
        await writer.stream(old_style(), asyncio.Event())  # type: ignore[arg-type]


async def test_a_burst_of_parts_on_a_busy_worker_is_one_write_not_one_per_sentence(
    store: EventStore,
) -> None:
    """However busy the worker (here every turn of its loop takes 5 ms, as under many runs
    at once), parts the model has ready together are taken together: a 20-sentence answer
    given at once goes out whole with the completion, not as a delta per window."""
    attempt = await attempt_for(store)
    writer = AnswerWriter(store, attempt, flush_ms=10)
    sentences = [TextPart(f"Sentence {i}. ") for i in range(20)]
    busy = True

    def hog() -> None:
        time.sleep(0.005)  # another run's work: it holds the loop, and the clock moves
        if busy:
            asyncio.get_running_loop().call_soon(hog)

    asyncio.get_running_loop().call_soon(hog)
    try:
        await writer.stream(from_list([*sentences, StopPart("end_turn")]), asyncio.Event())
    finally:
        busy = False
    await writer.complete(lambda _text: [ev.RunCompleted(run_id=attempt.run_id)])

    deltas = [e for e in await written(store, attempt) if isinstance(e, ev.MessageDelta)]
    assert len(deltas) == 1  # the completion's, with all of it
    assert deltas[0].text == "".join(part.text for part in sentences)
