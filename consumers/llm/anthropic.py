"""The Anthropic Messages API as an `LLM`: streams text, whole tool calls, usage and the
stop reason as parts, and turns every SDK or transport failure into a `ProviderError`
that says whether a retry can help."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import cast

import anthropic
import httpx2
from anthropic.types import (
    AssistantMessageParam,
    ContentBlockParam,
    MessageDeltaUsage,
    MessageParam,
    RawMessageStreamEvent,
    TextBlockParam,
    ToolParam,
    ToolResultBlockParam,
    ToolUseBlockParam,
    Usage,
    UserMessageParam,
)
from anthropic.types.tool_param import InputSchema
from pydantic import JsonValue

from consumers.llm.base import (
    ChatMessage,
    ContentBlock,
    Prompt,
    TextBlock,
    ToolSpec,
    ToolUseBlock,
)
from consumers.llm.parts import Part, StopPart, TextPart, ToolCallPart, UsagePart
from consumers.llm.tool_names import registry_names, wire_name
from slipstream.errors import ConfigError, ProviderError

# Error types the API can also send inside a 200 stream (`event: error`), where there is
# no meaningful status code to judge by.
_RETRYABLE_ERROR_TYPES = frozenset(
    {"overloaded_error", "api_error", "rate_limit_error", "timeout_error"}
)


# The short texts users are shown (the full error goes to the worker's log only).
TIMED_OUT = "timed out"
UNREACHABLE = "could not reach the model provider"
_ERROR_TYPE_SUMMARIES = {
    "overloaded_error": "overloaded",
    "rate_limit_error": "rate limited",
    "timeout_error": "timed out",
    "api_error": "provider failed",
}

CLASSIFY_MAX_TOKENS = 32  # an agent's name (at most 64 characters) and some slack


class AnthropicLLM:
    name = "anthropic"

    def __init__(
        self,
        *,
        api_key: str | None,
        model: str,
        max_tokens: int,
        max_retries: int = 2,
        base_url: str | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        self._model = model
        self._max_tokens = max_tokens
        # base_url is left out when not given so the SDK resolves it itself, in its own
        # order: ANTHROPIC_BASE_URL, then profile config, then the public endpoint.
        self._client = (
            anthropic.AsyncAnthropic(api_key=api_key, max_retries=max_retries, timeout=timeout_s)
            if base_url is None
            else anthropic.AsyncAnthropic(
                api_key=api_key, max_retries=max_retries, timeout=timeout_s, base_url=base_url
            )
        )
        # Without a credential the SDK only complains (with a TypeError) at the first
        # request, deep inside a run; say so at startup instead.
        if (
            self._client.api_key is None
            and self._client.auth_token is None
            and self._client.credentials is None
        ):
            raise ConfigError(
                "anthropic provider has no credential: set ANTHROPIC_API_KEY "
                "(or ANTHROPIC_AUTH_TOKEN / an Anthropic profile)"
            )

    async def aclose(self) -> None:
        await self._client.close()

    async def stream(self, prompt: Prompt) -> AsyncIterator[Part]:
        # A trailing assistant message goes through unchanged: the Messages API treats it
        # as a prefill and continues it.
        messages = [_message_param(message) for message in prompt.messages]
        # A classification (the router's question) is a short text answer: an agent's
        # name. The router validates it; the text is all it reads.
        classifying = prompt.classify
        tools = [_tool_param(tool) for tool in prompt.tools] if classifying is None else []
        # The API's tool names are wire names (`mcp__files__read`); the calls it
        # streams are mapped back to the registry's (`mcp.files.read`).
        reading = _Reading(registry_names(tool.name for tool in prompt.tools))
        failure: ProviderError | None = None
        try:
            # Raw events (no SDK accumulation): the partial tool input is ours to join,
            # and the end of the message is visible: a body that ends cleanly but
            # without `message_stop` is a cut-off answer.
            async with await self._client.messages.create(
                model=prompt.model or self._model,
                max_tokens=(prompt.max_tokens or self._max_tokens)
                if classifying is None
                else CLASSIFY_MAX_TOKENS,
                messages=messages,
                system=prompt.system or anthropic.omit,
                tools=tools or anthropic.omit,
                # This SDK line has no `temperature` argument: an agent that sets one
                # (agents file) sends it as a body field, as the Messages API reads it.
                extra_body=None
                if prompt.temperature is None
                else {"temperature": prompt.temperature},
                stream=True,
            ) as stream:
                async for event in stream:
                    for part in reading.take(event):
                        yield part
        except (anthropic.AnthropicError, httpx2.HTTPError) as exc:
            failure = _provider_error(exc)
        if failure is None and not reading.stopped:
            failure = ProviderError(
                "anthropic: response stream ended without message_stop (answer cut off)",
                retryable=True,
                summary="the answer was cut off",
            )
        if failure is not None:
            # The tokens of a call that broke after it started are spent all the same.
            usage = reading.usage()
            if usage is not None:
                yield usage
            raise failure from failure.__cause__


@dataclass
class _ToolInput:
    call_id: str
    name: str
    json: list[str] = field(default_factory=list)


class _Reading:
    """Turns the Messages API's stream events into parts.

    A tool call is only yielded at its block's `content_block_stop`, once its input
    JSON is whole: a call cut off by a failure is never seen by the caller.
    """

    def __init__(self, names: dict[str, str] | None = None) -> None:
        self.names = names or {}  # wire name -> registry name
        self.model = ""
        self.counts: dict[str, int] = {}
        self.stop_reason: str | None = None
        self.stopped = False
        self.tools: dict[int, _ToolInput] = {}

    def take(self, event: RawMessageStreamEvent) -> list[Part]:
        if event.type == "message_start":
            self.model = event.message.model
            self._count(event.message.usage)
        elif event.type == "content_block_start":
            block = event.content_block
            if block.type == "tool_use":
                name = self.names.get(block.name, block.name)
                self.tools[event.index] = _ToolInput(block.id, name)
        elif event.type == "content_block_delta":
            delta = event.delta
            if delta.type == "text_delta":
                return [TextPart(delta.text)]
            if delta.type == "input_json_delta" and event.index in self.tools:
                self.tools[event.index].json.append(delta.partial_json)
        elif event.type == "content_block_stop":
            tool = self.tools.pop(event.index, None)
            if tool is not None:
                return [ToolCallPart(tool.call_id, tool.name, _tool_args(tool))]
        elif event.type == "message_delta":
            self._count(event.usage)
            self.stop_reason = event.delta.stop_reason
        elif event.type == "message_stop":
            self.stopped = True
            usage = self.usage()
            parts: list[Part] = [usage] if usage is not None else []
            return [*parts, StopPart(self.stop_reason or "end_turn")]
        return []

    def _count(self, usage: Usage | MessageDeltaUsage) -> None:
        # message_delta's counts are cumulative and may leave the input ones out (None).
        for name, value in (
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cache_read", usage.cache_read_input_tokens),
            ("cache_write", usage.cache_creation_input_tokens),
        ):
            if value is not None:
                self.counts[name] = value

    def usage(self) -> UsagePart | None:
        if not self.counts:
            return None
        return UsagePart(
            input_tokens=self.counts.get("input", 0),
            output_tokens=self.counts.get("output", 0),
            cache_read_tokens=self.counts.get("cache_read", 0),
            cache_write_tokens=self.counts.get("cache_write", 0),
            model=self.model,
        )


def _tool_args(tool: _ToolInput) -> dict[str, JsonValue]:
    text = "".join(tool.json)
    if not text.strip():
        return {}  # a call without arguments streams no input at all
    try:
        args = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProviderError(
            f"anthropic: tool call {tool.name!r} ({tool.call_id}) has input that is not JSON: "
            f"{exc}",
            retryable=True,
            summary="the model sent a tool call that is not JSON",
        ) from exc
    if not isinstance(args, dict):
        raise ProviderError(
            f"anthropic: tool call {tool.name!r} ({tool.call_id}) has input that is not a JSON "
            f"object ({type(args).__name__})",
            retryable=True,
            summary="the model sent a tool call that is not a JSON object",
        )
    return args


def _provider_error(exc: anthropic.AnthropicError | httpx2.HTTPError) -> ProviderError:
    """What a failure means for the run, with the failure as its cause."""
    error = _classified(exc)
    error.__cause__ = exc
    return error


def _classified(exc: anthropic.AnthropicError | httpx2.HTTPError) -> ProviderError:
    if isinstance(exc, anthropic.APIStatusError):
        return _status_error(exc)
    # Releases of the SDK differ in what a failure once the body is streaming
    # looks like: older ones let httpx2's error through raw, newer ones wrap it in
    # APIConnectionError / APITimeoutError. What happened is the transport error.
    transport = exc.__cause__ if isinstance(exc, anthropic.APIConnectionError) else None
    if isinstance(transport, httpx2.TransportError) and not isinstance(
        transport, httpx2.ConnectError | httpx2.ConnectTimeout
    ):
        return _classified(transport)
    if isinstance(exc, anthropic.APITimeoutError):
        return ProviderError(
            f"anthropic: request timed out: {exc.message}", retryable=True, summary=TIMED_OUT
        )
    if isinstance(exc, anthropic.APIConnectionError):
        return ProviderError(
            f"anthropic: connection failed: {_cause_text(exc)}",
            retryable=True,
            summary=UNREACHABLE,
        )
    if isinstance(exc, anthropic.AnthropicError):
        return ProviderError(
            f"anthropic: {type(exc).__name__}: {exc}",
            retryable=False,
            summary=f"provider error ({type(exc).__name__})",
        )
    # A failure once the body is streaming (RemoteProtocolError for a dropped
    # connection, ReadTimeout for a stall), raw or unwrapped above.
    if isinstance(exc, httpx2.TimeoutException):
        return ProviderError(
            f"anthropic: response stream timed out ({type(exc).__name__})",
            retryable=True,
            summary=TIMED_OUT,
        )
    if isinstance(exc, httpx2.TransportError):
        return ProviderError(
            f"anthropic: response stream broke ({type(exc).__name__}: {exc})",
            retryable=True,
            summary="the connection to the model provider broke",
        )
    return ProviderError(
        f"anthropic: {type(exc).__name__}: {exc}",
        retryable=False,
        summary=f"provider error ({type(exc).__name__})",
    )


def _message_param(message: ChatMessage) -> MessageParam:
    if isinstance(message.content, str):
        content: str | list[ContentBlockParam] = message.content
    else:
        content = [_block_param(block) for block in message.content]
    if message.role == "assistant":
        return AssistantMessageParam(role="assistant", content=content)
    return UserMessageParam(role="user", content=content)


def _block_param(block: ContentBlock) -> ContentBlockParam:
    if isinstance(block, TextBlock):
        return TextBlockParam(type="text", text=block.text)
    if isinstance(block, ToolUseBlock):
        return ToolUseBlockParam(
            type="tool_use",
            id=block.call_id,
            name=wire_name(block.name),
            input=dict[str, object](block.args),
        )
    result = block.result
    return ToolResultBlockParam(
        type="tool_result",
        tool_use_id=block.call_id,
        content=result if isinstance(result, str) else json.dumps(result, separators=(",", ":")),
        is_error=block.is_error,
    )


def _tool_param(tool: ToolSpec) -> ToolParam:
    return ToolParam(
        name=wire_name(tool.name),
        description=tool.description,
        input_schema=cast("InputSchema", tool.input_schema),
    )


def _status_error(exc: anthropic.APIStatusError) -> ProviderError:
    status = exc.status_code
    error_type = exc.type or "unknown_error"
    detail = exc.api_message or exc.message
    request_id = f" [request-id {exc.request_id}]" if exc.request_id else ""
    if status == 200:
        # `event: error` mid-stream: the 200 was sent before the failure happened.
        return ProviderError(
            f"anthropic: {error_type} in the response stream: {detail}{request_id}",
            retryable=error_type in _RETRYABLE_ERROR_TYPES,
            summary=f"{_ERROR_TYPE_SUMMARIES.get(error_type, 'provider error')} mid-answer",
        )
    retryable = status in (408, 409, 429) or status >= 500
    return ProviderError(
        f"anthropic: HTTP {status} {error_type}: {detail}{request_id}",
        retryable=retryable,
        summary=status_summary(status),
    )


def status_summary(status: int) -> str:
    """What users are shown for an HTTP failure: its class and code, never its body."""
    if status == 429:
        what = "rate limited"
    elif status == 529:
        what = "overloaded"
    elif status == 408:
        what = "timed out"
    elif status in (401, 403):
        what = "provider refused the credentials"
    elif status >= 500:
        what = "provider failed"
    else:
        what = "provider refused the request"
    return f"{what} (HTTP {status})"


def _cause_text(exc: BaseException) -> str:
    cause = exc.__cause__
    if cause is None:
        return str(exc)
    return f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
