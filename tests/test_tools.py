"""The tools layer: definitions, the registry, and running calls (validation, timeouts,
errors, cancellation, current_tool())."""

from __future__ import annotations

import asyncio
import functools
import sys
import threading
import time
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field

from consumers.tools import (
    REGISTRY,
    CallResult,
    DuplicateTool,
    NotInToolCall,
    ToolCall,
    ToolDefinitionError,
    ToolError,
    ToolModuleError,
    ToolRegistry,
    current_tool,
    load_modules,
    make_tool,
    tool,
)
from slipstream.config import Settings
from tests.waits import until

RUN = "t1.aaaaaaaaaaaaaaaa"


def ctx(call_id: str = "call_1", run_id: str = RUN) -> ToolCall:
    return ToolCall(run_id=run_id, thread_id="t1", call_id=call_id)


class Point(BaseModel):
    x: int
    y: int = 0


def distance(
    origin: Point,
    units: Annotated[str, Field(description="km or mi")] = "km",
    scale: float = 1.0,
) -> dict[str, Any]:
    """How far a point is from zero."""
    return {"d": (origin.x**2 + origin.y**2) ** 0.5 * scale, "units": units}


# --- definitions ------------------------------------------------------------------


def test_a_typed_function_gets_the_messages_api_shape() -> None:
    definition = make_tool(distance).definition()
    assert definition == {
        "name": "distance",
        "description": "How far a point is from zero.",
        "input_schema": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "origin": {"$ref": "#/$defs/Point"},
                "units": {"type": "string", "description": "km or mi", "default": "km"},
                "scale": {"type": "number", "default": 1.0},
            },
            "required": ["origin"],
            "$defs": {
                "Point": {
                    "type": "object",
                    "properties": {
                        "x": {"type": "integer"},
                        "y": {"type": "integer", "default": 0},
                    },
                    "required": ["x"],
                }
            },
        },
    }


def test_a_parameter_may_have_a_name_basemodel_uses() -> None:
    def lookup(json: str, schema: int = 1) -> str:
        """Names that shadow BaseModel attributes."""
        return f"{json}{schema}"

    made = make_tool(lookup)
    assert list(made.input_schema["properties"]) == ["json", "schema"]


def test_a_name_and_approval_can_be_given() -> None:
    registry = ToolRegistry()

    @tool(name="send-mail", needs_approval=True, registry=registry)
    def send(to: str) -> str:
        """Send a mail."""
        return to

    made = registry.get("send-mail")
    assert made is not None and made.needs_approval and made.fn is send
    assert send("a@b") == "a@b"  # the function stays callable as it was
    assert registry.names() == ["send-mail"]


def test_an_untyped_parameter_is_refused_at_decoration() -> None:
    def bad(query, limit: int = 3) -> str:  # type: ignore[no-untyped-def]
        """No type for query."""
        return ""

    with pytest.raises(ToolDefinitionError, match=r"parameter 'query' has no type annotation"):
        make_tool(bad)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def f(*args: int) -> None: ...", r"'args' is \*args or \*\*kwargs"),
        ("def f(**kw: int) -> None: ...", r"'kw' is \*args or \*\*kwargs"),
        ("def f(a: int, /) -> None: ...", r"'a' is positional-only"),
        ("def f(a: 'Nowhere') -> None: ...", r"annotations cannot be resolved"),
        ("class C: ...\ndef f(a: C) -> None: ...", r"no JSON Schema"),
        ("def f():\n    yield 1", r"is a generator"),
    ],
)
def test_a_bad_signature_is_refused_with_what_is_wrong(source: str, message: str) -> None:
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    with pytest.raises(ToolDefinitionError, match=message):
        make_tool(namespace["f"])


async def test_a_wrapped_async_function_is_still_awaited() -> None:
    async def inner(text: str) -> str:
        """Echo."""
        return text

    @functools.wraps(inner)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return inner(*args, **kwargs)

    made = make_tool(wrapper)
    assert made.is_async and list(made.input_schema["properties"]) == ["text"]
    registry = ToolRegistry()
    registry.add(made)
    assert (await registry.call("inner", {"text": "hi"}, ctx())).result == "hi"


