"""The benchmark's round-trip counter: one per command, one per whole pipeline."""

from __future__ import annotations

from pathlib import Path

import orjson
import redis.asyncio as aioredis

from slipstream.roundtrips import RoundTrips


async def test_a_command_and_a_pipeline_are_one_round_trip_each(
    redis_url: str, tmp_path: Path
) -> None:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    await client.ping()  # connected (its handshake) before counting starts
    counter = RoundTrips()
    stop = counter.install()
    try:
        await client.set("k", "1")
        async with client.pipeline(transaction=False) as pipe:
            pipe.get("k").incr("k").get("k")
            assert await pipe.execute() == ["1", 2, "2"]
        assert counter.count == 2
    finally:
        stop()
    await client.get("k")  # no longer counted
    await client.aclose()
    assert counter.count == 2
    counter.write(str(tmp_path / "rt.json"), runs=4)
    assert orjson.loads((tmp_path / "rt.json").read_bytes()) == {"round_trips": 2, "runs": 4}
