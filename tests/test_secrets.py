"""No configured secret in anything a run writes: events, run hashes, logs, answers.

The processes run for real against a password-protected redis-server and the
Anthropic mock, with a fake key the mock echoes back in its error body; then
every key of that Redis, every process log and the HTTP answers are searched.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import httpx
import pytest
import redis

from slipstream.logs import SecretMask
from slipstream.secrets import configured_secrets, masked, without_userinfo
from tests.anthropic_mock import ok, overloaded, running_mock, status
from tests.ports import free_port
from tests.processes import (
    chat,
    env_for,
    processes,
    redis_process,
    spawn,
    wait_for_status,
    wait_healthy,
)

API_KEY = "sk-ant-test-SECRET123"
REDIS_PASSWORD = "redis-pw-SECRET456"
SECRETS = (API_KEY, REDIS_PASSWORD, "SECRET123", "SECRET456")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("redis://:pw-1@host:6379/0", "redis://***@host:6379/0"),
        ("at rediss://user:pw-1@host/0 now", "at rediss://***@host/0 now"),
        ("https://token@api.example/v1?x=1", "https://***@api.example/v1?x=1"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("mail me@example.com", "mail me@example.com"),
    ],
)
def test_url_userinfo_is_masked(text: str, shown: str) -> None:
    assert without_userinfo(text) == shown


def test_configured_secrets_and_key_shapes_are_masked() -> None:
    secrets = configured_secrets(
        {"ANTHROPIC_API_KEY": API_KEY, "MY_TOKEN": "tok-SECRET-789", "PORT": "80000000"}
    )
    assert set(secrets) == {API_KEY, "tok-SECRET-789"}  # PORT is no secret by its name
    text = masked(f"key {API_KEY}, token tok-SECRET-789, other sk-ant-api03-abcdef", secrets)
    assert text == "key ***, token ***, other ***"


def test_the_log_filter_masks_messages_arguments_and_tracebacks() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(SecretMask((API_KEY,)))
    logger = logging.getLogger("tests.secrets.mask")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("connecting to %s with %s", f"redis://:{REDIS_PASSWORD}@h/0", API_KEY)
        try:
            raise RuntimeError(f"refused redis://u:{REDIS_PASSWORD}@h/0 key={API_KEY}")
        except RuntimeError:
            logger.exception("it broke")
    finally:
        logger.removeHandler(handler)
    written = out.getvalue()
    assert "connecting to redis://***@h/0 with ***" in written
    assert "RuntimeError: refused redis://***@h/0 key=***" in written  # the traceback's text
    assert not [s for s in SECRETS if s in written]


def _everything_in(client: redis.Redis) -> str:
    """Every key and value of the database, as text (streams, hashes, lists, sets, ...)."""
    parts: list[str] = []
    for key in client.scan_iter(count=500):
        parts.append(repr(key))
        kind = client.type(key)
        if kind == b"stream":
            parts.append(repr(client.xrange(key)))
        elif kind == b"hash":
            parts.append(repr(client.hgetall(key)))
        elif kind == b"string":
            parts.append(repr(client.get(key)))
        elif kind == b"list":
            parts.append(repr(client.lrange(key, 0, -1)))
        elif kind == b"set":
            parts.append(repr(client.smembers(key)))
        elif kind == b"zset":
            parts.append(repr(client.zrange(key, 0, -1, withscores=True)))
        else:
            raise AssertionError(f"key {key!r} of unexpected type {kind!r}: read it too")
    return "\n".join(parts)


def _found(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


@pytest.mark.slow
def test_no_secret_in_anything_a_run_writes(tmp_path: Path) -> None:
    redis_port, port = free_port(), free_port()
    redis_url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{redis_port}/0"
    base = f"http://127.0.0.1:{port}"
    echoed = f"bad request (key {API_KEY}, store {redis_url})"  # a body that quotes secrets
    logs = [tmp_path / name for name in ("web.log", "worker.log", "projector.log")]
    with (
        redis_process(tmp_path / "redis", redis_port, "--requirepass", REDIS_PASSWORD),
        running_mock() as mock,
    ):
        mock.script(ok("Hello ", "there"), status(400, "invalid_request_error", echoed))
        mock.script(overloaded(), ok("second ", "try"))  # the third run: retried once
        env = env_for(
            PORT=str(port),
            REDIS_URL=redis_url,
            SLIPSTREAM_LLM="anthropic",
            ANTHROPIC_API_KEY=API_KEY,
            ANTHROPIC_BASE_URL=mock.url,
            SLIPSTREAM_ANTHROPIC_MAX_RETRIES="0",
            SLIPSTREAM_RETRY_BASE_MS="50",
            SLIPSTREAM_LOG_LEVEL="DEBUG",
        )
        with processes() as running:
            web = spawn("service", env, logs[0])
            running += [web, spawn("consumers", env, logs[1]), spawn("projections", env, logs[2])]
            wait_healthy(port, web)
            # One at a time: the mock answers requests in the order they come.
            views, runs = [], []
            for question in ("hello", "this one is refused", "this one is retried"):
                thread_id, run_id = chat(base, question)
                runs.append((thread_id, run_id))
                views.append(wait_for_status(base, thread_id, run_id, {"completed", "failed"}))
            answered, refused, retried = runs
            answers = [httpx.get(f"{base}/healthz").text, httpx.get(f"{base}/api/threads").text]
            for thread_id, _run_id in (answered, refused, retried):
                answers.append(httpx.get(f"{base}/api/threads/{thread_id}").text)
                answers.append(httpx.get(f"{base}/api/threads/{thread_id}/events").text)
        client = redis.Redis(port=redis_port, password=REDIS_PASSWORD)
        try:
            stored = _everything_in(client)
        finally:
            client.close()
    sent = mock.requests[0].headers  # the key was used (anthropic 2.x: as a bearer token)
    assert API_KEY in (sent.get("x-api-key"), sent.get("authorization", "").removeprefix("Bearer "))

    assert views[0]["runs"][answered[1]]["status"] == "completed"
    failed = views[1]["runs"][refused[1]]
    assert (failed["status"], failed["reason"]) == (
        "failed",
        "model error: provider refused the request (HTTP 400)",  # the code, not the body
    )
    assert views[2]["runs"][retried[1]]["status"] == "completed"
    assert "model error: overloaded (HTTP 529)" in answers[-1]  # run.retrying's reason
    written = {path.name: path.read_text(errors="replace") for path in logs}
    assert "bad request (key ***, store redis://***@127.0.0.1" in written["worker.log"]
    assert f"redis: redis://***@127.0.0.1:{redis_port}/0" in written["web.log"]

    assert _found(stored) == []
    assert _found("\n".join(answers)) == []
    assert {name: _found(text) for name, text in written.items()} == {n: [] for n in written}
