"""AnthropicLLM against a local mock of the Messages streaming API: text, tool use, usage
and the stop reason as parts, and every way a request or its stream can fail."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import aclosing

import httpx2
import pytest
from pydantic import JsonValue

from consumers.agents import AgentsFile, load
from consumers.llm.anthropic import CLASSIFY_MAX_TOKENS, AnthropicLLM
from consumers.llm.base import (
    ChatMessage,
    Prompt,
    TextBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
)
from consumers.llm.parts import Part, StopPart, TextPart, ToolCallPart, UsagePart
from consumers.router import CLASSIFIER_SYSTEM, classifier_question, model_classifier, route
from slipstream.errors import ConfigError, ProviderError
from tests.anthropic_mock import (
    MockAnthropic,
    MockUsage,
    drop_midstream,
    end_early,
    ok,
    overloaded,
    running_mock,
    sse_error_midstream,
    stall,
    status,
    text,
    tool_use,
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


async def collect(parts: AsyncIterator[Part], into: list[Part]) -> None:
    async for part in parts:
        into.append(part)


def transport_error(error: BaseException) -> BaseException | None:
    """The httpx2 error behind a provider error, raw or wrapped by the SDK."""
    cause = error.__cause__
    while cause is not None and not isinstance(cause, httpx2.HTTPError):
        cause = cause.__cause__
    return cause


def texts(parts: list[Part]) -> list[str]:
    return [p.text for p in parts if isinstance(p, TextPart)]


async def test_streams_chunks_in_order_and_sends_the_request(
    mock: MockAnthropic, make_llm: _Factory
) -> None:
    mock.script(ok("Hel", "lo", ", world"))
    got: list[Part] = []
    async with make_llm() as llm:
        await collect(llm.stream(PROMPT), got)

    assert texts(got) == ["Hel", "lo", ", world"]
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
                assert chunk == TextPart("first")
                break
        # The client is still usable afterwards: the abandoned response did not wedge it.
        got: list[Part] = []
        await collect(llm.stream(PROMPT), got)

    assert texts(got) == ["again"]
    assert len(mock.requests) == 2


async def test_an_agents_model_tokens_and_temperature_replace_the_defaults(
    mock: MockAnthropic, make_llm: _Factory
) -> None:
    """The agents file's `model`, `max_tokens` and `temperature` reach the request."""
    mock.script(ok("x"), ok("y"))
    chosen = dataclasses.replace(PROMPT, model="claude-other", max_tokens=7, temperature=0.2)
    async with make_llm() as llm:
        await collect(llm.stream(chosen), [])
        await collect(llm.stream(PROMPT), [])

    first, second = (request.body for request in mock.requests)
    assert (first["model"], first["max_tokens"], first["temperature"]) == ("claude-other", 7, 0.2)
    assert (second["model"], second["max_tokens"]) == ("claude-test", 50)
    assert "temperature" not in second


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
    got: list[Part] = []
    async with make_llm() as llm:
        await collect(llm.stream(prompt), got)

    assert texts(got) == [" and goodbye."]
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
    got: list[Part] = []
    async with make_llm(max_retries=2) as llm:
        await collect(llm.stream(PROMPT), got)

    assert texts(got) == ["made ", "it"]
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
    assert caught.value.summary == "overloaded (HTTP 529)"  # what users see: no body
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
    got: list[Part] = []
    async with make_llm(max_retries=2) as llm:
        with pytest.raises(ProviderError) as caught:
            await collect(llm.stream(PROMPT), got)

    assert texts(got) == ["partial ", "answer"]
    assert caught.value.retryable is True
    assert "overloaded_error" in str(caught.value)
    assert "Overloaded" in str(caught.value)
    assert caught.value.summary == "overloaded mid-answer"
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
    assert "bad turn" not in caught.value.summary


async def test_connection_dropped_mid_stream_is_retryable(
    mock: MockAnthropic, make_llm: _Factory
) -> None:
    mock.script(drop_midstream("before ", "the drop"))
    got: list[Part] = []
    async with make_llm(max_retries=2) as llm:
        with pytest.raises(ProviderError) as caught:
            await collect(llm.stream(PROMPT), got)

    assert texts(got) == ["before ", "the drop"]
    assert caught.value.retryable is True
    assert isinstance(transport_error(caught.value), httpx2.RemoteProtocolError)
    assert caught.value.summary == "the connection to the model provider broke"
    assert len(mock.requests) == 1


