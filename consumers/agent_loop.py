"""The agent loop of a chat run: call the model, run the tools it asks for, call it again.

Every model call is followed by its `model.usage`. When the model stops for
`tool_use`, each call is journaled as `tool.called`, run with the registry and
journaled as `tool.result` (all fenced by the attempt's token); the model is then
called again with its tool turn and the results added to the conversation, and
its text streams on into the same reply message.

Durable across attempts: a new attempt replays the run's journal. A call whose
`tool.result` is journaled is not run again, its result is reused; a call
journaled as called with no result (the worker died while it ran) is run again,
so tools run at least once, not exactly once: a tool with side effects should
use `current_tool().idempotency_key`. Calls are matched by call id, so this
relies on the model asking for the same calls again, as the scripted model does
(a real model may ask differently, and its new calls simply run).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterable

from consumers.agents import Agent
from consumers.answer import AnswerWriter, Attempt
from consumers.llm.base import LLM, ChatMessage, Prompt, TextBlock, ToolResultBlock, ToolUseBlock
from consumers.llm.parts import ToolCallPart
from consumers.tools import REGISTRY, CallResult, MessagesSource, ToolCall, ToolRegistry
from consumers.tools.execute import error_result
from slipstream import errors
from slipstream import events as ev
from slipstream.store import EventStore


class ToolRoundsExceeded(Exception):
    """The model kept asking for tools past the bound: the run fails with this reason."""


class TokenBudgetReached(Exception):
    """The thread has spent its token budget: the run fails with this reason, uncalled."""


@dataclasses.dataclass(frozen=True)
class Journal:
    """The tool calls earlier attempts of the run made, by call id."""

    called: dict[str, ev.ToolCalled]
    results: dict[str, ev.ToolResult]

    @classmethod
    def of(cls, events: Iterable[ev.Event]) -> Journal:
        called: dict[str, ev.ToolCalled] = {}
        results: dict[str, ev.ToolResult] = {}
        for event in events:
            if isinstance(event, ev.ToolCalled):
                called[event.call_id] = event
            elif isinstance(event, ev.ToolResult):
                results[event.call_id] = event
        return cls(called, results)

    def result_of(self, call: ToolCallPart) -> CallResult | None:
        called = self.called.get(call.call_id)
        result = self.results.get(call.call_id)
        if called is None or result is None or called.tool != call.name:
            return None
        return CallResult(result=result.result, is_error=result.is_error)


EMPTY_JOURNAL = Journal({}, {})


class AgentLoop:
    def __init__(
        self,
        store: EventStore,
        llm: LLM,
        writer: AnswerWriter,
        agent: Agent,
        *,
        max_rounds: int,
        journal: Journal = EMPTY_JOURNAL,
        registry: ToolRegistry = REGISTRY,
        messages: MessagesSource | None = None,
        token_budget: int | None = None,
        tokens_used: int = 0,
    ) -> None:
        self.store = store
        self.llm = llm
        self.writer = writer
        self.agent = agent
        self.max_rounds = max_rounds
        self.journal = journal
        self.registry = registry
        self.messages = messages
        # The thread's input+output tokens, from its view, kept up to date by this
        # loop's own calls (no other run of the thread calls a model meanwhile).
        self.token_budget = token_budget
        self.tokens_used = tokens_used

    @property
    def attempt(self) -> Attempt:
        return self.writer.attempt

    async def answer(self, prompt: Prompt, cancelled: asyncio.Event) -> list[ev.Event]:
        """Stream the whole answer; returns the events to write with its completion
        (the last model call's usage), so the answer ends in one append.

        Raises `RunCancelled` when `cancelled` is set (between rounds, during a
        model call or a tool), `ToolRoundsExceeded` past the bound,
        `TokenBudgetReached` before a call the thread's token budget leaves no room for.
        """
        history = list(prompt.messages)
        rounds = 0
        while True:
            if cancelled.is_set():
                raise errors.RunCancelled(self.attempt.run_id)
            before = len(self.writer.text)
            await self._call_model(dataclasses.replace(prompt, messages=tuple(history)), cancelled)
            usage = self._usage()
            calls = list(self.writer.tool_calls)
            # An agent without tools answers as it always did: its text is the answer.
            if not (self.agent.tools and self.writer.stop_reason == "tool_use" and calls):
                return usage
            if usage:
                await self.store.append(self.attempt.fenced(usage))
            rounds += 1
            if rounds > self.max_rounds:
                raise ToolRoundsExceeded(
                    f"the model still asked for tools after {self.max_rounds} rounds "
                    f"(SLIPSTREAM_MAX_TOOL_ROUNDS={self.max_rounds})"
                )
            text = "".join(self.writer.text[before:])
            results = [await self._run(call, cancelled) for call in calls]
            history.append(
                ChatMessage(
                    "assistant",
                    (
                        *([TextBlock(text)] if text else []),
                        *(ToolUseBlock(c.call_id, c.name, c.args) for c in calls),
                    ),
                )
            )
            history.append(
                ChatMessage(
                    "user",
                    tuple(
                        ToolResultBlock(c.call_id, r.result, r.is_error)
                        for c, r in zip(calls, results, strict=True)
                    ),
                )
            )

    async def _call_model(self, prompt: Prompt, cancelled: asyncio.Event) -> None:
        budget = self.token_budget
        if budget is not None and self.tokens_used >= budget:
            raise TokenBudgetReached(
                f"thread token budget of {budget} reached ({self.tokens_used} used)"
            )
        try:
            await self.writer.stream(self.llm.stream(prompt), cancelled)
        except errors.ProviderError:
            # The tokens of a failed call were still spent: count them.
            usage = self._usage()
            if usage:
                await self.store.append(self.attempt.fenced(usage))
            raise

    def _usage(self) -> list[ev.Event]:
        part = self.writer.usage
        if part is None:
            return []
        self.tokens_used += part.input_tokens + part.output_tokens
        return [
            ev.ModelUsage(
                run_id=self.attempt.run_id,
                agent=self.attempt.agent,
                model=part.model or self.agent.model or self.llm.name,
                input_tokens=part.input_tokens,
                output_tokens=part.output_tokens,
                cache_read_tokens=part.cache_read_tokens,
                cache_write_tokens=part.cache_write_tokens,
                attempt=max(1, self.attempt.attempt),
            )
        ]

    async def _run(self, call: ToolCallPart, cancelled: asyncio.Event) -> CallResult:
        """One call, journaled: its result from the journal if an attempt before had it."""
        replayed = self.journal.result_of(call)
        if replayed is not None:
            return replayed
        a = self.attempt
        if call.call_id not in self.journal.called:
            await self.store.append(
                a.fenced(
                    [
                        ev.ToolCalled(
                            run_id=a.run_id, call_id=call.call_id, tool=call.name, args=call.args
                        )
                    ]
                )
            )
        result = await self._execute(call, cancelled)
        await self.store.append(
            a.fenced(
                [
                    ev.ToolResult(
                        run_id=a.run_id,
                        call_id=call.call_id,
                        result=result.result,
                        is_error=result.is_error,
                    )
                ]
            )
        )
        return result

    async def _execute(self, call: ToolCallPart, cancelled: asyncio.Event) -> CallResult:
        """Run the call; a call the agent may not make is an error result for the model."""
        agent = self.agent
        if call.name not in agent.tools:
            return error_result(
                f"tool {call.name!r} is not one of {agent.name}'s tools "
                f"(its tools: {', '.join(agent.tools)})"
            )
        tool = self.registry.get(call.name)
        if call.name in agent.approve or (tool is not None and tool.needs_approval):
            # Approval waits are a later piece of the loop: refuse rather than run unasked.
            return error_result(f"tool {call.name!r} needs approval (not supported yet)")
        context = ToolCall(
            run_id=self.attempt.run_id,
            thread_id=self.attempt.thread_id,
            call_id=call.call_id,
            messages=self.messages,
        )
        running = asyncio.ensure_future(self.registry.call(call.name, call.args, context))
        cancel = asyncio.ensure_future(cancelled.wait())
        try:
            await asyncio.wait({running, cancel}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            cancel.cancel()
            if not running.done():
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running
        if not running.cancelled() and running.done() and not cancelled.is_set():
            return running.result()
        raise errors.RunCancelled(self.attempt.run_id)
