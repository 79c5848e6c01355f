"""AnthropicLLM against a local mock of the Messages streaming API."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import aclosing

import httpx2
import pytest

from consumers.llm.anthropic import AnthropicLLM
from consumers.llm.base import ChatMessage, Prompt
from slipstream.errors import ConfigError, ProviderError
from tests.anthropic_mock import (
    MockAnthropic,
    drop_midstream,
    end_early,
    ok,
    overloaded,
    running_mock,
    sse_error_midstream,
    stall,
    status,
)

PROMPT = Prompt(system="Be brief.", messages=(ChatMessage("user", "Say hello."),))


@pytest.fixture
def mock() -> Iterator[MockAnthropic]:
    with running_mock() as server:
        yield server


@pytest.fixture
def make_llm(mock: MockAnthropic) -> Iterator[_Factory]:
    factory = _Factory(mock)
    yield factory
    assert not factory.open, "every AnthropicLLM made in a test must be closed by it"


class _Factory:
    def __init__(self, mock: MockAnthropic) -> None:
        self.mock = mock
        self.open: list[AnthropicLLM] = []

    def __call__(self, *, max_retries: int = 0, timeout_s: float = 10.0) -> _Closing:
        llm = AnthropicLLM(
            api_key="test-key",
            model="claude-test",
            max_tokens=50,
            max_retries=max_retries,
            base_url=self.mock.url,
            timeout_s=timeout_s,
        )
        self.open.append(llm)
        return _Closing(llm, self.open)


class _Closing:
    def __init__(self, llm: AnthropicLLM, registry: list[AnthropicLLM]) -> None:
        self.llm = llm
        self.registry = registry

    async def __aenter__(self) -> AnthropicLLM:
        return self.llm

    async def __aexit__(self, *exc: object) -> None:
        await self.llm.aclose()
        self.registry.remove(self.llm)


def sent_api_key(headers: dict[str, str]) -> str | None:
    # anthropic 2.x sends the key as a bearer token; 0.x sent it as x-api-key.
    if "x-api-key" in headers:
        return headers["x-api-key"]
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token if scheme == "Bearer" else None


async def collect(chunks: AsyncIterator[str], into: list[str]) -> None:
    async for chunk in chunks:
        into.append(chunk)


async def test_streams_chunks_in_order_and_sends_the_request(
    mock: MockAnthropic, make_llm: _Factory
) -> None:
    mock.script(ok("Hel", "lo", ", world"))
    got: list[str] = []
    async with make_llm() as llm:
        await collect(llm.stream(PROMPT), got)

    assert got == ["Hel", "lo", ", world"]
    [request] = mock.requests
    assert request.path == "/v1/messages"
    assert sent_api_key(request.headers) == "test-key"
    assert "anthropic-version" in request.headers
    assert request.body["model"] == "claude-test"
    assert request.body["max_tokens"] == 50
    assert request.body["stream"] is True
    assert request.body["system"] == "Be brief."
    assert request.body["messages"] == [{"role": "user", "content": "Say hello."}]


async def test_abandoning_the_stream_releases_the_connection(
    mock: MockAnthropic, make_llm: _Factory
) -> None:
    mock.script(ok("first", "second", "third"), ok("again"))
    async with make_llm() as llm:
        stream = llm.stream(PROMPT)
        assert isinstance(stream, AsyncGenerator)
        async with aclosing(stream) as chunks:
            async for chunk in chunks:
                assert chunk == "first"
                break
        # The client is still usable afterwards: the abandoned response did not wedge it.
        got: list[str] = []
        await collect(llm.stream(PROMPT), got)

    assert got == ["again"]
    assert len(mock.requests) == 2


async def test_empty_system_is_left_out(mock: MockAnthropic, make_llm: _Factory) -> None:
    mock.script(ok("x"))
    async with make_llm() as llm:
        await collect(llm.stream(Prompt(system="", messages=PROMPT.messages)), [])

    assert "system" not in mock.requests[0].body


async def test_trailing_assistant_message_is_sent_last_as_prefill(
    mock: MockAnthropic, make_llm: _Factory
) -> None:
    mock.script(ok(" and goodbye."))
    prompt = Prompt(
        system="Be brief.",
        messages=(
            ChatMessage("user", "Hi"),
            ChatMessage("assistant", "Hello!"),
            ChatMessage("user", "Continue."),
            ChatMessage("assistant", "Hello again"),
        ),
    )
    got: list[str] = []
    async with make_llm() as llm:
        await collect(llm.stream(prompt), got)

    assert got == [" and goodbye."]
    assert mock.requests[0].body["messages"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Continue."},
        {"role": "assistant", "content": "Hello again"},
    ]


async def test_overloaded_twice_then_ok_is_retried_by_the_sdk(
    mock: MockAnthropic, make_llm: _Factory
) -> None:
    mock.script(overloaded(), overloaded(), ok("made ", "it"))
    got: list[str] = []
    async with make_llm(max_retries=2) as llm:
        await collect(llm.stream(PROMPT), got)

    assert got == ["made ", "it"]
    assert len(mock.requests) == 3
    assert [r.headers["x-stainless-retry-count"] for r in mock.requests] == ["0", "1", "2"]


async def test_overloaded_without_retries_is_a_retryable_error(
    mock: MockAnthropic, make_llm: _Factory
) -> None:
    mock.script(overloaded())
    async with make_llm(max_retries=0) as llm:
        with pytest.raises(ProviderError) as caught:
            await collect(llm.stream(PROMPT), [])

    assert caught.value.retryable is True
    assert "529" in str(caught.value)
    assert "overloaded_error" in str(caught.value)
    assert "Overloaded" in str(caught.value)
    assert len(mock.requests) == 1


async def test_overloaded_beyond_max_retries_is_a_retryable_error(
    mock: MockAnthropic, make_llm: _Factory
) -> None:
    mock.script(overloaded(), overloaded(), overloaded())
    async with make_llm(max_retries=2) as llm:
        with pytest.raises(ProviderError) as caught:
            await collect(llm.stream(PROMPT), [])

    assert caught.value.retryable is True
    assert len(mock.requests) == 3


async def test_error_event_mid_stream_is_retryable_after_the_text_before_it(
    mock: MockAnthropic, make_llm: _Factory
) -> None:
    mock.script(sse_error_midstream("partial ", "answer"))
    got: list[str] = []
    async with make_llm(max_retries=2) as llm:
        with pytest.raises(ProviderError) as caught:
            await collect(llm.stream(PROMPT), got)

    assert got == ["partial ", "answer"]
    assert caught.value.retryable is True
    assert "overloaded_error" in str(caught.value)
    assert "Overloaded" in str(caught.value)
    # Once text has streamed, the SDK does not retry: that is the caller's decision.
    assert len(mock.requests) == 1


async def test_non_retryable_error_event_mid_stream(
    mock: MockAnthropic, make_llm: _Factory
) -> None:
    mock.script(sse_error_midstream("a", error_type="invalid_request_error", message="bad turn"))
    async with make_llm() as llm:
        with pytest.raises(ProviderError) as caught:
            await collect(llm.stream(PROMPT), [])

    assert caught.value.retryable is False
    assert "bad turn" in str(caught.value)


async def test_connection_dropped_mid_stream_is_retryable(
    mock: MockAnthropic, make_llm: _Factory
) -> None:
    mock.script(drop_midstream("before ", "the drop"))
    got: list[str] = []
    async with make_llm(max_retries=2) as llm:
        with pytest.raises(ProviderError) as caught:
            await collect(llm.stream(PROMPT), got)

    assert got == ["before ", "the drop"]
    assert caught.value.retryable is True
    assert isinstance(caught.value.__cause__, httpx2.RemoteProtocolError)
    assert len(mock.requests) == 1


async def test_stream_ending_without_message_stop_is_retryable(
    mock: MockAnthropic, make_llm: _Factory
) -> None:
    mock.script(end_early("cut ", "off"))
    got: list[str] = []
    async with make_llm() as llm:
        with pytest.raises(ProviderError) as caught:
            await collect(llm.stream(PROMPT), got)

    assert got == ["cut ", "off"]
    assert caught.value.retryable is True
    assert "message_stop" in str(caught.value)


async def test_stalled_stream_times_out_as_retryable(
    mock: MockAnthropic, make_llm: _Factory
) -> None:
    mock.script(stall("slow"))
    got: list[str] = []
    async with make_llm(timeout_s=0.5) as llm:
        with pytest.raises(ProviderError) as caught:
            await collect(llm.stream(PROMPT), got)

    assert got == ["slow"]
    assert caught.value.retryable is True
    assert isinstance(caught.value.__cause__, httpx2.ReadTimeout)


@pytest.mark.parametrize(
    ("code", "error_type", "message"),
    [
        (401, "authentication_error", "invalid x-api-key"),
        (400, "invalid_request_error", "max_tokens: must be at least 1"),
        (403, "permission_error", "not allowed"),
        (404, "not_found_error", "model: claude-test"),
        (413, "request_too_large", "Request exceeds the maximum size"),
    ],
)
async def test_client_errors_are_not_retryable(
    mock: MockAnthropic, make_llm: _Factory, code: int, error_type: str, message: str
) -> None:
    mock.script(status(code, error_type, message))
    async with make_llm(max_retries=2) as llm:
        with pytest.raises(ProviderError) as caught:
            await collect(llm.stream(PROMPT), [])

    assert caught.value.retryable is False
    assert str(code) in str(caught.value)
    assert error_type in str(caught.value)
    assert message in str(caught.value)
    assert len(mock.requests) == 1


@pytest.mark.parametrize(
    ("code", "error_type"),
    [(429, "rate_limit_error"), (500, "api_error"), (408, "timeout_error"), (409, "conflict")],
)
async def test_transient_statuses_are_retryable(
    mock: MockAnthropic, make_llm: _Factory, code: int, error_type: str
) -> None:
    mock.script(status(code, error_type, "try later"))
    async with make_llm(max_retries=0) as llm:
        with pytest.raises(ProviderError) as caught:
            await collect(llm.stream(PROMPT), [])

    assert caught.value.retryable is True
    assert str(code) in str(caught.value)


async def test_unreachable_server_is_a_retryable_connection_error() -> None:
    with running_mock() as gone:
        url = gone.url
    llm = AnthropicLLM(
        api_key="test-key", model="claude-test", max_tokens=50, max_retries=0, base_url=url
    )
    try:
        with pytest.raises(ProviderError) as caught:
            await collect(llm.stream(PROMPT), [])
    finally:
        await llm.aclose()

    assert caught.value.retryable is True
    assert "connection" in str(caught.value)


async def test_base_url_comes_from_the_environment_when_not_given(
    mock: MockAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", mock.url)
    mock.script(ok("from ", "env"))
    llm = AnthropicLLM(api_key="test-key", model="claude-test", max_tokens=50, max_retries=0)
    got: list[str] = []
    try:
        await collect(llm.stream(PROMPT), got)
    finally:
        await llm.aclose()

    assert got == ["from ", "env"]
    assert len(mock.requests) == 1


def test_missing_credentials_fail_at_construction(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    for var in (
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_PROFILE",
        "ANTHROPIC_CONFIG_DIR",
        "ANTHROPIC_IDENTITY_TOKEN",
        "ANTHROPIC_IDENTITY_TOKEN_FILE",
        "ANTHROPIC_FEDERATION_RULE_ID",
        "ANTHROPIC_ORGANIZATION_ID",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))

    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        AnthropicLLM(api_key=None, model="claude-test", max_tokens=50)
