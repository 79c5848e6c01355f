"""Script calls made at once go out as one pipeline, each caller getting its own answer."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ResponseError

from slipstream.backend import Backend
from slipstream.batching import ScriptBatch

# Adds its argument to a counter, or fails when asked to.
ADD = """
if ARGV[1] == "fail" then return redis.error_reply("asked to fail") end
return redis.call("INCRBY", KEYS[1], ARGV[1])
"""


async def test_calls_of_one_turn_share_one_pipeline_and_keep_their_own_replies(
    real_backend: Backend,
) -> None:
    batch = ScriptBatch(real_backend)
    add = real_backend.client.register_script(ADD)
    await real_backend.client.script_load(ADD)
    replies = await asyncio.gather(
        *(batch.call(add, ["n"], [str(i)]) for i in (1, 2, 3)),
        batch.call(add, ["n"], ["fail"]),
        return_exceptions=True,
    )
    assert replies[:3] == [1, 3, 6]  # in the order they were made
    assert isinstance(replies[3], ResponseError) and "asked to fail" in str(replies[3])
    assert (batch.batches, batch.calls) == (1, 4)
    assert await real_backend.client.get("n") == "6"


async def test_a_server_that_lost_the_script_is_sent_the_call_again(
    real_backend: Backend,
) -> None:
    batch = ScriptBatch(real_backend)
    add = real_backend.client.register_script(ADD)
    await real_backend.client.script_flush()  # as after a restart
    assert await asyncio.gather(batch.call(add, ["n"], ["5"]), batch.call(add, ["n"], ["1"])) == [
        5,
        6,
    ]


async def test_a_call_cancelled_before_its_batch_goes_is_not_sent(real_backend: Backend) -> None:
    batch = ScriptBatch(real_backend)
    add = real_backend.client.register_script(ADD)
    await real_backend.client.script_load(ADD)
    cancelled = asyncio.create_task(batch.call(add, ["n"], ["100"]))
    kept = asyncio.create_task(batch.call(add, ["n"], ["1"]))
    await asyncio.sleep(0)  # both made, the batch not sent yet
    cancelled.cancel()
    assert await kept == 1
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert await real_backend.client.get("n") == "1"


async def test_a_lost_connection_fails_every_call_of_its_batch(real_backend: Backend) -> None:
    batch = ScriptBatch(real_backend)
    add = real_backend.client.register_script(ADD)
    await real_backend.client.script_load(ADD)
    # Every connection the batch can take dies as it is used: its error reaches each caller.
    await real_backend.client.config_set("maxclients", "1")
    blocker = Backend.connect(real_backend.url or "")
    try:
        await real_backend.client.connection_pool.disconnect()
        await blocker.client.ping()  # the one client Redis now accepts
        replies = await asyncio.gather(
            batch.call(add, ["n"], ["1"]), batch.call(add, ["n"], ["2"]), return_exceptions=True
        )
    finally:
        await blocker.client.config_set("maxclients", "10000")
        await blocker.close()
    assert all(isinstance(r, Exception) for r in replies), replies
    assert await real_backend.client.get("n") is None
