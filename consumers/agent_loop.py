"""The agent loop of a chat run: call the model, run the tools it asks for, call it again.

Every model call is followed by its `model.usage`. When the model stops for
`tool_use`, each call is journaled as `tool.called`, run with the registry and
journaled as `tool.result` (all fenced by the attempt's token); the model is then
called again with its tool turn and the results added to the conversation, and
its text streams on into the same reply message.

Durable across attempts: a new attempt replays the run's journal (of its current
life: a retried run starts from scratch). A call whose
`tool.result` is journaled is not run again, its result is reused; a call
journaled as called with no result (the worker died while it ran) is run again,
so tools run at least once, not exactly once: a tool with side effects should
use `current_tool().idempotency_key`. Calls are matched by call id, so this
relies on the model asking for the same calls again, as the scripted model does
(a real model may ask differently, and its new calls simply run).

Hand-offs (`consumers.handoff`): an agent with `handoffs` is offered the `handoff`
tool. A call naming one of them completes the agent's message, journals the
hand-off and goes on with the agent handed to, in a message of its own, with the
whole history (the hand-off call and its result included). A new attempt does not
redo a journaled hand-off: it rebuilds those turns and starts with the last agent
handed to. At most `max_handoffs` per run; asking for one more fails the run.

Approval (`consumers.approval`): a call to a tool in the agent's `approve` (or
declared `needs_approval`) with valid arguments is journaled as `tool.called` and
then raises `AwaitingApproval`, which the runner turns into a park. A new attempt
finds the person's decision in the journal: a yes runs the tool, a no is an error
result for the model with the reason. Calls of one turn are taken in order, so a
turn with several such calls parks once for each. A real model asked again after
the park may give its call a new id: a call to the same tool with the same
arguments as a journaled call waiting for approval is taken as that call.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterable

from consumers import spans
from consumers.agents import Agent, agent_named
from consumers.answer import AnswerWriter, Attempt
from consumers.approval import NO_APPROVALS, Approvals, AwaitingApproval, denied
from consumers.context import repaired
from consumers.handoff import (
    HANDOFF_TOOL,
    HandoffsExceeded,
    JournaledHandoff,
    Target,
    handed_to,
    handoff_message_id,
    handoff_spec,
    journaled_handoffs,
    target_of,
)
from consumers.llm.base import LLM, ChatMessage, Prompt, TextBlock, ToolResultBlock, ToolUseBlock
from consumers.llm.parts import ToolCallPart
from consumers.prompt import tool_specs
from consumers.tools import REGISTRY, CallResult, MessagesSource, ToolCall, ToolRegistry
from consumers.tools.execute import checked_arguments, error_result
from slipstream import errors, metrics, tracing
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
    handoffs: tuple[JournaledHandoff, ...] = ()
    approvals: Approvals = NO_APPROVALS

    @classmethod
    def of(cls, events: Iterable[ev.Event]) -> Journal:
        """The journal of the run's current life: a retry (`run.restarted`) runs it
        from scratch, as the view shows it, so calls, results, hand-offs and
        decisions from before it are not reused.

        The count of approval signals is the one exception: the park compares it
        with the run hash's count of every signal, which a restart does not reset;
        counting fewer would wake the park at once, again and again.
        """
        events = list(events)
        restarts = [i for i, e in enumerate(events) if isinstance(e, ev.RunRestarted)]
        life = events[restarts[-1] + 1 :] if restarts else events
        called: dict[str, ev.ToolCalled] = {}
        results: dict[str, ev.ToolResult] = {}
        for event in life:
            if isinstance(event, ev.ToolCalled):
                called[event.call_id] = event
            elif isinstance(event, ev.ToolResult):
                results[event.call_id] = event
        approvals = dataclasses.replace(Approvals.of(life), received=Approvals.of(events).received)
        return cls(called, results, journaled_handoffs(life), approvals)

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
        max_handoffs: int = 3,
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
        self.max_handoffs = max_handoffs
        self.handoffs = 0  # made in this run so far, journaled ones included
        self.journal = journal
        self.registry = registry
        self.messages = messages
        # The thread's input+output tokens, from its view, kept up to date by this
        # loop's own calls. Runs of other agents of the thread may call a model
        # meanwhile; their tokens are not seen until the next run reads the view, so
        # concurrent runs can overshoot the budget (each checks before its calls).
        self.token_budget = token_budget
        self.tokens_used = tokens_used
        self.taken: set[str] = set()  # journaled call ids this attempt has matched a call to

    @property
    def attempt(self) -> Attempt:
        return self.writer.attempt

    async def answer(self, prompt: Prompt, cancelled: asyncio.Event) -> list[ev.Event]:
        """Stream the whole answer; returns the events to write with its completion
        (the last model call's usage), so the answer ends in one append.

        After a hand-off `self.writer` and `self.agent` are those of the agent
        handed to: the caller completes the answer with `self.writer`.

        Raises `RunCancelled` when `cancelled` is set (between rounds, during a
        model call or a tool), `ToolRoundsExceeded` or `HandoffsExceeded` past
        the bounds, `TokenBudgetReached` before a call the thread's token budget
        leaves no room for.
        """
        history = list(prompt.messages)
        prompt = dataclasses.replace(prompt, tools=(*prompt.tools, *handoff_spec(self.agent)))
        for journaled in self.journal.handoffs:
            history.extend(journaled.turns())
            prompt = self._hand_over(prompt, journaled.event.to_agent)
        rounds = 0
        while True:
            if cancelled.is_set():
                raise errors.RunCancelled(self.attempt.run_id)
            before = len(self.writer.text)
            await self._call_model(dataclasses.replace(prompt, messages=tuple(history)), cancelled)
            usage = self._usage()
            calls = list(self.writer.tool_calls)
            # An agent without tools or hand-offs answers as it always did: its text.
            acts = self.agent.tools or self.agent.handoffs
            if not (acts and self.writer.stop_reason == "tool_use" and calls):
                return usage
            handoff = self._handoff_in(calls)
            if handoff is not None:
                call, target = handoff
                try:
                    results = [await self._run(c, cancelled) for c in calls if c is not call]
                except AwaitingApproval as waiting:
                    waiting.usage = usage  # not written yet: it goes out with the park
                    raise
                turns = self._turns(before, calls, [*results, handed_to(target.agent)], last=call)
                await self._hand_off(call, target, usage)
                history.extend(turns)
                prompt = self._hand_over(prompt, target.agent)
                rounds = 0
                continue
            if usage:
                await self.store.append(self.attempt.fenced(usage))
            rounds += 1
            if rounds > self.max_rounds:
                raise ToolRoundsExceeded(
                    f"the model still asked for tools after {self.max_rounds} rounds "
                    f"(SLIPSTREAM_MAX_TOOL_ROUNDS={self.max_rounds})"
                )
            results = [await self._run(call, cancelled) for call in calls]
            history.extend(self._turns(before, calls, results))

    def _turns(
        self,
        before: int,
        calls: list[ToolCallPart],
        results: list[CallResult],
        last: ToolCallPart | None = None,
    ) -> list[ChatMessage]:
        """The model's turn (its text since `before`, its calls) and the results, in
        order; `last` (the hand-off call) goes last, as it was journaled."""
        text = "".join(self.writer.text[before:])
        if last is not None:
            calls = [*(c for c in calls if c is not last), last]
        return [
            ChatMessage(
                "assistant",
                (
                    *([TextBlock(text)] if text else []),
                    *(ToolUseBlock(c.call_id, c.name, c.args) for c in calls),
                ),
            ),
            ChatMessage(
                "user",
                tuple(
                    ToolResultBlock(c.call_id, r.result, r.is_error)
                    for c, r in zip(calls, results, strict=True)
                ),
            ),
        ]

    def _handoff_in(self, calls: list[ToolCallPart]) -> tuple[ToolCallPart, Target] | None:
        """The turn's first hand-off to an agent this one may hand off to; a call naming
        any other is run as a tool, which gives the model its error back."""
        for call in calls:
            if call.name == HANDOFF_TOOL and self.agent.handoffs:
                target = target_of(self.agent, call)
                if isinstance(target, Target):
                    return call, target
        return None

    async def _hand_off(self, call: ToolCallPart, target: Target, usage: list[ev.Event]) -> None:
        """Complete this agent's message with the hand-off journaled, in one append.

        Past the bound the message is completed without it and the run fails.
        """
        a = self.attempt
        if self.handoffs >= self.max_handoffs:
            await self.writer.complete(lambda _text: usage)
            raise HandoffsExceeded(
                f"{self.agent.name} asked to hand off to {target.agent} after "
                f"{self.handoffs} hand-offs (SLIPSTREAM_MAX_HANDOFFS={self.max_handoffs})"
            )
        result = handed_to(target.agent)
        await self.writer.complete(
            lambda _text: [
                *usage,
                ev.ToolCalled(
                    run_id=a.run_id, call_id=call.call_id, tool=call.name, args=call.args
                ),
                ev.ToolResult(
                    run_id=a.run_id,
                    call_id=call.call_id,
                    result=result.result,
                    is_error=result.is_error,
                ),
                ev.AgentHandoff(
                    run_id=a.run_id,
                    from_agent=self.agent.name,
                    to_agent=target.agent,
                    reason=target.reason,
                ),
            ]
        )

    def _hand_over(self, prompt: Prompt, to_agent: str) -> Prompt:
        """Go on as `to_agent`, in the message of this hand-off: its prompt, its tools."""
        self.handoffs += 1
        self.agent = agent_named(to_agent)
        message_id = handoff_message_id(self.attempt.run_id, self.handoffs)
        attempt = dataclasses.replace(
            self.attempt,
            reply_id=message_id,
            agent=self.agent.name,
            # The run's first text is timed once: by this agent only if none came before it.
            requested_ms=self.attempt.requested_ms if self.writer.seq == 0 else 0,
        )
        flush_ms = round(self.writer.coalescer.interval * 1000)  # the run's setting
        self.writer = AnswerWriter(self.store, attempt, flush_ms)
        return dataclasses.replace(
            prompt,
            system=self.agent.system,
            tools=(*tool_specs(self.agent, self.registry), *handoff_spec(self.agent)),
            model=self.agent.model,
            max_tokens=self.agent.max_tokens,
            temperature=self.agent.temperature,
        )

    async def _call_model(self, prompt: Prompt, cancelled: asyncio.Event) -> None:
        budget = self.token_budget
        if budget is not None and self.tokens_used >= budget:
            raise TokenBudgetReached(
                f"thread token budget of {budget} reached ({self.tokens_used} used)"
            )
        # Never sent broken: a call without its result (or the reverse) is repaired.
        prompt = dataclasses.replace(prompt, messages=repaired(prompt.messages))
        with tracing.model_span(self.llm.name, prompt.model or self.agent.model) as span:
            try:
                await self.writer.stream(self.llm.stream(prompt), cancelled)
            except errors.ProviderError:
                # The tokens of a failed call were still spent: count them.
                usage = self._usage()
                if usage:
                    await self.store.append(self.attempt.fenced(usage))
                raise
            finally:
                spans.record_usage(span, self.writer.usage)

    def _usage(self) -> list[ev.Event]:
        usage = self.writer.usage_event(self.agent.model or self.llm.name)
        if usage is None:
            return []
        self.tokens_used += usage.input_tokens + usage.output_tokens
        return [usage]

    def _journaled_as(self, call: ToolCallPart) -> ToolCallPart:
        """The call under the id the journal knows it by.

        Its own id when journaled (or new); else, for a call that needs approval, the
        id of an earlier attempt's call to the same tool with the same arguments (one
        no other call of this attempt was matched to), so a person's answer reaches
        the call they saw.
        """
        self.taken.add(call.call_id)
        if call.call_id in self.journal.called or not self._needs_approval(call.name):
            return call
        for journaled in self.journal.called.values():
            if (
                journaled.call_id not in self.taken
                and journaled.tool == call.name
                and journaled.args == call.args
            ):
                self.taken.add(journaled.call_id)
                return dataclasses.replace(call, call_id=journaled.call_id)
        return call

    def _needs_approval(self, name: str) -> bool:
        tool = self.registry.get(name)
        return name in self.agent.approve or (tool is not None and tool.needs_approval)

    async def _run(self, asked: ToolCallPart, cancelled: asyncio.Event) -> CallResult:
        """One call, journaled: its result from the journal if an attempt before had it.

        Raises `AwaitingApproval` (after journaling the call) for a call that needs
        a person's yes the journal does not hold yet.
        """
        call = self._journaled_as(asked)
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
        # A name the model made up is not a label: only the agent's own tools are.
        metrics.TOOL_CALLS.labels(
            call.name if call.name in self.agent.tools else metrics.UNKNOWN,
            "error" if result.is_error else "ok",
        ).inc()
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
        if call.name == HANDOFF_TOOL and HANDOFF_TOOL not in agent.tools:
            # Only a hand-off the agent may not make gets here (`_handoff_in`).
            if not agent.handoffs:
                return error_result(f"handoff: {agent.name} cannot hand off to another agent")
            target = target_of(agent, call)
            assert not isinstance(target, Target)
            return target
        if call.name not in agent.tools:
            return error_result(
                f"tool {call.name!r} is not one of {agent.name}'s tools "
                f"(its tools: {', '.join(agent.tools)})"
            )
        if self._needs_approval(call.name):
            tool = self.registry.get(call.name)
            if tool is not None:
                # No person is asked about a call that could not run anyway.
                checked = checked_arguments(tool, call.args)
                if isinstance(checked, CallResult):
                    return checked
            decision = self.journal.approvals.decisions.get(call.call_id)
            if decision is None:
                raise AwaitingApproval(call)
            if not decision.approved:
                return denied(call.name, decision.reason)
        context = ToolCall(
            run_id=self.attempt.run_id,
            thread_id=self.attempt.thread_id,
            call_id=call.call_id,
            messages=self.messages,
        )
        running = asyncio.ensure_future(
            tracing.traced(
                f"execute_tool {call.name}",
                spans.tool_attributes(call, self.attempt.run_id),
                self.registry.call(call.name, call.args, context),
                after=spans.note_tool_result,
            )
        )
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
