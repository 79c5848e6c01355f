"""fetch_url: allowed hosts only, no private addresses unless named, text only, bounded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import httpx
import pytest

from consumers.tools import CallResult, ToolCall, call
from consumers.tools.fetch_url import FetchPolicy, use_policy

ADDRESSES = {
    "example.com": ["93.184.216.34"],
    "docs.example.com": ["93.184.216.35"],
    "intranet.example.com": ["10.0.0.5"],
    "metadata.example.com": ["169.254.169.254"],
    "v6.example.com": ["2606:2800:220:1:248:1893:25c8:1946"],
    "loop6.example.com": ["::1"],
    "mapped.example.com": ["::ffff:127.0.0.1"],
    "wiki.internal": ["192.168.1.20"],
}
seen: list[httpx.Request] = []


async def resolve(host: str, port: int) -> list[str]:
    if host not in ADDRESSES:
        raise OSError(f"no such host {host}")
    return ADDRESSES[host]


async def forever() -> AsyncIterator[bytes]:
    yield b"never "
    await asyncio.Event().wait()


async def many_chunks() -> AsyncIterator[bytes]:
    for _ in range(100):
        yield b"y" * 1000


async def site(request: httpx.Request) -> httpx.Response:
    seen.append(request)
    path = request.url.path
    if path == "/page":
        return httpx.Response(
            200, text="<p>Hello from the page</p>", headers={"content-type": "text/html"}
        )
    if path == "/data":
        return httpx.Response(200, json={"a": 1})
    if path == "/image":
        return httpx.Response(200, content=b"\x89PNG", headers={"content-type": "image/png"})
    if path == "/declared-big":
        return httpx.Response(200, content=b"z" * 5000, headers={"content-type": "text/plain"})
    if path == "/streamed-big":
        return httpx.Response(200, content=many_chunks(), headers={"content-type": "text/plain"})
    if path == "/slow":
        return httpx.Response(200, content=forever(), headers={"content-type": "text/plain"})
    if path == "/to-metadata":
        return httpx.Response(302, headers={"location": "http://metadata.example.com/latest"})
    if path == "/to-page":
        return httpx.Response(301, headers={"location": "/page"})
    if path == "/loop":
        return httpx.Response(302, headers={"location": "/loop"})
    if path == "/latin1":
        return httpx.Response(
            200,
            content="café".encode("latin-1"),
            headers={"content-type": "text/plain; charset=latin-1"},
        )
    return httpx.Response(404, text="not here", headers={"content-type": "text/plain"})


POLICY = FetchPolicy(
    allow=frozenset({"*.example.com", "wiki.internal"}),
    max_bytes=4000,
    max_chars=1000,
    timeout_s=0.5,
    transport=httpx.MockTransport(site),
    resolve=resolve,
)


@pytest.fixture
def policy() -> Iterator[None]:
    seen.clear()
    previous = use_policy(POLICY)
    yield
    use_policy(previous)


def ctx() -> ToolCall:
    return ToolCall(run_id="t1.aaaaaaaaaaaaaaaa", thread_id="t1", call_id="call_f")


async def fetch(url: str) -> CallResult:
    return await call("fetch_url", {"url": url}, ctx())


def refused(result: CallResult, reason: str) -> bool:
    assert result.is_error, result
    assert reason in str(result.result), result.result
    return True


@pytest.mark.usefixtures("policy")
async def test_an_allowed_public_host_is_fetched_at_the_address_that_was_checked() -> None:
    result = await fetch("https://example.com/page")
    assert not result.is_error
    assert result.result == {
        "url": "https://example.com/page",
        "status": 200,
        "content_type": "text/html",
        "text": "<p>Hello from the page</p>",
        "truncated": False,
    }
    (request,) = seen
    assert request.url.host == "93.184.216.34"  # pinned: no second lookup
    assert request.headers["host"] == "example.com"
    assert request.extensions["sni_hostname"] == "example.com"


@pytest.mark.usefixtures("policy")
async def test_json_a_missing_page_a_redirect_and_a_charset() -> None:
    data = await fetch("https://docs.example.com/data")
    assert isinstance(data.result, dict) and data.result["text"] == '{"a":1}'
    missing = await fetch("https://example.com/nothing")
    assert isinstance(missing.result, dict) and missing.result["status"] == 404
    moved = await fetch("https://example.com/to-page")
    assert isinstance(moved.result, dict) and moved.result["url"] == "https://example.com/page"
    latin = await fetch("https://example.com/latin1")
    assert isinstance(latin.result, dict) and latin.result["text"] == "café"
    v6 = await fetch("http://v6.example.com/page")
    assert not v6.is_error and seen[-1].url.host == "2606:2800:220:1:248:1893:25c8:1946"


@pytest.mark.usefixtures("policy")
async def test_long_text_is_cut_and_said_so() -> None:
    use_policy(replace(POLICY, max_chars=5))
    result = await fetch("https://example.com/page")
    assert isinstance(result.result, dict)
    assert (result.result["text"], result.result["truncated"]) == ("<p>He", True)


async def test_fetch_is_off_when_no_host_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    previous = use_policy(None)  # from the environment
    try:
        monkeypatch.setenv("SLIPSTREAM_FETCH_ALLOW", "")
        assert refused(await fetch("https://example.com/page"), "fetch_url is off here")
        monkeypatch.setenv("SLIPSTREAM_FETCH_ALLOW", "example.org")
        assert refused(await fetch("https://example.com/page"), "host 'example.com' is not allowed")
    finally:
        use_policy(previous)


@pytest.mark.usefixtures("policy")
@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://example.org/page", "host 'example.org' is not allowed"),
        ("https://examplexcom/page", "host 'examplexcom' is not allowed"),
        ("ftp://example.com/page", "only http and https URLs"),
        ("file:///etc/passwd", "only http and https URLs"),
        ("not a url", "only http and https URLs"),
        ("https://unknown.example.com/", "host 'unknown.example.com' could not be resolved"),
    ],
)
async def test_hosts_outside_the_list_and_other_schemes_are_refused(url: str, reason: str) -> None:
    assert refused(await fetch(url), reason)
    assert seen == []


@pytest.mark.usefixtures("policy")
@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("intranet.example.com", "10.0.0.5"),
        ("metadata.example.com", "169.254.169.254"),
        ("loop6.example.com", "::1"),
        ("mapped.example.com", "::ffff:127.0.0.1"),
    ],
)
async def test_a_pattern_never_reaches_a_private_address(host: str, address: str) -> None:
    result = await fetch(f"http://{host}/page")
    assert refused(result, f"resolves to {address}, which is not a public address")
    assert seen == []


@pytest.mark.usefixtures("policy")
async def test_a_host_named_exactly_may_be_private() -> None:
    result = await fetch("http://wiki.internal/page")
    assert not result.is_error and seen[0].url.host == "192.168.1.20"


@pytest.mark.usefixtures("policy")
async def test_a_redirect_to_a_private_address_is_refused() -> None:
    assert refused(await fetch("https://example.com/to-metadata"), "169.254.169.254")
    assert [r.url.path for r in seen] == ["/to-metadata"]
    assert refused(await fetch("https://example.com/loop"), "more than 5 redirects")


@pytest.mark.usefixtures("policy")
@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/image", "the page is 'image/png', not text"),
        ("/declared-big", "the page is 5000 bytes, over the limit of 4000"),
        ("/streamed-big", "the page is over the limit of 4000 bytes"),
        ("/slow", "fetching from 'example.com' took over 0.5 s"),
    ],
)
async def test_what_is_not_text_too_large_or_too_slow_is_refused(path: str, reason: str) -> None:
    assert refused(await fetch(f"https://example.com{path}"), reason)


# --- a real server on loopback ------------------------------------------------------


@pytest.fixture
async def loopback() -> AsyncIterator[int]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = b"plain text from loopback"
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
            + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield port


async def test_a_local_server_named_exactly_is_fetched_and_refused_under_a_pattern(
    loopback: int,
) -> None:
    previous = use_policy(FetchPolicy(allow=frozenset({"127.0.0.1"}), timeout_s=5))
    try:
        result = await fetch(f"http://127.0.0.1:{loopback}/")
        assert isinstance(result.result, dict), result
        assert result.result["text"] == "plain text from loopback"
        use_policy(FetchPolicy(allow=frozenset({"*"}), timeout_s=5))
        assert refused(
            await fetch(f"http://localhost:{loopback}/"), "which is not a public address"
        )
        assert refused(
            await fetch(f"http://127.0.0.1:{loopback}/"), "which is not a public address"
        )
    finally:
        use_policy(previous)
