"""Fixtures: a real redis-server started for the session, and fakeredis beside it.

Tests that take a `backend` run twice, once on each. A test that needs real
blocking reads or several processes asks for `redis_url` instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.keys import Keyspace
from slipstream.store import EventStore
from slipstream.supervise import OUTAGES
from tests.ports import free_port
from tests.redis_cluster import Cluster

TEST_ENV = {
    "SLIPSTREAM_LLM": "scripted",
    "SLIPSTREAM_SCRIPTED_DELAY_MS": "0",
    "SLIPSTREAM_SCRIPTED_WORDS": "40",
    "SLIPSTREAM_PARTITIONS": "4",
    "SLIPSTREAM_LEASE_MS": "2000",
    # The suite sends as one user far faster than a person: the limits have tests of their own.
    "SLIPSTREAM_SENDS_PER_MINUTE": "1000000",
    "SLIPSTREAM_RUNS_PER_USER": "1000000",
    "SLIPSTREAM_SOCKETS_PER_USER": "100000",
}


@pytest.fixture(autouse=True)
def no_outage_carried_over() -> None:
    """Each test starts as a fresh process would: no Redis outage under way.

    Outages are process-wide (one log line each, slipstream/supervise.py), and a
    test that ends mid-outage would otherwise silence the next test's first line.
    """
    OUTAGES.reset()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail(
            "redis-server is not on PATH; `make test` installs it (apt-get install redis-server)"
        )
    workdir = tmp_path_factory.mktemp("redis")
    port = free_port()
    process = subprocess.Popen(
        [
            executable,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise
            time.sleep(0.02)
    client.close()
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """3 masters and 3 replicas, started once for the session (about 2 s)."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.fail("redis-server and redis-cli are not on PATH; `make test` installs them")
    cluster = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster_url(redis_cluster: Cluster) -> str:
    """The session's cluster, healthy and empty."""
    redis_cluster.wait_healthy()
    redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture
def redis_url(redis_server: str) -> str:
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    return redis_server


@pytest.fixture
def settings() -> Settings:
    return Settings.from_env(TEST_ENV)


@pytest.fixture(params=["redis", "fakeredis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "redis":
        made = Backend.connect(request.getfixturevalue("redis_url"))
    else:
        made = Backend.in_process()
    yield made
    await made.close()


@pytest.fixture
async def real_backend(redis_url: str) -> AsyncIterator[Backend]:
    made = Backend.connect(redis_url)
    yield made
    await made.close()


@pytest.fixture(params=["redis", "cluster"])
async def served_backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """A real Redis, then a real Redis Cluster: for what must hold on both."""
    made = Backend.connect(request.getfixturevalue(f"{request.param}_url"))
    yield made
    await made.close()


@pytest.fixture
def store(backend: Backend, settings: Settings) -> EventStore:
    return EventStore(backend, Keyspace(settings.partitions), feed_maxlen=settings.feed_maxlen)


@pytest.fixture
def project_dir() -> Path:
    return Path(__file__).resolve().parent.parent


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLIPSTREAM_", "ANTHROPIC_"))}
    env.pop("REDIS_URL", None)
    env.update(TEST_ENV)
    env.update(extra)
    return env
