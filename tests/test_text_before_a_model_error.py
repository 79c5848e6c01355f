"""The text a model gave before its error is kept, whichever way the run then ends."""

from __future__ import annotations

from collections.abc import AsyncIterator

from consumers.llm.base import Prompt
from consumers.llm.parts import Part, TextPart
from consumers.worker import Worker
from projections.views import ViewStore
from service import commands
from slipstream.config import Settings
from slipstream.errors import ProviderError
from slipstream.store import EventStore


class CancelledAsItFails:
    """Gives some text, then fails retryably just as a cancel of its run is requested
    (flagged in the run hash, where the retry's append meets it)."""

    name = "cancelled-as-it-fails"

    def __init__(self, store: EventStore, thread_id: str, run_id: str) -> None:
        self.run_key = store.keys.partition(thread_id).run(run_id)
        self.redis = store.redis

    async def stream(self, prompt: Prompt) -> AsyncIterator[Part]:
        yield TextPart("Some text before ")
        await self.redis.hset(self.run_key, "cancel", "1")
        raise ProviderError("overloaded", retryable=True)


async def test_text_before_an_error_stays_when_a_cancel_wins_over_the_retry(
    store: EventStore, settings: Settings
) -> None:
    thread_id, _ = await commands.create_thread(store)
    sent = await commands.send_message(store, thread_id, "hello", "assistant")
    llm = CancelledAsItFails(store, thread_id, sent.run_id)
    await Worker(store.backend, store, llm, settings).run_once()

    view = await ViewStore(store).current(thread_id)
    run = view.runs[sent.run_id]
    assert run.status == "cancelled"
    reply = view.message(run.reply_id)
    assert reply is not None and reply.content == "Some text before "
