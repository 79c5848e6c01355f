"""The shipped tools calculator, now and search_thread, called as the agent loop calls them."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from consumers.tools import CallResult, ToolCall, call, messages_of
from projections.thread_view import ThreadView, fold
from slipstream import events as ev
from slipstream.store import Stored

RUN = "t1.aaaaaaaaaaaaaaaa"
NEXT_RUN = "t1.bbbbbbbbbbbbbbbb"


def plain(call_id: str = "call_1") -> ToolCall:
    return ToolCall(run_id=RUN, thread_id="t1", call_id=call_id)


# --- calculator --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("7 / 2", 3.5),
        ("7 // 2", 3),
        ("-7 % 3", 2),
        ("2 ** 10", 1024),
        ("2 ** -2", 0.25),
        ("-(3 - 5)", 2),
        ("round(sqrt(2) * 100, 3)", 141.421),
        ("max(1, 4, 2) + min(3, 5)", 7),
        ("floor(pi * 1000)", 3141),
        ("2 ** 64", "18446744073709551616"),
        ("1e3 + 0.5", 1000.5),
    ],
)
async def test_the_calculator_computes(expression: str, value: float | str) -> None:
    result = await call("calculator", {"expression": expression}, plain())
    assert (result.result, result.is_error) == (value, False)


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("__import__('os')", "unknown function '__import__'"),
        ("__import__('os').system('true')", "only these functions can be called"),
        ("round(2.5, ndigits=1)", "only these functions can be called"),
        ("(1).real", "Attribute is not allowed"),
        ("().__class__", "Attribute is not allowed"),
        ("[1, 2]", "List is not allowed"),
        ("x + 1", "unknown name 'x'"),
        ("'a' * 3", "'a' is not a number"),
        ("lambda: 1", "Lambda is not allowed"),
        ("9**9**9", "9 ** 387420489 is too large to compute"),
        ("10 ** 5000", "10 ** 5000 is too large to compute"),
        ("(10 ** 1000) * (10 ** 1000)", "too large to compute"),
        ("2.0 ** 5000", "the result is too large"),
        ("1e308 * 10", "the result is too large"),
        ("1 / 0", "division by zero"),
        ("sqrt(-1)", "sqrt: math domain error"),
        ("(-8) ** 0.5", "is not a real number"),
        ("1 +", "not an arithmetic expression"),
        ("+".join(["1"] * 150), "more than 200 parts"),
        ("1" * 600, "at most 500 characters"),
    ],
)
async def test_the_calculator_refuses_what_is_not_bounded_arithmetic(
    expression: str, reason: str
) -> None:
    started = time.monotonic()
    result = await call("calculator", {"expression": expression}, plain())
    assert result.is_error, result
    assert reason in str(result.result)
    assert time.monotonic() - started < 1  # refused, not computed


# --- now ---------------------------------------------------------------------------


async def test_now_is_the_time_in_the_zone_as_iso_8601() -> None:
    result = await call("now", {"zone": "Asia/Kolkata"}, plain())
    assert isinstance(result.result, str) and not result.is_error
    moment = datetime.fromisoformat(result.result)
    assert moment.utcoffset() == timedelta(hours=5, minutes=30)
    assert abs(moment - datetime.now(UTC)) < timedelta(seconds=5)
    zoned = datetime.now(ZoneInfo("Asia/Kolkata"))
    assert moment.date() in (zoned.date(), (zoned - timedelta(seconds=5)).date())


async def test_now_defaults_to_utc() -> None:
    result = await call("now", {}, plain())
    assert str(result.result).endswith("+00:00")


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "../../etc/passwd", ""])
async def test_an_unknown_zone_is_a_tool_error(zone: str) -> None:
    result = await call("now", {"zone": zone}, plain())
    assert result.is_error
    assert f"unknown time zone {zone!r}" in str(result.result)


# --- search_thread -----------------------------------------------------------------


def thread() -> ThreadView:
    events: list[ev.Event] = [
        ev.ThreadCreated(title="trip"),
        ev.MessageSent(message_id="m1", content="We fly to Lisbon on Friday.", run_id=RUN),
        ev.RunRequested(run_id=RUN, message_id="m1", reply_id="r1", agent="assistant"),
        ev.RunStarted(run_id=RUN, attempt=1, worker="h:1:a", token=1),
        ev.MessageCompleted(
            run_id=RUN, message_id="r1", text="Lisbon in spring is lovely; pack light."
        ),
        ev.RunCompleted(run_id=RUN),
        ev.MessageSent(message_id="m2", content="What did we say about LISBON?", run_id=NEXT_RUN),
        ev.RunRequested(run_id=NEXT_RUN, message_id="m2", reply_id="r2", agent="researcher"),
        ev.RunStarted(run_id=NEXT_RUN, attempt=1, worker="h:1:a", token=1),
        ev.MessageDelta(run_id=NEXT_RUN, message_id="r2", seq=1, text="Searching Lisbon"),
    ]
    stored = [Stored(f"{1000 + i}-0", event) for i, event in enumerate(events)]
    return fold(ThreadView.empty("t1", "ss:{p00}:thread:t1"), stored)


def in_thread(view: ThreadView) -> ToolCall:
    return ToolCall(run_id=NEXT_RUN, thread_id="t1", call_id="call_s", messages=messages_of(view))


def ids(result: CallResult) -> list[str]:
    assert isinstance(result.result, list) and not result.is_error, result
    return [str(item["id"]) for item in result.result if isinstance(item, dict)]


async def test_search_thread_finds_matches_newest_first_without_the_answer_being_written() -> None:
    view = thread()
    result = await call("search_thread", {"query": "lisbon"}, in_thread(view))
    assert ids(result) == ["m2", "r1", "m1"]  # r2 is this run's own answer, still streaming
    assert isinstance(result.result, list)
    assert result.result[1] == {
        "id": "r1",
        "role": "assistant",
        "agent": "assistant",
        "created_at": 1002,  # the reply opens at run.requested
        "excerpt": "Lisbon in spring is lovely; pack light.",
    }


async def test_search_thread_needs_every_word_and_honours_the_limit() -> None:
    view = thread()
    assert ids(await call("search_thread", {"query": "lisbon friday"}, in_thread(view))) == ["m1"]
    assert ids(await call("search_thread", {"query": "lisbon", "limit": 2}, in_thread(view))) == [
        "m2",
        "r1",
    ]
    assert ids(await call("search_thread", {"query": "madrid"}, in_thread(view))) == []


async def test_search_thread_finds_only_what_the_runs_branch_holds() -> None:
    """An edited-away message (and its answer) is not the run's conversation: not found."""
    edited = "t1.eeeeee"
    view = fold(
        thread(),
        [
            Stored(
                "2000-0",
                ev.MessageSent(
                    message_id="m3", content="Lisbon, or Porto?", run_id=edited, edit_of="m2"
                ),
            ),
            Stored(
                "2000-1",
                ev.RunRequested(run_id=edited, message_id="m3", reply_id="r3", agent="researcher"),
            ),
        ],
    )
    on_branch = ToolCall(
        run_id=edited, thread_id="t1", call_id="call_b", messages=messages_of(view, edited)
    )
    assert ids(await call("search_thread", {"query": "lisbon"}, on_branch)) == ["m3", "r1", "m1"]
    everything = await call("search_thread", {"query": "lisbon"}, in_thread(view))
    assert "m2" in ids(everything)  # without a run, every message: what was there before


async def test_search_thread_excerpts_a_long_message_around_the_match() -> None:
    view = thread()
    view.messages[0].content = "filler " * 200 + "the needle is here " + "more " * 200
    result = await call("search_thread", {"query": "needle"}, in_thread(view))
    assert isinstance(result.result, list)
    excerpt = str(result.result[0]["excerpt"])  # type: ignore[index,call-overload]
    assert "the needle is here" in excerpt and len(excerpt) <= 306
    assert excerpt.startswith("...") and excerpt.endswith("...")


async def test_search_thread_without_messages_or_words_is_a_tool_error() -> None:
    without = await call("search_thread", {"query": "lisbon"}, plain())
    assert without.result == "this call was made without the thread's messages"
    blank = await call("search_thread", {"query": "   "}, in_thread(thread()))
    assert blank.result == "the query has no words to search for"
    bad_limit = await call("search_thread", {"query": "a", "limit": 0}, in_thread(thread()))
    assert bad_limit.is_error and "limit: Input should be greater than or equal to 1" in str(
        bad_limit.result
    )
