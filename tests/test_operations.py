"""What operators see: the status summary and a tidy consumer group."""

from __future__ import annotations

import subprocess
import sys

from consumers import status
from consumers.llm.scripted import ScriptedLLM
from consumers.worker import Worker
from service import commands
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.keys import WORKER_REGISTRY, WORKERS_GROUP, Keyspace
from slipstream.store import EventStore
from tests.processes import ROOT, env_for


async def test_status_shows_workers_queues_and_dead_letters(
    real_backend: Backend, settings: Settings
) -> None:
    store = EventStore(real_backend, Keyspace(settings.partitions))
    worker = Worker(real_backend, store, ScriptedLLM(words=5, delay_ms=0), settings, name="w:1:a")
    await worker.setup()
    thread_id, _ = await commands.create_thread(store)
    await commands.send_message(store, thread_id, "waiting", "assistant")
    await real_backend.client.zadd(WORKER_REGISTRY, {"w:1:a": 10**13})
    part = store.keys.partition(thread_id)
    await real_backend.client.xadd(part.dead, {"run": "x.aaaaaa", "reason": "boom"})

    seen = await status.gather(real_backend, store.keys)
    assert [name for name, _ in seen.workers] == ["w:1:a"]
    row = seen.partitions[part.number]
    assert (row.queued, row.lag, row.dead, row.active_runs) == (1, 1, 1, 1)
    text = status.render(seen)
    assert "live workers: 1" in text and f"p{part.number:02d}" in text
    assert "1 waiting for one" in text and "1 dead letters" in text


async def test_consumers_of_dead_workers_are_forgotten_unless_they_hold_work(
    real_backend: Backend, settings: Settings
) -> None:
    store = EventStore(real_backend, Keyspace(settings.partitions))
    worker = Worker(real_backend, store, ScriptedLLM(), settings, name="live:1:a")
    await worker.setup()
    thread_id, _ = await commands.create_thread(store)
    part = store.keys.partition(thread_id)
    redis = real_backend.client
    await redis.xreadgroup(WORKERS_GROUP, "gone:1:a", {part.work: ">"})  # holds nothing
    await commands.send_message(store, thread_id, "held", "assistant")
    await redis.xreadgroup(WORKERS_GROUP, "gone:2:b", {part.work: ">"})  # holds a run

    await worker._forget_dead_consumers()

    names = {c["name"] for c in await redis.xinfo_consumers(part.work, WORKERS_GROUP)}
    assert "gone:1:a" not in names and "gone:2:b" in names


def test_status_command_runs(redis_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "consumers", "status"],
        cwd=ROOT,
        env=env_for(REDIS_URL=redis_url),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "live workers: 0" in result.stdout and "p03" in result.stdout