def test_a_name_the_api_cannot_take_is_refused() -> None:
    with pytest.raises(ToolDefinitionError, match=r"'has space' .* must be 1-64 letters"):
        make_tool(distance, name="has space")


def test_duplicate_names_are_an_error_naming_both_functions() -> None:
    registry = ToolRegistry()

    @tool(name="twin", registry=registry)
    def first() -> None:
        """One."""

    def second() -> None:
        """Two."""

    with pytest.raises(DuplicateTool) as raised:
        tool(name="twin", registry=registry)(second)
    assert "first" in str(raised.value) and "second" in str(raised.value)
    tool(name="twin", registry=registry)(first)  # the same function again is no conflict


def test_the_built_ins_are_registered() -> None:
    assert {"calculator", "now", "search_thread", "fetch_url"} <= set(REGISTRY.names())
    names = [d["name"] for d in REGISTRY.definitions(["calculator", "now"])]
    assert names == ["calculator", "now"]


# --- loading SLIPSTREAM_TOOLS --------------------------------------------------------


def test_tool_modules_come_from_the_environment() -> None:
    settings = Settings.from_env({"SLIPSTREAM_TOOLS": "a.b, c ,,", "SLIPSTREAM_FETCH_ALLOW": ""})
    assert settings.tool_modules == ("a.b", "c")
    assert settings.fetch_allow == frozenset()
    allow = Settings.from_env({"SLIPSTREAM_FETCH_ALLOW": "Example.com., *.wiki.org"}).fetch_allow
    assert allow == {"example.com", "*.wiki.org"}


def test_loading_a_module_registers_its_tools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "deploy_tools_ok.py").write_text(
        "from consumers.tools import tool\n\n"
        "@tool\n"
        "def deploy_echo(text: str) -> str:\n"
        '    """Echo."""\n'
        "    return text\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    load_modules(["deploy_tools_ok"])
    assert "deploy_echo" in REGISTRY


def test_a_module_that_does_not_import_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ToolModuleError) as raised:
        load_modules(["no_such_tools_module"])
    message = str(raised.value)
    assert "SLIPSTREAM_TOOLS names 'no_such_tools_module'" in message and "\n" not in message

    (tmp_path / "deploy_tools_bad.py").write_text(
        "from consumers.tools import tool\n\n@tool\ndef broken(x) -> None:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ToolModuleError, match=r"'deploy_tools_bad'.*ToolDefinitionError.*'x'"):
        load_modules(["deploy_tools_bad"])
    sys.modules.pop("deploy_tools_bad", None)


# --- calls -----------------------------------------------------------------------------

calls = ToolRegistry()


@tool(registry=calls)
def add(a: int, b: int = 1) -> int:
    """Add two integers."""
    return a + b


@tool(registry=calls)
async def when(day: date) -> dict[str, Any]:
    """The weekday of a date."""
    await asyncio.sleep(0)
    return {"day": day, "weekday": day.strftime("%A")}


@tool(registry=calls)
def locate(x: int) -> Point:
    """A model as the result."""
    return Point(x=x, y=2)


@tool(registry=calls)
def explode(where: str) -> None:
    """Always fails."""
    raise ValueError(f"no luck at https://user:secret@example.com/{where}")


@tool(registry=calls)
def refuse() -> None:
    """Fails with a message meant for the model."""
    raise ToolError("try a smaller number")


@tool(registry=calls)
def big(n: int) -> str:
    """A long string."""
    return "x" * n


@tool(registry=calls)
def opaque() -> object:
    """Returns something that is not JSON."""
    return object()


@tool(registry=calls)
def huge_int() -> int:
    """An integer no 64-bit JSON reader keeps."""
    return 2**70


@tool(registry=calls)
async def own_timeout() -> None:
    """Raises TimeoutError itself."""
    raise TimeoutError("upstream was slow")


async def test_a_sync_tool_runs_with_validated_arguments() -> None:
    result = await calls.call("add", {"a": "2"}, ctx())
    assert (result.result, result.is_error) == (3, False)


async def test_an_async_tool_is_awaited_and_its_result_serialised() -> None:
    result = await calls.call("when", {"day": "2026-12-01"}, ctx())
    assert result.result == {"day": "2026-12-01", "weekday": "Tuesday"}
    assert result.compact_json() == '{"day":"2026-12-01","weekday":"Tuesday"}'


async def test_a_returned_model_is_serialised_by_pydantic() -> None:
    result = await calls.call("locate", {"x": 1}, ctx())
    assert result.result == {"x": 1, "y": 2}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({}, "a: Field required"),
        ({"a": "two"}, "a: Input should be a valid integer"),
        ({"a": 1, "c": 2}, "c: Extra inputs are not permitted"),
        (["a"], "expected a JSON object, got list"),
    ],
)
async def test_invalid_arguments_are_an_error_result_the_model_can_act_on(
    args: Any, expected: str
) -> None:
    result = await calls.call("add", args, ctx())
    assert result.is_error
    assert isinstance(result.result, str)
    assert result.result.startswith("invalid arguments for tool 'add'")
    assert expected in result.result


