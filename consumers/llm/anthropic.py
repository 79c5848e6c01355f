"""The Anthropic Messages API as an `LLM`: streams text deltas and turns every SDK or
transport failure into a `ProviderError` that says whether a retry can help."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import httpx2
from anthropic.types import AssistantMessageParam, MessageParam, UserMessageParam

from consumers.llm.base import ChatMessage, Prompt
from slipstream.errors import ConfigError, ProviderError

# Error types the API can also send inside a 200 stream (`event: error`), where there is
# no meaningful status code to judge by.
_RETRYABLE_ERROR_TYPES = frozenset(
    {"overloaded_error", "api_error", "rate_limit_error", "timeout_error"}
)


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

    async def stream(self, prompt: Prompt) -> AsyncIterator[str]:
        # A trailing assistant message goes through unchanged: the Messages API treats it
        # as a prefill and continues it.
        messages = [_message_param(message) for message in prompt.messages]
        stopped = False
        try:
            async with self._client.messages.stream(
                model=self._model,
                max_tokens=self._max_tokens,
                messages=messages,
                system=prompt.system or anthropic.omit,
            ) as stream:
                # Events rather than `text_stream`, so the end of the message is visible:
                # a body that ends cleanly but without `message_stop` is a cut-off answer.
                async for event in stream:
                    if event.type == "content_block_delta" and event.delta.type == "text_delta":
                        yield event.delta.text
                    elif event.type == "message_stop":
                        stopped = True
        except anthropic.APIStatusError as exc:
            raise _status_error(exc) from exc
        except anthropic.APITimeoutError as exc:
            raise ProviderError(
                f"anthropic: request timed out: {exc.message}", retryable=True
            ) from exc
        except anthropic.APIConnectionError as exc:
            raise ProviderError(
                f"anthropic: connection failed: {_cause_text(exc)}", retryable=True
            ) from exc
        except anthropic.AnthropicError as exc:
            raise ProviderError(f"anthropic: {type(exc).__name__}: {exc}", retryable=False) from exc
        # The SDK only wraps failures up to the response headers; once the body is
        # streaming, httpx2's own errors (RemoteProtocolError for a dropped connection,
        # ReadTimeout for a stall) come through raw.
        except httpx2.TimeoutException as exc:
            raise ProviderError(
                f"anthropic: response stream timed out ({type(exc).__name__})", retryable=True
            ) from exc
        except httpx2.TransportError as exc:
            raise ProviderError(
                f"anthropic: response stream broke ({type(exc).__name__}: {exc})", retryable=True
            ) from exc
        except httpx2.HTTPError as exc:
            raise ProviderError(f"anthropic: {type(exc).__name__}: {exc}", retryable=False) from exc
        if not stopped:
            raise ProviderError(
                "anthropic: response stream ended without message_stop (answer cut off)",
                retryable=True,
            )


def _message_param(message: ChatMessage) -> MessageParam:
    if message.role == "assistant":
        return AssistantMessageParam(role="assistant", content=message.content)
    return UserMessageParam(role="user", content=message.content)


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
        )
    retryable = status in (408, 409, 429) or status >= 500
    return ProviderError(
        f"anthropic: HTTP {status} {error_type}: {detail}{request_id}", retryable=retryable
    )


def _cause_text(exc: BaseException) -> str:
    cause = exc.__cause__
    if cause is None:
        return str(exc)
    return f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
