"""Browser defences over real HTTP and websockets: headers, the Host and Origin checks."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from service.security import CONTENT_SECURITY_POLICY, allowed_host_names, host_name
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.errors import ConfigError
from tests.harness import System, running_system

ATTACKER = "https://attacker.example"


@pytest.fixture
async def system(backend: Backend, settings: Settings) -> AsyncIterator[System]:
    async with running_system(backend, settings, workers=False) as running:
        yield running


async def stream_length(system: System, thread_id: str) -> int:
    view = await system.view(thread_id)
    length: int = await system.runtime.backend.client.xlen(view["stream_key"])
    return length


def own_origin(system: System) -> str:
    return f"http://127.0.0.1:{system.port}"


@pytest.mark.parametrize("path", ["/", "/static/js/main.js", "/api/threads", "/api/nowhere"])
async def test_every_answer_carries_the_headers(system: System, path: str) -> None:
    response = await system.http.get(path)
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8000", "127.0.0.2"])
async def test_a_host_not_allowed_gets_400(system: System, host: str) -> None:
    response = await system.http.get("/api/threads", headers={"Host": host})
    assert response.status_code == 400
    assert response.json() == {"detail": "host not allowed"}


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:1234", "127.0.0.1", "[::1]:8000"])
async def test_loopback_hosts_are_allowed(system: System, host: str) -> None:
    response = await system.http.get("/api/threads", headers={"Host": host})
    assert response.status_code == 200, response.text


async def test_a_star_allows_any_host(backend: Backend, settings: Settings) -> None:
    anyone = dataclasses.replace(settings, allowed_hosts=("*",))
    async with running_system(backend, anyone, workers=False) as system:
        response = await system.http.get("/api/threads", headers={"Host": "chat.example"})
        assert response.status_code == 200, response.text


def test_the_host_allow_list_defaults_to_loopback_and_the_bound_host() -> None:
    assert allowed_host_names((), "10.0.0.5") == {"127.0.0.1", "localhost", "[::1]", "10.0.0.5"}
    assert allowed_host_names((), "::") == {"127.0.0.1", "localhost", "[::1]", "[::]"}
    assert allowed_host_names(("Chat.Example",), "127.0.0.1") == {"chat.example"}
    assert host_name("[::1]:8000") == "[::1]"
    assert host_name("example.com:80") == "example.com"


def test_allowed_origins_must_be_origins() -> None:
    good = Settings.from_env({"SLIPSTREAM_ALLOWED_ORIGINS": "https://chat.example, http://a:1"})
    assert good.allowed_origins == ("https://chat.example", "http://a:1")
    with pytest.raises(ConfigError, match="not an origin"):
        Settings.from_env({"SLIPSTREAM_ALLOWED_ORIGINS": "chat.example"})
    with pytest.raises(ConfigError, match="not an origin"):
        Settings.from_env({"SLIPSTREAM_ALLOWED_ORIGINS": "https://chat.example/app"})


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": ATTACKER, "Content-Type": "text/plain"},
        {"Origin": ATTACKER, "Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "cross-site", "Content-Type": "text/plain"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "null"},
    ],
    ids=["origin", "origin-and-fetch-site", "fetch-site", "same-site", "null-origin"],
)
async def test_a_cross_origin_post_is_refused_and_appends_nothing(
    system: System, headers: dict[str, str]
) -> None:
    thread_id = await system.new_thread()
    before = await stream_length(system, thread_id)
    response = await system.http.post(
        f"/api/threads/{thread_id}/messages",
        content=orjson.dumps({"content": "transfer everything"}),
        headers=headers,
    )
    assert response.status_code == 403
    assert response.json() == {"detail": "cross-origin request refused"}
    assert await stream_length(system, thread_id) == before
    create = await system.http.post("/api/threads", json={}, headers=headers)
    assert create.status_code == 403


async def test_a_same_origin_post_is_allowed(system: System) -> None:
    thread_id = await system.new_thread()
    before = await stream_length(system, thread_id)
    response = await system.http.post(
        f"/api/threads/{thread_id}/messages",
        json={"content": "hello"},
        headers={"Origin": own_origin(system), "Sec-Fetch-Site": "same-origin"},
    )
    assert response.status_code == 202, response.text
    assert await stream_length(system, thread_id) > before


async def test_a_configured_origin_may_post(backend: Backend, settings: Settings) -> None:
    trusted = dataclasses.replace(settings, allowed_origins=("https://chat.example",))
    async with running_system(backend, trusted, workers=False) as system:
        response = await system.http.post(
            "/api/threads",
            json={},
            headers={"Origin": "https://chat.example", "Sec-Fetch-Site": "cross-site"},
        )
        assert response.status_code == 201, response.text
        refused = await system.http.post("/api/threads", json={}, headers={"Origin": ATTACKER})
        assert refused.status_code == 403


async def test_a_program_without_origin_may_post(system: System) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{system.port}") as plain:
        response = await plain.post("/api/threads", json={})
    assert response.status_code == 201, response.text


async def test_a_cross_origin_get_is_answered(system: System) -> None:
    """Reads change nothing; what a cross-site page may read is the browser's CORS rule."""
    response = await system.http.get("/api/threads", headers={"Origin": ATTACKER})
    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/api/threads/{id}/live", "/api/live/threads"])
async def test_a_cross_origin_socket_is_refused(system: System, path: str) -> None:
    thread_id = await system.new_thread()
    url = f"ws://127.0.0.1:{system.port}{path.format(id=thread_id)}"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, origin=Origin(ATTACKER)):
            pass
    assert refused.value.response.status_code == 403


@pytest.mark.parametrize("path", ["/api/threads/{id}/live", "/api/live/threads"])
async def test_same_origin_and_origin_less_sockets_are_accepted(system: System, path: str) -> None:
    thread_id = await system.new_thread()
    url = f"ws://127.0.0.1:{system.port}{path.format(id=thread_id)}"
    for origin in (Origin(own_origin(system)), None):
        async with connect(url, origin=origin) as socket:
            first = orjson.loads(await socket.recv())
            assert first["type"] in ("snapshot", "threads"), first


async def test_a_socket_with_a_bad_host_is_refused(system: System) -> None:
    thread_id = await system.new_thread()
    url = f"ws://127.0.0.1:{system.port}/api/threads/{thread_id}/live"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, additional_headers={"Host": "attacker.example"}):
            pass
    assert refused.value.response.status_code == 403  # a close before accept