async def test_an_unknown_tool_is_an_error_result_listing_the_known() -> None:
    result = await calls.call("ad", {}, ctx())
    assert result.is_error and "unknown tool 'ad' (known: add, big," in str(result.result)


async def test_an_exception_is_an_error_result_with_its_class_and_no_url() -> None:
    result = await calls.call("explode", {"where": "here"}, ctx())
    assert result.is_error
    assert result.result == "tool 'explode' failed: ValueError: no luck at <url>"


async def test_a_tool_error_is_its_message_alone() -> None:
    result = await calls.call("refuse", {}, ctx())
    assert (result.result, result.is_error) == ("try a smaller number", True)


async def test_a_tools_own_timeout_error_is_not_taken_for_the_deadline() -> None:
    result = await calls.call("own_timeout", {}, ctx(), timeout_s=5)
    assert result.result == "tool 'own_timeout' failed: TimeoutError: upstream was slow"


async def test_a_result_over_the_bound_is_cut_with_a_note() -> None:
    result = await calls.call("big", {"n": 500}, ctx(), max_result_bytes=100)
    assert not result.is_error
    assert isinstance(result.result, str)
    assert result.result.startswith('"' + "x" * 99 + " [truncated: the result was 502 bytes")
    whole = await calls.call("big", {"n": 98}, ctx(), max_result_bytes=100)
    assert whole.result == "x" * 98


@pytest.mark.parametrize("name", ["opaque", "huge_int"])
async def test_a_result_that_is_not_json_is_an_error(name: str) -> None:
    result = await calls.call(name, {}, ctx())
    assert result.is_error and "returned a value that is not JSON" in str(result.result)


# --- timeouts and cancellation ---------------------------------------------------------

slow = ToolRegistry()
release_sync = threading.Event()
sync_started = threading.Event()
sync_finished = threading.Event()
async_state: dict[str, Any] = {}


@tool(registry=slow)
async def wait_async() -> str:
    """Waits until cancelled."""
    async_state["started"].set()
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        async_state["cancelled"] = True
        raise
    return "never"


@tool(registry=slow)
def wait_sync() -> str:
    """Blocks its thread until released."""
    sync_started.set()
    release_sync.wait(10)
    sync_finished.set()
    return "late"


@pytest.fixture
def fresh_events() -> None:
    for event in (release_sync, sync_started, sync_finished):
        event.clear()
    async_state.clear()
    async_state["started"] = asyncio.Event()


@pytest.mark.usefixtures("fresh_events")
async def test_an_async_tool_past_its_timeout_is_cancelled_and_an_error() -> None:
    result = await slow.call("wait_async", {}, ctx(), timeout_s=0.05)
    assert (result.result, result.is_error) == ("tool 'wait_async' timed out after 0.05 s", True)
    assert async_state["cancelled"] is True


