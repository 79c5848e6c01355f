"""Identity: users and tokens in Redis, the three modes over real HTTP and sockets."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from service.auth import COOKIE, SECRET_KEY
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.errors import ConfigError
from slipstream.users import UserError, Users, digest
from tests.conftest import subprocess_env
from tests.harness import System, running_system


def new_name() -> str:
    return f"u{uuid.uuid4().hex[:10]}"


@pytest.fixture
def tokens_settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, auth="tokens")


@pytest.fixture
async def system(backend: Backend, tokens_settings: Settings) -> AsyncIterator[System]:
    async with running_system(backend, tokens_settings, workers=False) as running:
        yield running


def own_origin(system: System) -> dict[str, str]:
    return {"Origin": f"http://127.0.0.1:{system.port}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def thread_count(system: System) -> int:
    return len(await system.runtime.views.summaries(500))


# The store


async def test_a_user_gets_tokens_that_are_kept_only_as_digests(backend: Backend) -> None:
    users = Users(backend)
    name = new_name()
    first = await users.add(name)
    second = await users.token(name)
    assert first != second and first.startswith("ss_") and len(first) > 40
    assert await users.by_token(first) == name
    assert await users.by_token(second) == name
    stored = await backend.client.hgetall("ss:{auth}:tokens")
    assert digest(first) in stored and first not in stored
    assert all(first not in str(value) for value in stored.values())
    listed = {u.name: u.tokens for u in await users.list()}
    assert listed[name] == 2


async def test_revoking_ends_every_token_and_session(backend: Backend) -> None:
    users = Users(backend)
    name = new_name()
    token = await users.add(name)
    sessions = [await users.start_session(name, 60) for _ in range(2)]
    revoked = await users.revoke(name)
    assert (revoked.tokens, revoked.sessions) == (1, 2)
    assert await users.by_token(token) is None
    assert [await users.by_session(s) for s in sessions] == [None, None]
    assert name not in {u.name for u in await users.list()}
    with pytest.raises(UserError, match="no user named"):
        await users.revoke(name)


async def test_a_user_made_again_does_not_inherit_old_sessions(backend: Backend) -> None:
    users = Users(backend)
    name = new_name()
    await users.add(name)
    old = await users.start_session(name, 60)
    # Revoked by another route than `revoke` (the session key left behind): the
    # session still names the old user record.
    await backend.client.hdel("ss:{auth}:users", name)
    await users.add(name)
    assert await users.by_session(old) is None
    assert await users.by_session(await users.start_session(name, 60)) == name


@pytest.mark.parametrize("name", ["", "a b", "x" * 65, "ünïcode", "semi;colon"])
async def test_names_that_cannot_be_users(backend: Backend, name: str) -> None:
    with pytest.raises(UserError, match="cannot be a user name"):
        await Users(backend).add(name)


async def test_a_second_add_of_a_name_is_refused(backend: Backend) -> None:
    users = Users(backend)
    name = new_name()
    token = await users.add(name)
    with pytest.raises(UserError, match="exists already"):
        await users.add(name)
    assert await users.by_token(token) == name


def test_the_mode_setting() -> None:
    assert Settings.from_env({}).auth == "none"
    assert Settings.from_env({"SLIPSTREAM_AUTH": "tokens"}).auth == "tokens"
    with pytest.raises(ConfigError, match="SLIPSTREAM_AUTH='password' is not a mode"):
        Settings.from_env({"SLIPSTREAM_AUTH": "password"})
    with pytest.raises(ConfigError, match="SLIPSTREAM_TRUSTED_PROXIES: 'proxy' is not"):
        Settings.from_env({"SLIPSTREAM_TRUSTED_PROXIES": "proxy"})


# tokens mode over HTTP


async def test_without_a_token_every_api_call_is_401_and_writes_nothing(system: System) -> None:
    before = await thread_count(system)
    for method, path in [
        ("GET", "/api/threads"),
        ("POST", "/api/threads"),
        ("GET", "/api/agents"),
        ("GET", "/api/runs"),
        ("POST", "/api/threads/tx/messages"),
        ("POST", "/api/runs/tx.0123456789abcdef/cancel"),
        ("GET", "/api/session"),
    ]:
        response = await system.http.request(method, path, json={})
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["www-authenticate"] == 'Bearer realm="slipstream"'
        assert "Bearer" in response.json()["detail"]
    assert await thread_count(system) == before
    assert (await system.http.get("/healthz")).status_code == 200
    assert (await system.http.get("/api/schema/events")).status_code == 200


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        ("Bearer ss_not-a-real-token-at-all-not-a-real-token-at-all", "not valid"),
        ("Bearer", "must be 'Bearer <token>'"),
        ("Basic dXNlcjpwYXNz", "must be 'Bearer <token>'"),
    ],
)
async def test_a_bad_authorization_is_401_saying_why(
    system: System, header: str, detail: str
) -> None:
    response = await system.http.post("/api/threads", json={}, headers={"Authorization": header})
    assert response.status_code == 401
    assert detail in response.json()["detail"]


async def test_a_token_works_until_its_user_is_revoked(system: System) -> None:
    users = system.runtime.auth.users
    name = new_name()
    token = await users.add(name)
    created = await system.http.post("/api/threads", json={}, headers=bearer(token))
    assert created.status_code == 201, created.text
    me = await system.http.get("/api/session", headers=bearer(token))
    assert me.json() == {"user": name, "auth": "tokens", "via": "token"}
    await users.revoke(name)
    again = await system.http.get("/api/threads", headers=bearer(token))
    assert again.status_code == 401


async def test_sockets_need_a_token_too(system: System) -> None:
    token = await system.runtime.auth.users.add(new_name())
    thread_id = (await system.http.post("/api/threads", json={}, headers=bearer(token))).json()[
        "id"
    ]
    for url in (system.ws_url(thread_id), f"ws://127.0.0.1:{system.port}/api/live/threads"):
        async with connect(url) as socket:
            frame = orjson.loads(await socket.recv())
            assert frame["type"] == "error" and "Bearer" in frame["detail"]
            with pytest.raises(ConnectionClosed) as closed:
                await socket.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    async with connect(system.ws_url(thread_id), additional_headers=bearer(token)) as socket:
        assert orjson.loads(await socket.recv())["type"] == "snapshot"


async def test_an_open_socket_closes_once_its_user_is_revoked(
    backend: Backend, tokens_settings: Settings
) -> None:
    quick = dataclasses.replace(tokens_settings, heartbeat_s=0.2)
    async with running_system(backend, quick, workers=False) as system:
        name = new_name()
        token = await system.runtime.auth.users.add(name)
        created = await system.http.post("/api/threads", json={}, headers=bearer(token))
        thread_url = system.ws_url(created.json()["id"])
        list_url = f"ws://127.0.0.1:{system.port}/api/live/threads"
        async with (
            connect(thread_url, additional_headers=bearer(token)) as watching,
            connect(list_url, additional_headers=bearer(token)) as listing,
        ):
            assert orjson.loads(await watching.recv())["type"] == "snapshot"
            assert orjson.loads(await listing.recv())["type"] == "threads"
            await system.runtime.auth.users.revoke(name)
            for socket in (watching, listing):
                frames = []
                with pytest.raises(ConnectionClosed) as closed:
                    async with asyncio.timeout(5):
                        while True:
                            frames.append(orjson.loads(await socket.recv()))
                assert frames[-1]["type"] == "error"
                assert "not valid" in frames[-1]["detail"]
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_the_token_script_needs_the_user(backend: Backend) -> None:
    users = Users(backend)
    name = new_name()
    await users.add(name)
    await users.revoke(name)
    with pytest.raises(UserError, match="no user named"):
        await users.token(name)
    assert not await backend.client.exists(f"ss:{{auth}}:user_tokens:{name}")


# The browser's sign-in


async def sign_in(system: System, token: str) -> httpx.Response:
    return await system.http.post("/api/session", json={"token": token}, headers=own_origin(system))


async def test_signing_in_gives_a_session_cookie_that_the_chat_uses(system: System) -> None:
    name = new_name()
    token = await system.runtime.auth.users.add(name)
    response = await sign_in(system, token)
    assert response.status_code == 200, response.text
    assert response.json()["user"] == name
    set_cookie = response.headers["set-cookie"]
    assert set_cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in set_cookie and "SameSite=lax" in set_cookie and "Path=/" in set_cookie
    assert "Secure" not in set_cookie  # plain http on loopback
    assert token not in set_cookie
    assert system.http.cookies.get(COOKIE)

    assert (await system.http.get("/api/session")).json()["via"] == "session"
    created = await system.http.post("/api/threads", json={}, headers=own_origin(system))
    assert created.status_code == 201
    thread_id = created.json()["id"]
    cookie = f"{COOKIE}={system.http.cookies[COOKIE]}"
    async with connect(system.ws_url(thread_id), additional_headers={"Cookie": cookie}) as socket:
        assert orjson.loads(await socket.recv())["type"] == "snapshot"

    out = await system.http.delete("/api/session", headers=own_origin(system))
    assert out.status_code == 204
    system.http.cookies.clear()
    system.http.cookies.set(COOKIE, cookie.split("=", 1)[1])  # a copy kept by an attacker
    assert (await system.http.get("/api/threads")).status_code == 401


async def test_a_cookie_request_that_does_not_say_where_it_comes_from_is_403(
    system: System,
) -> None:
    await sign_in(system, await system.runtime.auth.users.add(new_name()))
    before = await thread_count(system)
    response = await system.http.post("/api/threads", json={})
    assert response.status_code == 403
    assert "neither Origin nor Sec-Fetch-Site" in response.json()["detail"]
    assert (await system.http.get("/api/threads")).status_code == 200  # reading is fine
    same_site = await system.http.post(
        "/api/threads", json={}, headers={"Sec-Fetch-Site": "same-origin"}
    )
    assert same_site.status_code == 201
    assert await thread_count(system) == before + 1


async def test_revoking_a_user_ends_their_browser_sessions(system: System) -> None:
    name = new_name()
    await sign_in(system, await system.runtime.auth.users.add(name))
    assert (await system.http.get("/api/threads")).status_code == 200
    await system.runtime.auth.users.revoke(name)
    response = await system.http.get("/api/threads")
    assert response.status_code == 401
    assert "session has ended" in response.json()["detail"]


async def test_a_forged_or_old_cookie_is_refused(system: System, backend: Backend) -> None:
    name = new_name()
    await sign_in(system, await system.runtime.auth.users.add(name))
    session_id = await system.runtime.auth.users.start_session(name, 3600)
    key = str(await backend.client.get(SECRET_KEY))

    class Past(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - system.runtime.settings.session_ttl_s - 10

    forged = URLSafeTimedSerializer("not the key", salt="slipstream.session").dumps(session_id)
    old = URLSafeTimedSerializer(key, salt="slipstream.session", signer=Past).dumps(session_id)
    fresh = URLSafeTimedSerializer(key, salt="slipstream.session").dumps(session_id)
    async with httpx.AsyncClient(base_url=str(system.http.base_url)) as browser:
        for value, status in [(forged, 401), (old, 401), (fresh, 200)]:
            response = await browser.get("/api/session", headers={"Cookie": f"{COOKIE}={value}"})
            assert response.status_code == status, response.text


async def test_a_bad_token_does_not_sign_in(system: System) -> None:
    response = await sign_in(system, "ss_" + "x" * 43)
    assert response.status_code == 401
    assert "set-cookie" not in response.headers


async def test_the_cookie_is_secure_behind_a_trusted_https_proxy(system: System) -> None:
    token = await system.runtime.auth.users.add(new_name())
    response = await system.http.post(
        "/api/session",
        json={"token": token},
        headers={**own_origin(system), "X-Forwarded-Proto": "https"},
    )
    assert "Secure" in response.headers["set-cookie"]


# The other modes


async def test_without_auth_everyone_is_the_local_user(
    backend: Backend, settings: Settings
) -> None:
    async with running_system(backend, settings, workers=False) as system:
        me = await system.http.get("/api/session")
        assert me.json() == {"user": "local", "auth": "none", "via": "local"}
        refused = await system.http.post("/api/session", json={"token": "ss_x"})
        assert refused.status_code == 400
        assert "SLIPSTREAM_AUTH=none" in refused.json()["detail"]


async def test_a_trusted_proxy_names_the_user(backend: Backend, settings: Settings) -> None:
    header = dataclasses.replace(settings, auth="header")
    async with running_system(backend, header, workers=False) as system:
        me = await system.http.get("/api/session", headers={"X-Forwarded-User": "alice"})
        assert me.json() == {"user": "alice", "auth": "header", "via": "header"}
        assert (await system.http.get("/api/threads")).status_code == 401
        bad = await system.http.get("/api/threads", headers={"X-Forwarded-User": "a b"})
        assert bad.status_code == 401


async def test_a_proxy_header_given_twice_or_a_cookie_write_from_nowhere_is_refused(
    backend: Backend, settings: Settings
) -> None:
    header = dataclasses.replace(settings, auth="header")
    async with running_system(backend, header, workers=False) as system:
        twice = await system.http.get(
            "/api/threads", headers=[("X-Forwarded-User", "mallory"), ("X-Forwarded-User", "bob")]
        )
        assert twice.status_code == 401
        assert "more than one X-Forwarded-User" in twice.json()["detail"]
        alice = {"X-Forwarded-User": "alice"}
        program = await system.http.post("/api/threads", json={}, headers=alice)
        assert program.status_code == 201  # no cookie: a program, not a browser
        browser = await system.http.post(
            "/api/threads", json={}, headers={**alice, "Cookie": "sso=abc"}
        )
        assert browser.status_code == 403
        same_page = await system.http.post(
            "/api/threads",
            json={},
            headers={**alice, "Cookie": "sso=abc", "Sec-Fetch-Site": "same-origin"},
        )
        assert same_page.status_code == 201


async def test_a_user_header_from_anyone_else_is_ignored(
    backend: Backend, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    header = dataclasses.replace(settings, auth="header", trusted_proxies=("10.0.0.0/8",))
    async with running_system(backend, header, workers=False) as system:
        response = await system.http.get(
            "/api/threads", headers={"X-Forwarded-User": "alice", "X-Forwarded-For": "10.1.2.3"}
        )
        assert response.status_code == 401
        assert "only taken from the proxy" in response.json()["detail"]
    assert "which is not a trusted proxy, was ignored" in caplog.text


# The command line and the start


def run_service(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )


def test_the_users_command_adds_lists_and_revokes(redis_url: str) -> None:
    name = new_name()
    added = run_service("users", "add", name, REDIS_URL=redis_url)
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip().splitlines()[-1]
    assert token.startswith("ss_")
    listed = run_service("users", "list", REDIS_URL=redis_url)
    assert f"{name}\tsince " in listed.stdout and "\t1 tokens" in listed.stdout
    assert token not in listed.stdout
    twice = run_service("users", "add", name, REDIS_URL=redis_url)
    assert twice.returncode == 1 and "exists already" in twice.stderr
    revoked = run_service("users", "revoke", name, REDIS_URL=redis_url)
    assert revoked.returncode == 0
    assert f"revoked {name}: 1 tokens and 0 sessions ended" in revoked.stdout
    assert name not in run_service("users", "list", REDIS_URL=redis_url).stdout


def test_the_users_command_uses_the_embedded_redis_when_there_is_no_url(tmp_path: Path) -> None:
    added = run_service("users", "add", "alice", SLIPSTREAM_DATA_DIR=str(tmp_path))
    assert added.returncode == 0, added.stderr
    listed = run_service("users", "list", SLIPSTREAM_DATA_DIR=str(tmp_path))
    assert listed.stdout.startswith("alice\t")  # kept in the data dir's AOF


def test_without_auth_the_web_will_not_listen_beyond_loopback() -> None:
    started = run_service("--host", "0.0.0.0", "--port", "0", SLIPSTREAM_AUTH="none")
    assert started.returncode == 1
    assert "will not listen on 0.0.0.0 with SLIPSTREAM_AUTH=none" in started.stderr