async def test_stream_ending_without_message_stop_is_retryable(
    mock: MockAnthropic, make_llm: _Factory
) -> None:
    mock.script(end_early("cut ", "off"))
    got: list[Part] = []
    async with make_llm() as llm:
        with pytest.raises(ProviderError) as caught:
            await collect(llm.stream(PROMPT), got)

    assert texts(got) == ["cut ", "off"]
    assert caught.value.retryable is True
    assert "message_stop" in str(caught.value)
    assert caught.value.summary == "the answer was cut off"


async def test_stalled_stream_times_out_as_retryable(
    mock: MockAnthropic, make_llm: _Factory
) -> None:
    mock.script(stall("slow"))
    got: list[Part] = []
    async with make_llm(timeout_s=0.5) as llm:
        with pytest.raises(ProviderError) as caught:
            await collect(llm.stream(PROMPT), got)

    assert texts(got) == ["slow"]
    assert caught.value.retryable is True
    assert isinstance(transport_error(caught.value), httpx2.ReadTimeout)
    assert caught.value.summary == "timed out"


@pytest.mark.parametrize(
    ("code", "error_type", "message", "summary"),
    [
        (401, "authentication_error", "invalid x-api-key", "provider refused the credentials"),
        (
            400,
            "invalid_request_error",
            "max_tokens: must be at least 1",
            "provider refused the request",
        ),
        (403, "permission_error", "not allowed", "provider refused the credentials"),
        (404, "not_found_error", "model: claude-test", "provider refused the request"),
        (
            413,
            "request_too_large",
            "Request exceeds the maximum size",
            "provider refused the request",
        ),
    ],
)
async def test_client_errors_are_not_retryable(
    mock: MockAnthropic,
    make_llm: _Factory,
    code: int,
    error_type: str,
    message: str,
    summary: str,
) -> None:
    mock.script(status(code, error_type, message))
    async with make_llm(max_retries=2) as llm:
        with pytest.raises(ProviderError) as caught:
            await collect(llm.stream(PROMPT), [])

    assert caught.value.retryable is False
    assert str(code) in str(caught.value)
    assert error_type in str(caught.value)
    assert message in str(caught.value)
    assert caught.value.summary == f"{summary} (HTTP {code})"  # the code, not the body
    assert len(mock.requests) == 1


@pytest.mark.parametrize(
    ("code", "error_type", "summary"),
    [
        (429, "rate_limit_error", "rate limited"),
        (500, "api_error", "provider failed"),
        (408, "timeout_error", "timed out"),
        (409, "conflict", "provider refused the request"),
    ],
)
async def test_transient_statuses_are_retryable(
    mock: MockAnthropic, make_llm: _Factory, code: int, error_type: str, summary: str
) -> None:
    mock.script(status(code, error_type, "try later"))
    async with make_llm(max_retries=0) as llm:
        with pytest.raises(ProviderError) as caught:
            await collect(llm.stream(PROMPT), [])

    assert caught.value.retryable is True
    assert str(code) in str(caught.value)
    assert caught.value.summary == f"{summary} (HTTP {code})"


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
    assert caught.value.summary == "could not reach the model provider"


