"""Supervised loops: a failed pass is retried with back-off, an outage logged once."""

from __future__ import annotations

import asyncio
import logging

import pytest
from redis._parsers.base import BaseParser
from redis.exceptions import (
    AskError,
    MovedError,
    ReadOnlyError,
    RedisClusterException,
    RedisClusterUnreachableError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from slipstream.backend import Backend
from slipstream.supervise import (
    Liveness,
    Loop,
    Outages,
    is_redis_fault,
    keep_running,
    run_loops,
)
from tests.waits import until


class Flaky:
    """A pass that fails `failures` times with `error`, then counts successes."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0
        self.successes = 0
        self.done = asyncio.Event()

    async def __call__(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        self.successes += 1
        if self.successes >= 3:
            self.done.set()


def quick(name: str, body: Flaky, **extra: object) -> Loop:
    return Loop(name, body, base_ms=1, max_ms=5, **extra)  # type: ignore[arg-type]


async def run_until(loop: Loop, body: Flaky, liveness: Liveness | None = None) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop, liveness))
    async with asyncio.timeout(5):
        await body.done.wait()
    stop.set()
    await task


async def test_a_redis_outage_is_retried_and_logged_once_each_way(
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = Flaky(6, RedisConnectionError("Connection closed by server."))
    loop = quick("test.read", body, log=logging.getLogger("test.loop"), outages=Outages())
    with caplog.at_level(logging.WARNING, logger="test.loop"):
        await run_until(loop, body)
    assert body.calls == 6 + 3
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert "Redis fault (ConnectionError: Connection closed by server.)" in messages[0]
    assert "working again" in messages[1] and "(6 failed passes and runs)" in messages[1]


async def test_an_outage_met_by_many_loops_and_runs_is_two_lines_for_the_process(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outages = Outages()
    assert outages.run_failed()  # a run met it first: that is the line that says so
    assert not outages.run_failed()  # the next run's is quiet
    log = logging.getLogger("test.loop")
    bodies = [Flaky(3 + i, RedisConnectionError("Connection reset by peer")) for i in range(4)]
    loops = [quick(f"test.read{i}", b, log=log, outages=outages) for i, b in enumerate(bodies)]
    with caplog.at_level(logging.WARNING, logger="test.loop"):
        await asyncio.gather(
            *(run_until(loop, body) for loop, body in zip(loops, bodies, strict=True))
        )
    messages = [r.getMessage() for r in caplog.records]
    # The run said it began; the last loop to work again ends it, counting every
    # failed pass and run. Nothing else is said.
    assert len(messages) == 1, messages
    assert "working again" in messages[0] and "(20 failed passes and runs)" in messages[0]
    assert not outages.ongoing
    assert outages.run_failed()  # the next outage is said again


async def test_a_stopped_loop_does_not_hold_the_outage_open() -> None:
    outages = Outages()
    body = Flaky(1_000_000, RedisConnectionError("Connection refused"))
    loop = quick("test.dead", body, outages=outages)
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))

    async def failing() -> bool:
        return body.calls >= 2

    await until(failing)
    assert outages.ongoing
    stop.set()
    await task
    assert not outages.ongoing


async def test_a_bug_is_logged_with_its_traceback_but_does_not_end_the_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = Flaky(3, KeyError("missing"))
    loop = quick("test.bug", body, log=logging.getLogger("test.loop"))
    with caplog.at_level(logging.WARNING, logger="test.loop"):
        await run_until(loop, body)
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1  # at most once a minute, not once per failed pass
    assert body.successes == 3


async def test_nogroup_runs_the_recovery_before_the_next_pass() -> None:
    body = Flaky(1, ResponseError("NOGROUP No such key 'ss:{p00}:work' or consumer group"))
    recovered: list[int] = []

    async def recreate() -> None:
        recovered.append(body.calls)

    await run_until(quick("test.nogroup", body, on_missing_group=recreate), body)
    assert recovered == [1]


@pytest.mark.parametrize(
    ("error", "fault"),
    [
        (RedisConnectionError("gone"), True),
        (TimeoutError(), True),
        (ResponseError("LOADING Redis is loading the dataset in memory"), True),
        (ResponseError("READONLY You can't write against a read only replica."), True),
        (ResponseError("BUSY Redis is busy running a script."), True),
        (ResponseError("NOGROUP No such key"), True),
        (ResponseError("WRONGTYPE Operation against a key holding the wrong kind"), False),
        # A cluster in flux: no seed reachable, a slot moved or moving or with no master.
        (RedisClusterUnreachableError("Redis Cluster cannot be connected"), True),
        (MovedError("3999 127.0.0.1:7001"), True),
        (AskError("3999 127.0.0.1:7001"), True),
        (ResponseError("CLUSTERDOWN The cluster is down"), True),
        (RedisClusterException("XREAD - all keys must map to the same key slot"), False),
        (ValueError("ours"), False),
    ],
)
def test_which_errors_are_faults_of_redis(error: Exception, fault: bool) -> None:
    assert is_redis_fault(error) is fault


async def test_replies_whose_code_redis_py_strips_are_faults_too(real_backend: Backend) -> None:
    """redis-py takes the code off the text of the replies it has a class for (READONLY,
    OOM, ...): `ReadOnlyError("You can't write ...")`. They are faults all the same."""
    client = real_backend.client
    await client.config_set("maxmemory", "1")  # every write is refused: OOM
    try:
        with pytest.raises(ResponseError) as refused:
            await client.set("fault-probe", "x")
    finally:
        await client.config_set("maxmemory", "0")
    assert not str(refused.value).startswith("OOM")  # the code is gone from the text
    assert is_redis_fault(refused.value)
    readonly = BaseParser.parse_error(  # type: ignore[no-untyped-call]
        "READONLY You can't write against a read only replica."
    )
    assert isinstance(readonly, ReadOnlyError)
    assert is_redis_fault(readonly)


async def test_liveness_names_a_loop_that_stopped_making_progress() -> None:
    now = [100.0]
    liveness = Liveness(clock=lambda: now[0])
    liveness.register("worker.read", 10.0)
    liveness.register("worker.timers", 10.0)
    now[0] += 5
    liveness.ok("worker.read")
    liveness.failed("worker.timers", "TimeoutError: Timeout reading")
    assert liveness.down() == {}
    now[0] += 7
    assert liveness.down() == {
        "worker.timers": "no progress for 12.0 s: TimeoutError: Timeout reading"
    }
    liveness.forget("worker.timers")
    assert liveness.down() == {}


async def test_stop_cancels_a_pass_that_is_stuck_after_the_grace() -> None:
    stuck = asyncio.Event()

    async def hangs() -> None:
        stuck.set()
        await asyncio.Event().wait()  # a read on a paused Redis

    stop = asyncio.Event()
    task = asyncio.create_task(run_loops([Loop("test.stuck", hangs)], stop, None, grace_s=0.05))
    await stuck.wait()
    stop.set()
    async with asyncio.timeout(2):
        await task


async def test_a_role_that_ends_by_a_bug_is_started_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    starts = 0
    stop = asyncio.Event()

    async def role(role_stop: asyncio.Event) -> None:
        nonlocal starts
        starts += 1
        if starts == 1:
            raise RuntimeError("boom")
        if starts == 2:
            return  # ended although nobody asked
        stop.set()

    liveness = Liveness()
    with caplog.at_level(logging.ERROR, logger="test.role"):
        async with asyncio.timeout(5):
            await keep_running(
                "worker", role, stop, logging.getLogger("test.role"), liveness=liveness
            )
    assert starts == 3
    assert [r.getMessage() for r in caplog.records] == [
        "worker stopped unexpectedly; starting it again",
        "worker ended although nobody asked it to; starting it again",
    ]
    assert liveness.down() == {}
