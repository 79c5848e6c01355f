"""The scripted model: its usual answer, DESIGN.md's directives, the classifier, usage."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import JsonValue

from consumers.llm.base import (
    ChatMessage,
    Classification,
    Prompt,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from consumers.llm.demo_reply import FILLER, quote
from consumers.llm.directives import HandoffDirective, ToolDirective, read_directives
from consumers.llm.parts import Part, StopPart, TextPart, ToolCallPart, UsagePart
from consumers.llm.scripted import ScriptedLLM, prompt_words, scripted_reply
from slipstream.errors import ProviderError

WORDS = 12
BOUNDED = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


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


# --- the usual answer: says what it is, quotes the message, shows some markdown ----


def fences(reply: str) -> list[str]:
    """The reply's code fence lines, in order."""
    return [line for line in reply.splitlines() if line.startswith("```")]


def prose(reply: str) -> str:
    """The reply without its code block and with its backslash escapes taken out."""
    outside = re.sub(r"^```\w*\n.*?^```$", "", reply, flags=re.MULTILINE | re.DOTALL)
    return re.sub(r"\\.", "", outside)


def test_the_reply_says_it_is_the_offline_demo_model_and_how_to_use_a_real_one() -> None:
    reply = scripted_reply("What is a stream?", 80)

    assert "Slipstream's offline demo model" in reply and "not a real LLM" in reply
    assert "ANTHROPIC_API_KEY" in " ".join(reply.split()[:40])  # early, however it is put


def test_a_short_question_is_quoted_whole_with_its_whitespace_collapsed() -> None:
    reply = scripted_reply("What   makes\n\tstreams durable?", 80)

    assert "\u201cWhat makes streams durable?\u201d" in reply


def test_a_long_question_is_quoted_cut_short() -> None:
    question = " ".join(f"word{i}" for i in range(40))

    assert quote(question) == "\u201c" + " ".join(f"word{i}" for i in range(12)) + "\u2026\u201d"
    assert quote(question) in scripted_reply(question, 80)
    assert quote("x" * 500) == "\u201c" + "x" * 80 + "\u2026\u201d"


def test_markdown_in_the_question_is_quoted_inert() -> None:
    question = "fix `x`, *y* and <b>z</b> [a](b) &amp; ```python"
    reply = scripted_reply(question, 80)

    assert r"fix \`x\`, \*y\* and \<b\>z\</b\> \[a\](b) \&amp; \`\`\`python" in reply
    assert fences(reply) == ["```python", "```"]  # its own block alone: the quote opens none


@pytest.mark.parametrize(
    ("question", "language"),
    [
        ("Write a function that sums a list", "python"),
        ("Show me some code", "python"),
        ("a bash script to back up redis", "bash"),
        ("An example in JavaScript, please", "javascript"),
        ("How do I query this in SQL?", "sql"),
        ("snippets in Rust", "rust"),
        ("golang program for a worker", "go"),
        ("What is Java?", "java"),
        ("TypeScript types for the view", "typescript"),
    ],
)
def test_a_request_for_code_gets_a_closed_fenced_block_in_its_language(
    question: str, language: str
) -> None:
    # Even with the longest quote the block fits in the default 80 words.
    for asked in (question, f"{question} " + " ".join(["and more words"] * 5)):
        reply = scripted_reply(asked, 80)
        assert fences(reply) == [f"```{language}", "```"], reply
        assert len(reply.split()) == 80


def test_other_questions_get_prose_and_a_list_and_no_code_block() -> None:
    reply = scripted_reply("What makes streams durable?", 80)

    assert fences(reply) == []
    assert len([line for line in reply.splitlines() if line.startswith("- ")]) == 3
    assert "\n\n- " in reply  # a list after a blank line: never read as a heading's underline


def test_a_reply_too_short_for_the_code_block_leaves_it_out_whole() -> None:
    question = "Write a python function"
    whole = scripted_reply(question, 80)
    assert fences(whole) == ["```python", "```"]
    block_ends = len(whole[: whole.index("\n```\n") + 4].split())

    for words in range(1, block_ends):
        short = scripted_reply(question, words)
        assert fences(short) == [] and len(short.split()) == words
    assert fences(scripted_reply(question, block_ends)) == ["```python", "```"]


def test_a_reply_cut_mid_sentence_ends_in_an_ellipsis() -> None:
    assert scripted_reply("What is a stream?", 5).endswith("\u2026")
    assert len(scripted_reply("What is a stream?", 1).split()) == 1


def test_a_long_reply_is_filled_with_whole_paragraphs_of_the_fixed_set() -> None:
    reply = scripted_reply("Survive the crash", 500)
    paragraphs = reply.split("\n\n")

    assert len(reply.split()) == 500
    start = next(i for i, p in enumerate(paragraphs) if p.startswith("- ")) + 1
    filled, last = paragraphs[start:-1], paragraphs[-1]
    assert len(filled) > len(FILLER)  # round after round
    assert all(p in FILLER for p in filled)
    assert filled[: len(FILLER)] != list(FILLER)  # in an order of its own
    assert last.endswith("\u2026") and any(p.startswith(last[:-1]) for p in FILLER)


def test_different_messages_get_different_sentences() -> None:
    openings = {scripted_reply(f"question {i}", 80).split(".")[0] for i in range(20)}
    assert len(openings) > 1


def test_echo_is_answered_with_the_rest_verbatim_whatever_the_length() -> None:
    assert scripted_reply("echo:  **raw** `text` ", 3) == "**raw** `text`"


@BOUNDED
@given(st.text(max_size=300), st.integers(min_value=1, max_value=400))
def test_any_message_gets_exactly_n_words_of_sound_markdown(text: str, words: int) -> None:
    assume(not text.startswith("echo:"))
    reply = scripted_reply(text, words)

    assert scripted_reply(text, words) == reply  # a pure function of the message
    assert len(reply.split()) == words
    assert len(fences(reply)) in (0, 2)  # a code block is whole or absent
    assert not set("`*<>[]&~|") & set(prose(reply))  # the quote opens no inline markup
    if words >= 12:  # the first sentence, whole
        assert "Slipstream's offline demo model" in reply and "not a real LLM" in reply


@BOUNDED
@given(st.lists(st.from_regex(r"[A-Za-z0-9']{1,9}", fullmatch=True), min_size=1, max_size=8))
def test_a_short_question_is_quoted_word_for_word(said: list[str]) -> None:
    # Short: at most 8 words and 79 characters, under QUOTE_WORDS and QUOTE_CHARS.
    question = " ".join(said)
    assume(not question.startswith("echo:"))

    assert f"\u201c{question}\u201d" in scripted_reply(question, 80)