@pytest.mark.usefixtures("fresh_events")
async def test_a_sync_tool_past_its_timeout_is_abandoned_and_the_loop_stays_free() -> None:
    started = time.monotonic()
    result = await slow.call("wait_sync", {}, ctx(), timeout_s=0.05)
    assert result.result == "tool 'wait_sync' timed out after 0.05 s"
    assert time.monotonic() - started < 5
    assert not sync_finished.is_set()  # still running in its thread
    release_sync.set()
    await until(lambda: asyncio.sleep(0, sync_finished.is_set()))


@pytest.mark.usefixtures("fresh_events")
async def test_a_blocking_sync_tool_does_not_hold_up_other_calls() -> None:
    blocked = asyncio.create_task(slow.call("wait_sync", {}, ctx("call_blocked")))
    await until(lambda: asyncio.sleep(0, sync_started.is_set()))
    other = await calls.call("add", {"a": 1}, ctx("call_other"))  # answered meanwhile
    assert other.result == 2 and not blocked.done()
    release_sync.set()
    assert (await blocked).result == "late"


@pytest.mark.usefixtures("fresh_events")
async def test_cancelling_a_call_cancels_an_async_tool() -> None:
    task = asyncio.create_task(slow.call("wait_async", {}, ctx()))
    await asyncio.wait_for(async_state["started"].wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert async_state["cancelled"] is True


@pytest.mark.usefixtures("fresh_events")
async def test_cancelling_a_call_abandons_a_sync_tool_and_drops_its_late_result(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="consumers.tools.execute")
    task = asyncio.create_task(slow.call("wait_sync", {}, ctx("call_late")))
    await until(lambda: asyncio.sleep(0, sync_started.is_set()))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release_sync.set()
    # The thread finishes after the call ended: its result is logged as dropped, nowhere else.
    await until(lambda: asyncio.sleep(0, "finished after it was abandoned" in caplog.text))
    assert "call_late" in caplog.text


# --- current_tool() ------------------------------------------------------------------

seen = ToolRegistry()


@tool(registry=seen)
def whoami_sync() -> dict[str, str]:
    """Reports the call it serves."""
    call = current_tool()
    return {"key": call.idempotency_key, "run": call.run_id, "thread": call.thread_id}


@tool(registry=seen)
async def whoami_async() -> dict[str, str]:
    """Reports the call it serves."""
    call = current_tool()
    return {"key": call.idempotency_key, "call": call.call_id}


def field(result: CallResult, name: str) -> Any:
    assert isinstance(result.result, dict), result
    return result.result[name]


def test_current_tool_outside_a_call_is_a_clear_error() -> None:
    with pytest.raises(NotInToolCall, match=r"only available inside a tool while it runs"):
        current_tool()


async def test_current_tool_inside_sync_and_async_tools() -> None:
    sync = await seen.call("whoami_sync", {}, ctx("call_a"))
    assert isinstance(sync.result, dict)
    assert sync.result["run"] == RUN and sync.result["thread"] == "t1"
    asynchronous = await seen.call("whoami_async", {}, ctx("call_a"))
    assert isinstance(asynchronous.result, dict) and asynchronous.result["call"] == "call_a"
    assert sync.result["key"] == asynchronous.result["key"]
    with pytest.raises(NotInToolCall):
        current_tool()  # reset once the call is over


async def test_the_idempotency_key_is_stable_across_attempts_and_distinct_per_call() -> None:
    first = await seen.call("whoami_async", {}, ctx("call_a"))
    retried = await seen.call("whoami_async", {}, ToolCall(RUN, "t1", "call_a"))
    other_call = await seen.call("whoami_async", {}, ctx("call_b"))
    other_run = await seen.call("whoami_async", {}, ctx("call_a", run_id="t1.bbbbbbbbbbbbbbbb"))
    keys = [field(r, "key") for r in (first, retried, other_call, other_run)]
    assert keys[0] == keys[1]
    assert len(set(keys)) == 3
    assert len(keys[0]) == 32


async def test_concurrent_calls_each_see_their_own_call() -> None:
    results = await asyncio.gather(
        *(seen.call("whoami_async", {}, ctx(f"call_{i}")) for i in range(5))
    )
    assert [field(r, "call") for r in results] == [f"call_{i}" for i in range(5)]
