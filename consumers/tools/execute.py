"""Running one tool call: validate, execute (bounded in time), serialise, bound the size.

Every failure becomes an error result the model can read and act on; only
cancellation escapes. Cancelling the call cancels an async tool. A sync tool
runs in a thread of its own, which Python cannot stop: on cancel or timeout it
is abandoned (it runs on, and its late result is discarded), so a sync tool
with side effects should use `current_tool().idempotency_key`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, JsonValue, TypeAdapter, ValidationError

from consumers.redact import without_urls
from consumers.tools.context import _CURRENT, ToolCall
from consumers.tools.definition import Tool
from consumers.tools.errors import ToolError
from consumers.tools.schema_check import input_problems
from slipstream.secrets import configured_secrets, masked

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 30.0
MAX_RESULT_BYTES = 16_384  # of compact JSON: about 4k tokens of the model's context
MAX_ERROR_CHARS = 2_000
_INPUT_SHOWN = 80
# Return values are serialised by what they are (models, dataclasses, dates), not by
# their annotation, which a tool may not give or may not keep.
_ANY: TypeAdapter[Any] = TypeAdapter(Any)


class CallResult(BaseModel):
    """A tool call's outcome: `result` is JSON; with `is_error` it is the message for the model."""

    model_config = ConfigDict(frozen=True)

    result: JsonValue
    is_error: bool = False

    def compact_json(self) -> str:
        return orjson.dumps(self.result).decode()


def error_result(message: str) -> CallResult:
    # The model reads it and the thread keeps it: no URL, no configured key or token.
    text = masked(without_urls(message), configured_secrets())
    if len(text) > MAX_ERROR_CHARS:
        text = text[:MAX_ERROR_CHARS] + " [message truncated]"
    return CallResult(result=text, is_error=True)


def invalid_arguments(tool: Tool, error: ValidationError) -> CallResult:
    problems = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "arguments"
        problem = f"{where}: {item['msg']}"
        if item["type"] not in ("missing", "extra_forbidden") and "input" in item:
            shown = repr(item["input"])
            if len(shown) > _INPUT_SHOWN:
                shown = shown[:_INPUT_SHOWN] + "..."
            problem += f" (got {shown})"
        problems.append(problem)
    expected = ", ".join(tool.input_schema.get("properties", {})) or "none"
    return error_result(
        f"invalid arguments for tool {tool.name!r}: "
        + "; ".join(problems)
        + f". Its parameters: {expected}."
    )


def checked_arguments(tool: Tool, raw_args: Mapping[str, Any] | Any) -> CallResult | dict[str, Any]:
    """The call's keyword arguments, or the error result that says why its input is bad.

    A tool given its schema (an MCP server's) is checked against it and takes its
    input whole: its keywords are empty.
    """
    if not isinstance(raw_args, Mapping):
        return error_result(
            f"invalid arguments for tool {tool.name!r}: expected a JSON object, "
            f"got {type(raw_args).__name__}"
        )
    if tool.arguments is None:
        problems = input_problems(tool.input_schema, raw_args)
        if problems:
            return error_result(
                f"invalid arguments for tool {tool.name!r}: " + "; ".join(problems) + "."
            )
        return {}
    try:
        validated = tool.arguments.model_validate(dict(raw_args))
    except ValidationError as exc:
        return invalid_arguments(tool, exc)
    return tool.keywords(validated)


async def run_tool(
    tool: Tool,
    raw_args: Mapping[str, Any] | Any,
    context: ToolCall,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_result_bytes: int = MAX_RESULT_BYTES,
) -> CallResult:
    keywords = checked_arguments(tool, raw_args)
    if isinstance(keywords, CallResult):
        return keywords
    timeout_s = tool.timeout_s or timeout_s
    token = _CURRENT.set(context)
    deadline = asyncio.timeout(timeout_s)
    try:
        async with deadline:
            if tool.arguments is None:
                value = await tool.fn(dict(raw_args))
            elif tool.is_async:
                value = await tool.fn(**keywords)
            else:
                value = await _in_own_thread(tool, keywords, context)
    except TimeoutError as exc:
        if deadline.expired():
            return error_result(f"tool {tool.name!r} timed out after {timeout_s:g} s")
        return _failed(tool, exc)
    except ToolError as exc:
        return error_result(str(exc))
    except Exception as exc:
        return _failed(tool, exc)
    finally:
        _CURRENT.reset(token)
    return _serialised(tool, value, max_result_bytes)


def _failed(tool: Tool, exc: BaseException) -> CallResult:
    log.info("tool %s failed: %s", tool.name, type(exc).__name__)
    return error_result(f"tool {tool.name!r} failed: {type(exc).__name__}: {exc}")


def _serialised(tool: Tool, value: Any, max_result_bytes: int) -> CallResult:
    try:
        jsonable = _ANY.dump_python(value, mode="json")
        encoded = orjson.dumps(
            jsonable
        )  # what events are written with: it refuses ints past 64 bits
    except Exception as exc:  # pydantic's serialisation error, orjson's TypeError
        return error_result(f"tool {tool.name!r} returned a value that is not JSON: {exc}")
    if len(encoded) <= max_result_bytes:
        return CallResult(result=jsonable)
    kept = encoded[:max_result_bytes].decode("utf-8", "ignore")
    note = (
        f" [truncated: the result was {len(encoded)} bytes of JSON, "
        f"over the limit of {max_result_bytes}]"
    )
    return CallResult(result=kept + note)


async def _in_own_thread(tool: Tool, keywords: dict[str, Any], context: ToolCall) -> Any:
    """Run a sync tool in a daemon thread of its own, with this task's context.

    Not the loop's default executor: an abandoned tool that never returns would
    hold one of its few workers for good and starve everything else using it.
    """
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[Any] = loop.create_future()
    copied = contextvars.copy_context()

    def settle(value: Any, error: BaseException | None) -> None:
        if outcome.done():  # cancelled or timed out: the late result is discarded
            log.info(
                "tool %s (call %s) finished after it was abandoned", tool.name, context.call_id
            )
            return
        if error is not None:
            outcome.set_exception(error)
        else:
            outcome.set_result(value)

    def work() -> None:
        value: Any = None
        error: BaseException | None = None
        try:
            value = copied.run(tool.fn, **keywords)
        except BaseException as exc:  # even SystemExit must not kill the thread silently
            error = exc if isinstance(exc, Exception) else RuntimeError(repr(exc))
        # A closed loop raises RuntimeError: nobody is waiting for this result any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=work, name=f"tool-{tool.name}-{context.call_id}", daemon=True).start()
    return await outcome
