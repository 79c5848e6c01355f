"""The scripted model: its usual answer, DESIGN.md's directives, the classifier, usage."""

from __future__ import annotations

import pytest
from pydantic import JsonValue

from consumers.llm.base import (
    ChatMessage,
    Classification,
    Prompt,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from consumers.llm.directives import HandoffDirective, ToolDirective, read_directives
from consumers.llm.parts import Part, StopPart, TextPart, ToolCallPart, UsagePart
from consumers.llm.scripted import ScriptedLLM, prompt_words, scripted_reply
from slipstream.errors import ProviderError

WORDS = 12


def asked(question: str, *history: ChatMessage, system: str = "") -> Prompt:
    """The prompt that answers `question`, with this answer's tool turns after it."""
    return Prompt(
        system=system, messages=(ChatMessage("user", question), *history), question=question
    )


async def parts_of(prompt: Prompt) -> list[Part]:
    return [part async for part in ScriptedLLM(words=WORDS, delay_ms=0).stream(prompt)]


def text_of(parts: list[Part]) -> str:
    return "".join(p.text for p in parts if isinstance(p, TextPart))


def calls_of(parts: list[Part]) -> list[ToolCallPart]:
    return [p for p in parts if isinstance(p, ToolCallPart)]


def back(calls: list[ToolCallPart], *results: JsonValue) -> tuple[ChatMessage, ChatMessage]:
    """The assistant turn that made `calls` and the user turn with their results."""
    return (
        ChatMessage("assistant", tuple(ToolUseBlock(c.call_id, c.name, c.args) for c in calls)),
        ChatMessage(
            "user",
            tuple(ToolResultBlock(c.call_id, r) for c, r in zip(calls, results, strict=True)),
        ),
    )


async def test_without_directives_it_answers_as_before_then_usage_and_end_turn() -> None:
    prompt = asked("What is a stream?", system="Be brief.")
    parts = await parts_of(prompt)

    reply = scripted_reply("What is a stream?", WORDS)
    assert text_of(parts) == reply
    assert all(isinstance(p, TextPart) for p in parts[:-2])
    assert parts[-2:] == [
        UsagePart(2 + 4, len(reply.split()), 0, 0, "scripted"),
        StopPart("end_turn"),
    ]


async def test_tool_directives_make_a_first_turn_of_calls_in_order_with_no_text() -> None:
    question = 'Sum [[tool calculator {"expression": "2+2"}]] and [[tool now {"zone":"UTC"}]] it'
    parts = await parts_of(asked(question))

    calls = calls_of(parts)
    assert [(c.name, c.args) for c in calls] == [
        ("calculator", {"expression": "2+2"}),
        ("now", {"zone": "UTC"}),
    ]
    assert len({c.call_id for c in calls}) == 2
    assert parts == [
        *calls,
        UsagePart(prompt_words(asked(question)), 0, 0, 0, "scripted"),
        StopPart("tool_use"),
    ]


async def test_with_the_results_back_it_says_what_each_returned_then_answers() -> None:
    question = 'Sum [[tool calculator {"expression": "2+2"}]] and [[tool now {"zone":"UTC"}]] it'
    calls = calls_of(await parts_of(asked(question)))
    prompt = asked(question, *back(calls, {"value": 4, "exact": True}, "12:00 UTC"))
    parts = await parts_of(prompt)

    assert calls_of(parts) == []
    answer = scripted_reply("Sum and it", WORDS)
    assert text_of(parts) == (
        'calculator returned {"value":4,"exact":true}. now returned "12:00 UTC". ' + answer
    )
    written = len(text_of(parts).split())
    assert parts[-2:] == [
        UsagePart(prompt_words(prompt), written, 0, 0, "scripted"),
        StopPart("end_turn"),
    ]


async def test_directives_are_not_echoed() -> None:
    question = "echo: <b>bold</b> [[tool now]] done"
    calls = calls_of(await parts_of(asked(question)))
    assert [(c.name, c.args) for c in calls] == [("now", {})]

    parts = await parts_of(asked(question, *back(calls, "noon")))
    assert text_of(parts) == 'now returned "noon". <b>bold</b> done'


async def test_handoff_calls_the_handoff_tool_and_the_next_agent_answers() -> None:
    question = "[[handoff writer]] Draft a haiku"
    parts = await parts_of(asked(question))

    [call] = calls_of(parts)
    assert (call.name, call.args) == ("handoff", {"agent": "writer"})
    assert text_of(parts) == ""
    assert parts[-1] == StopPart("tool_use")

    # The agent handed to sees the call and its result in its history: it answers.
    after = await parts_of(asked(question, *back([call], "handed off to writer")))
    assert calls_of(after) == []
    assert text_of(after) == scripted_reply("Draft a haiku", WORDS)
    assert after[-1] == StopPart("end_turn")


async def test_tools_first_then_the_handoff_then_the_answer_with_the_results() -> None:
    question = '[[handoff critic]] check [[tool calculator {"expression": "1/3"}]]'
    tools = calls_of(await parts_of(asked(question)))
    assert [c.name for c in tools] == ["calculator"]

    history = back(tools, 0.333)
    [handoff] = calls_of(await parts_of(asked(question, *history)))
    assert (handoff.name, handoff.args) == ("handoff", {"agent": "critic"})

    final = await parts_of(asked(question, *history, *back([handoff], "ok")))
    assert text_of(final) == "calculator returned 0.333. " + scripted_reply("check", WORDS)


@pytest.mark.parametrize(
    ("message", "picked"),
    [
        ("Ask the Writer, then the researcher", "researcher"),  # the agents' order decides
        ("a job for the critic!", "critic"),
        ("writers and researchers wanted", "assistant"),  # a word, not part of one
        ("nobody in particular", "assistant"),
    ],
)
async def test_as_a_classifier_it_picks_the_first_agent_named_as_a_word(
    message: str, picked: str
) -> None:
    choice = Classification(agents=("researcher", "writer", "critic"), default="assistant")
    prompt = Prompt(
        system="Pick an agent.",
        messages=(ChatMessage("user", message),),
        question=message,
        classify=choice,
    )
    parts = await parts_of(prompt)

    assert parts == [
        TextPart(picked),
        UsagePart(prompt_words(prompt), 1, 0, 0, "scripted"),
        StopPart("end_turn"),
    ]


def test_input_tokens_are_the_words_of_the_whole_prompt() -> None:
    prompt = Prompt(
        system="Be very brief.",
        messages=(
            ChatMessage("user", "one two three"),
            ChatMessage(
                "assistant",
                (TextBlock("let me see"), ToolUseBlock("c1", "calculator", {"a": "x y"})),
            ),
            ChatMessage("user", (ToolResultBlock("c1", "four five"),)),
        ),
    )
    # 3 + 3 + 3, the call as its name and compact JSON ('{"a":"x', 'y"}'), 2 for the result.
    assert prompt_words(prompt) == 3 + 3 + 3 + 1 + 2 + 2


async def test_the_same_prompt_gets_the_same_parts_and_call_ids_depend_on_the_position() -> None:
    question = "[[tool now]]"
    first = await parts_of(asked(question))
    assert await parts_of(asked(question)) == first

    later = Prompt(
        system="",
        messages=(
            ChatMessage("user", question),
            ChatMessage("assistant", "It is noon."),
            ChatMessage("user", question),
        ),
        question=question,
    )
    assert calls_of(await parts_of(later))[0].call_id != calls_of(first)[0].call_id


def test_directives_are_read_in_order_and_the_rest_of_the_message_kept() -> None:
    found = read_directives('a [[tool echo {"s": "]] {x}"}]] b[[handoff writer]]c [[tool now]]')

    assert found.found == (
        ToolDirective("echo", {"s": "]] {x}"}),
        HandoffDirective("writer"),
        ToolDirective("now", {}),
    )
    assert found.text == "a b c"
    assert read_directives("  no [[directives]] here ").text == "  no [[directives]] here "


@pytest.mark.parametrize(
    ("message", "why"),
    [
        ("[[tool calc {not json}]]", "not JSON"),
        ("[[tool calc [1, 2]]]", "JSON object"),
        ('[[tool calc {"a": 1} trailing]]', "']]'"),
        ("[[handoff writer please]]", "']]'"),
    ],
)
async def test_a_malformed_directive_is_a_clear_error(message: str, why: str) -> None:
    with pytest.raises(ProviderError) as caught:
        await parts_of(asked(message))

    assert caught.value.retryable is False
    assert why in str(caught.value)
    assert "bad directive" in str(caught.value)


async def test_without_a_question_it_answers_the_last_user_turn_with_text() -> None:
    bare = Prompt(system="", messages=(ChatMessage("user", "[[tool now]] hi"),))
    [call] = calls_of(await parts_of(bare))
    assert call.name == "now"

    after = Prompt(system="", messages=bare.messages + back([call], "noon"))
    assert text_of(await parts_of(after)) == 'now returned "noon". ' + scripted_reply("hi", WORDS)