async def test_base_url_comes_from_the_environment_when_not_given(
    mock: MockAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", mock.url)
    mock.script(ok("from ", "env"))
    llm = AnthropicLLM(api_key="test-key", model="claude-test", max_tokens=50, max_retries=0)
    got: list[Part] = []
    try:
        await collect(llm.stream(PROMPT), got)
    finally:
        await llm.aclose()

    assert texts(got) == ["from ", "env"]
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


async def test_usage_and_the_stop_reason_follow_the_text(
    mock: MockAnthropic, make_llm: _Factory
) -> None:
    mock.script(ok("Hel", "lo", stop_reason="max_tokens"))
    got: list[Part] = []
    async with make_llm() as llm:
        await collect(llm.stream(PROMPT), got)

    assert got == [
        TextPart("Hel"),
        TextPart("lo"),
        UsagePart(25, 3, 0, 0, "claude-test"),
        StopPart("max_tokens"),
    ]


async def test_streamed_tool_calls_arrive_whole_with_usage_and_tool_use_stop(
    mock: MockAnthropic, make_llm: _Factory
) -> None:
    usage = MockUsage(
        input_tokens=120, output_tokens=42, cache_read_tokens=100, cache_write_tokens=7
    )
    mock.script(
        ok(
            text("Let me ", "work it out."),
            tool_use("toolu_1", "calculator", '{"expr', 'ession": "2+', '2", "n": [1, ', "2]}"),
            tool_use("toolu_2", "now"),  # no arguments: no input_json_delta at all
            usage=usage,
        )
    )
    got: list[Part] = []
    async with make_llm() as llm:
        await collect(llm.stream(PROMPT), got)

    assert got == [
        TextPart("Let me "),
        TextPart("work it out."),
        ToolCallPart("toolu_1", "calculator", {"expression": "2+2", "n": [1, 2]}),
        ToolCallPart("toolu_2", "now", {}),
        UsagePart(120, 42, 100, 7, "claude-test"),
        StopPart("tool_use"),
    ]


async def test_tools_tool_calls_and_results_are_sent_in_the_request(
    mock: MockAnthropic, make_llm: _Factory
) -> None:
    mock.script(ok("Four."))
    schema: dict[str, JsonValue] = {
        "type": "object",
        "properties": {"expression": {"type": "string"}},
        "required": ["expression"],
    }
    prompt = Prompt(
        system="Use tools.",
        messages=(
            ChatMessage("user", "What is 2+2, and the time?"),
            ChatMessage(
                "assistant",
                (
                    TextBlock("Checking."),
                    ToolUseBlock("toolu_1", "calculator", {"expression": "2+2"}),
                    ToolUseBlock("toolu_2", "now", {}),
                ),
            ),
            ChatMessage(
                "user",
                (
                    ToolResultBlock("toolu_1", {"value": 4}),
                    ToolResultBlock("toolu_2", "no clock here", is_error=True),
                ),
            ),
        ),
        tools=(ToolSpec("calculator", "Does arithmetic.", schema),),
    )
    async with make_llm() as llm:
        await collect(llm.stream(prompt), [])

    body = mock.requests[0].body
    assert body["tools"] == [
        {"name": "calculator", "description": "Does arithmetic.", "input_schema": schema}
    ]
    assert body["messages"] == [
        {"role": "user", "content": "What is 2+2, and the time?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "calculator",
                    "input": {"expression": "2+2"},
                },
                {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": '{"value":4}',
                    "is_error": False,
                },
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": "no clock here",
                    "is_error": True,
                },
            ],
        },
    ]


async def test_a_prompt_without_tools_sends_no_tools(
    mock: MockAnthropic, make_llm: _Factory
) -> None:
    mock.script(ok("x"))
    async with make_llm() as llm:
        await collect(llm.stream(PROMPT), [])

    assert "tools" not in mock.requests[0].body


async def test_connection_dropped_mid_tool_input_is_retryable_and_drops_the_partial_call(
    mock: MockAnthropic, make_llm: _Factory
) -> None:
    mock.script(
        drop_midstream(
            text("Two calls."),
            tool_use("toolu_1", "now", '{"zone": "UTC"}'),
            tool_use("toolu_2", "calculator", '{"expression": "1+'),
        )
    )
    got: list[Part] = []
    async with make_llm(max_retries=2) as llm:
        with pytest.raises(ProviderError) as caught:
            await collect(llm.stream(PROMPT), got)

    assert caught.value.retryable is True
    assert isinstance(transport_error(caught.value), httpx2.RemoteProtocolError)
    # The finished call is given, the cut one never is; the started call's usage still counts.
    assert got == [
        TextPart("Two calls."),
        ToolCallPart("toolu_1", "now", {"zone": "UTC"}),
        UsagePart(25, 1, 0, 0, "claude-test"),
    ]
    assert len(mock.requests) == 1


async def test_error_event_mid_tool_input_is_retryable_and_drops_the_partial_call(
    mock: MockAnthropic, make_llm: _Factory
) -> None:
    mock.script(sse_error_midstream(tool_use("toolu_1", "calculator", '{"expr')))
    got: list[Part] = []
    async with make_llm(max_retries=2) as llm:
        with pytest.raises(ProviderError) as caught:
            await collect(llm.stream(PROMPT), got)

    assert caught.value.retryable is True
    assert "overloaded_error" in str(caught.value)
    assert not [p for p in got if isinstance(p, ToolCallPart | StopPart)]
    assert len(mock.requests) == 1


async def test_stream_ending_mid_tool_input_without_message_stop_is_retryable(
    mock: MockAnthropic, make_llm: _Factory
) -> None:
    mock.script(end_early(tool_use("toolu_1", "calculator", '{"expression": ')))
    got: list[Part] = []
    async with make_llm() as llm:
        with pytest.raises(ProviderError) as caught:
            await collect(llm.stream(PROMPT), got)

    assert caught.value.retryable is True
    assert "message_stop" in str(caught.value)
    assert got == [UsagePart(25, 1, 0, 0, "claude-test")]


@pytest.mark.parametrize(("raw", "why"), [('{"expression": ', "not JSON"), ("[1, 2]", "object")])
async def test_tool_input_that_is_not_a_json_object_is_a_retryable_error_naming_the_tool(
    mock: MockAnthropic, make_llm: _Factory, raw: str, why: str
) -> None:
    mock.script(ok(tool_use("toolu_9", "calculator", raw)))
    async with make_llm() as llm:
        with pytest.raises(ProviderError) as caught:
            await collect(llm.stream(PROMPT), [])

    assert caught.value.retryable is True
    assert "'calculator'" in str(caught.value) and "toolu_9" in str(caught.value)
    assert why in str(caught.value)


async def test_as_the_routers_classifier_it_makes_a_short_call_without_tools(
    mock: MockAnthropic, make_llm: _Factory
) -> None:
    mock.script(ok("crit", "ic"), ok("I would say the writer"), overloaded())
    shipped = load()
    async with make_llm() as llm:
        asking = model_classifier(llm, "assistant", timeout_s=5)
        chosen = await route("A note about Friday", None, classifying(shipped), asking)
        unsure = await route("A note about Friday", None, classifying(shipped), asking)
        failed = await route("A note about Friday", None, classifying(shipped), asking)
    assert (chosen.agents, chosen.by) == (("critic",), "classifier")
    assert chosen.usage is not None and chosen.usage.model == "claude-test"
    assert chosen.usage.input_tokens == 25
    body = mock.requests[0].body
    assert body["max_tokens"] == CLASSIFY_MAX_TOKENS and "tools" not in body
    assert body["system"] == CLASSIFIER_SYSTEM
    assert body["messages"] == [
        {"role": "user", "content": classifier_question("A note about Friday", shipped.agents)}
    ]
    assert (unsure.agents, unsure.by) == (("assistant",), "default")
    assert unsure.reason == "the classifier answered 'I would say the writer', not an agent's name"
    assert (failed.agents, failed.by) == (("assistant",), "default")
    assert failed.reason == "the classifier failed (overloaded (HTTP 529)); the default"


def classifying(agents_file: AgentsFile) -> AgentsFile:
    router = agents_file.router.model_copy(update={"classifier": True})
    return agents_file.model_copy(update={"router": router})


async def test_dotted_tool_names_are_sent_as_wire_names_and_answered_by_theirs(
    mock: MockAnthropic, make_llm: _Factory
) -> None:
    # The Messages API takes ^[a-zA-Z0-9_-]{1,64}$: `mcp.test.add` goes out as
    # `mcp__test__add`, and the model's call of that comes back as `mcp.test.add`.
    mock.script(ok(tool_use("toolu_9", "mcp__test__add", '{"a": 2, "b": 3}')))
    schema: dict[str, JsonValue] = {"type": "object", "properties": {}}
    prompt = Prompt(
        system="Use tools.",
        messages=(
            ChatMessage("user", "Add."),
            ChatMessage("assistant", (ToolUseBlock("toolu_1", "mcp.test.add", {"a": 1}),)),
            ChatMessage("user", (ToolResultBlock("toolu_1", "1"),)),
        ),
        tools=(ToolSpec("mcp.test.add", "Adds.", schema), ToolSpec("now", "Time.", schema)),
    )
    got: list[Part] = []
    async with make_llm() as llm:
        await collect(llm.stream(prompt), got)

    body = mock.requests[0].body
    assert [t["name"] for t in body["tools"]] == ["mcp__test__add", "now"]
    assert body["messages"][1]["content"][0]["name"] == "mcp__test__add"
    assert ToolCallPart("toolu_9", "mcp.test.add", {"a": 2, "b": 3}) in got
