"""Export and import (`python -m service export|import`): a thread moved between two real
redis-servers, real processes, its stored views byte-identical after."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from consumers.llm.scripted import ScriptedLLM
from projections.compaction import Compactor
from projections.views import ViewStore
from service import commands
from service.transfer import TransferError, import_thread
from slipstream import codec
from slipstream import events as ev
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.keys import Keyspace
from slipstream.store import EventStore
from tests.harness import running_system
from tests.ports import free_port
from tests.processes import ROOT, env_for, redis_process
from tests.waits import until

TOOL_QUESTION = 'what is six times seven? [[tool calculator {"expression": "6*7"}]]'


@pytest.fixture
def target(tmp_path: Path) -> Iterator[str]:
    """A second redis-server: the other deployment's (each test uses its own databases)."""
    port = free_port()
    with redis_process(tmp_path / "target", port):
        yield f"redis://127.0.0.1:{port}"


def cli(
    url: str, *args: str, stdin: str = "", partitions: int = 4
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=ROOT,
        env=env_for(REDIS_URL=url, SLIPSTREAM_PARTITIONS=str(partitions)),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def thread_keys(url: str, thread_id: str, partitions: int) -> dict[str, Any]:
    """Everything stored of a thread that a person or the API sees, by kind of key."""
    part = Keyspace(partitions).partition(thread_id)
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        view = client.hgetall(part.view(thread_id))
        runs = [json.loads(value)["id"] for name, value in view.items() if name.startswith("r:")]
        owner = client.hget(part.access(thread_id), "owner")
        return {
            "stream": client.xrange(part.thread(thread_id)),
            "view": view,
            "summary": client.hget(part.summaries, thread_id),
            "runs": {run_id: client.hget(part.runs, run_id) for run_id in runs},
            "run_hashes": {run_id: client.hgetall(part.run(run_id)) for run_id in runs},
            "search": client.hgetall(part.search_doc(thread_id)),
            "access": client.hgetall(part.access(thread_id)),
            "owner_index": client.zscore(part.users_threads(owner), thread_id),
            "activity": client.zscore(part.threads, thread_id),
        }
    finally:
        client.close()


async def a_finished_thread(backend: Backend, settings: Settings) -> str:
    """A thread with three runs, one with a tool call, all finished and projected."""
    async with running_system(backend, settings, llm=ScriptedLLM(words=40, delay_ms=2)) as system:
        thread_id = await system.new_thread()
        for content, agent in (
            ("hello there", "assistant"),
            (TOOL_QUESTION, "researcher"),
            ("and a last one", "assistant"),
        ):
            run_id = (await system.send(thread_id, content, agent=agent))["run_id"]
            view = await system.wait_for_run(thread_id, run_id)
            assert view["runs"][run_id]["status"] == "completed"
        await commands.update_thread(system.runtime.store, thread_id, title="moved thread")
        store = system.runtime.store
        key = store.keys.partition(thread_id).view(thread_id)

        async def projected() -> bool:
            return await store.redis.hget(key, "last") == (await store.read(thread_id))[-1].id

        await until(projected)  # the projector is another task of this loop
    return thread_id


async def test_an_imported_thread_has_byte_identical_views(
    real_backend: Backend, settings: Settings, redis_url: str, target: str
) -> None:
    thread_id = await a_finished_thread(real_backend, settings)
    exported = await asyncio.to_thread(cli, redis_url, "export", thread_id)
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [lines[0]["kind"], lines[-1]["kind"]] == ["thread", "end"]
    assert {line["fields"]["type"] for line in lines[1:-1]} >= {"tool.called", "message.delta"}

    same = await asyncio.to_thread(cli, f"{target}/1", "import", stdin=exported.stdout)
    assert same.returncode == 0, same.stderr
    assert same.stdout.startswith(f"imported thread {thread_id}: {len(lines) - 2} events")
    source = thread_keys(redis_url, thread_id, 4)
    assert len(source["runs"]) == 3 and all(source["runs"].values())
    assert all(source["run_hashes"].values()) and source["search"] and source["owner_index"]
    assert thread_keys(f"{target}/1", thread_id, 4) == source

    again = await asyncio.to_thread(cli, f"{target}/1", "import", stdin=exported.stdout)
    assert again.returncode == 1
    assert "exists in this deployment already; nothing was written" in again.stderr

    # Another partition count: the same bytes but the stream key the view names.
    other = await asyncio.to_thread(
        cli, f"{target}/2", "import", stdin=exported.stdout, partitions=8
    )
    assert other.returncode == 0, other.stderr
    moved = thread_keys(f"{target}/2", thread_id, 8)
    key_here, key_there = (Keyspace(n).partition(thread_id).thread(thread_id) for n in (4, 8))
    source["view"]["meta"] = source["view"]["meta"].replace(key_here, key_there)
    assert moved == source

    # Usable there: the owner's list shows it, and a new message is answered.
    listed = await asyncio.to_thread(
        cli, f"{target}/2", "inspect", "thread", thread_id, partitions=8
    )
    assert listed.returncode == 0 and "moved thread" in listed.stdout


async def test_an_import_answers_new_messages(
    real_backend: Backend, settings: Settings, redis_url: str, target: str
) -> None:
    thread_id = await a_finished_thread(real_backend, settings)
    exported = await asyncio.to_thread(cli, redis_url, "export", thread_id)
    imported = await asyncio.to_thread(cli, f"{target}/3", "import", stdin=exported.stdout)
    assert imported.returncode == 0, imported.stderr
    there = Backend.connect(f"{target}/3")
    try:
        async with running_system(there, settings, llm=ScriptedLLM(words=10)) as system:
            listed = await system.http.get("/api/threads")
            assert [t["id"] for t in listed.json()] == [thread_id]
            run_id = (await system.send(thread_id, "still here?"))["run_id"]
            view = await system.wait_for_run(thread_id, run_id)
            assert view["runs"][run_id]["status"] == "completed" and len(view["runs"]) == 4
    finally:
        await there.close()


async def test_a_compacted_thread_moves_all_the_same(
    real_backend: Backend, settings: Settings, redis_url: str, target: str
) -> None:
    thread_id = await a_finished_thread(real_backend, settings)
    store = EventStore.from_settings(real_backend, settings)
    later = 10**13  # every answer is older than the policy's age by then
    removed = await Compactor(real_backend, store, after_s=1).compact(thread_id, now_ms=later)
    assert removed > 0
    exported = await asyncio.to_thread(cli, redis_url, "export", thread_id)
    events = len(exported.stdout.splitlines()) - 2
    assert events == len(await store.read(thread_id))
    imported = await asyncio.to_thread(cli, f"{target}/4", "import", stdin=exported.stdout)
    assert imported.returncode == 0, imported.stderr
    assert thread_keys(f"{target}/4", thread_id, 4) == thread_keys(redis_url, thread_id, 4)
    replayed = await asyncio.to_thread(cli, f"{target}/4", "replay", thread_id)
    assert replayed.returncode == 0, replayed.stdout


async def test_an_imported_thread_is_compacted_when_compaction_is_on(
    real_backend: Backend, settings: Settings, redis_url: str, target: str
) -> None:
    """Compaction schedules a thread when its cursor in the thread index passes the
    thread's activity; an imported thread's is behind it, so the import schedules it."""
    thread_id = await a_finished_thread(real_backend, settings)
    exported = await asyncio.to_thread(cli, redis_url, "export", thread_id)
    there = Backend.connect(f"{target}/5")
    try:
        store = EventStore(there, Keyspace(4))
        compactor = Compactor(there, store, after_s=1)
        seconds, _ = await there.client.time()
        for part in store.keys.all():  # as a projector compacting there leaves it
            await there.client.set(part.compact_cursor, int(seconds) * 1000)
        imported = await asyncio.to_thread(cli, f"{target}/5", "import", stdin=exported.stdout)
        assert imported.returncode == 0, imported.stderr
        part = store.keys.partition(thread_id)
        deltas = sum(isinstance(s.event, ev.MessageDelta) for s in await store.read(thread_id))

        async def compacted() -> bool:
            await compactor.run_pass()  # its answers are old once a second has gone by
            return (
                compactor.removed > 0 and await there.client.zscore(part.compact, thread_id) is None
            )

        await until(compacted, within=20)
        left = sum(isinstance(s.event, ev.MessageDelta) for s in await store.read(thread_id))
        assert left == deltas - compactor.removed
        source = thread_keys(redis_url, thread_id, 4)
        assert thread_keys(f"{target}/5", thread_id, 4)["view"] == source["view"]
    finally:
        await there.close()


class Killed(Exception):
    """The import's process, gone between its rename and its fold."""


async def test_an_import_stopped_before_its_fold_is_finished_by_reindex(
    real_backend: Backend,
    settings: Settings,
    redis_url: str,
    target: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The thread is there without its views, and importing it again is refused (it
    exists): `python -m projections.reindex`, as the README says, folds them all."""
    thread_id = await a_finished_thread(real_backend, settings)
    exported = await asyncio.to_thread(cli, redis_url, "export", thread_id)
    records = [json.loads(line) for line in exported.stdout.splitlines()]
    there = Backend.connect(f"{target}/6")
    try:
        store = EventStore(there, Keyspace(4))
        views = ViewStore(store, run_retention_s=settings.run_retention_s)

        async def killed(thread_id: str) -> bool:
            raise Killed

        monkeypatch.setattr(views, "reindex", killed)
        with pytest.raises(Killed):
            await import_thread(store, views, records)
    finally:
        await there.close()
    half = thread_keys(f"{target}/6", thread_id, 4)
    assert half["stream"] and half["view"] == {} and half["summary"] is None
    again = await asyncio.to_thread(cli, f"{target}/6", "import", stdin=exported.stdout)
    assert again.returncode == 1 and "exists" in again.stderr

    repaired = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "projections.reindex"],
        cwd=ROOT,
        env=env_for(REDIS_URL=f"{target}/6", SLIPSTREAM_PARTITIONS="4"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert repaired.returncode == 0, repaired.stderr
    assert repaired.stdout.strip() == "1 indexed"
    assert thread_keys(f"{target}/6", thread_id, 4) == thread_keys(redis_url, thread_id, 4)


def test_bad_input_and_unknown_threads_are_refused(redis_url: str) -> None:
    missing = cli(redis_url, "export", "tnosuchthread")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "export: no thread 'tnosuchthread' in this deployment"
    assert "not JSON" in cli(redis_url, "import", stdin="{nope\n").stderr
    header = {
        "kind": "thread",
        "format": 1,
        "thread": "tcut",
        "activity_ms": 1,
        "access": {},
        "indexed": {},
        "runs": {},
    }
    event = {"kind": "event", "id": "1-0", "fields": codec.encode(ev.ThreadCreated())}
    cut = cli(redis_url, "import", stdin=f"{json.dumps(header)}\n{json.dumps(event)}\n")
    assert cut.returncode == 1 and "cut short" in cut.stderr
    assert cli(redis_url, "import", stdin="").stderr.startswith("import: no input")


async def test_a_thread_with_a_run_not_finished_is_not_exported(
    real_backend: Backend, settings: Settings, redis_url: str
) -> None:
    store = EventStore.from_settings(real_backend, settings)
    thread_id, _ = await commands.create_thread(store, "busy")
    sent = await commands.send_message(store, thread_id, "no worker runs this", "assistant")
    refused = await asyncio.to_thread(cli, redis_url, "export", thread_id)
    assert refused.returncode == 1 and refused.stdout == ""
    assert f"({sent.run_id} is queued)" in refused.stderr


def hostile_export(thread_id: str, events: list[dict[str, str]], **header: Any) -> list[Any]:
    """An export as a malicious file may hold it: `header` replaces the header's parts."""
    lines = [{"kind": "event", "id": f"{n}-0", "fields": f} for n, f in enumerate(events, 1)]
    start = {
        "kind": "thread",
        "format": 1,
        "thread": thread_id,
        "activity_ms": 1,
        "access": {"owner": "ann"},
        "indexed": {"ann": 1},
        "runs": {},
        **header,
    }
    return [start, *lines, {"kind": "end", "events": len(lines), "last": lines[-1]["id"]}]


CREATED = codec.encode(ev.ThreadCreated(title="t", owner="ann"))


@pytest.mark.parametrize(
    ("case", "said"),
    [
        ("foreign run event", "not a run of thread"),
        ("foreign run hash", "not a run of thread"),
        ("unreadable event", "does not read as an event"),
        ("indexed stranger", "not the owner or a member"),
        ("too many fields", "fields"),
        ("expiry past Redis's", "ttl_ms"),
        ("run not finished", "not finished"),
        ("score past a double's", "activity_ms"),
    ],
)
async def test_a_hostile_export_writes_nothing(
    real_backend: Backend, settings: Settings, case: str, said: str
) -> None:
    """An export is untrusted input: what would write outside the thread's own keys (another
    thread's run in the partition's run indexes, a stranger's thread list), an event that
    does not read, or what Lua or Redis would refuse half-way through the import (a
    thread left renamed in without its views, access or runs) is refused before anything
    is written."""
    store = EventStore.from_settings(real_backend, settings)
    thread_id = "thostile"
    foreign = "tvictim.abcdef12"  # another thread's run, in any partition
    events, header = [CREATED], {}
    if case == "foreign run event":
        events.append(
            codec.encode(ev.RunRequested(run_id=foreign, message_id="m1", reply_id="m2", agent="a"))
        )
    elif case == "foreign run hash":
        header = {"runs": {foreign: {"state": {"status": "completed"}, "ttl_ms": None}}}
    elif case == "unreadable event":
        events.append({**CREATED, "body": "[]"})
    elif case == "indexed stranger":
        header = {"indexed": {"ann": 1, "mallory": 1}}
    elif case == "expiry past Redis's":  # PEXPIRE refuses it, past the rename
        state = {"status": "completed"}
        header = {"runs": {f"{thread_id}.abcdef12": {"state": state, "ttl_ms": 10**19}}}
    elif case == "run not finished":  # an approval would wake it, and a worker run it
        state = {"status": "waiting", "waiting_for": "approval", "agent": "assistant"}
        header = {"runs": {f"{thread_id}.abcdef12": {"state": state, "ttl_ms": None}}}
    elif case == "score past a double's":
        header = {"activity_ms": 10**400}
    else:
        events.append({**CREATED, **{f"x{n}": "y" for n in range(10_000)}})
    records = hostile_export(thread_id, events, **header)
    views = ViewStore(store, run_retention_s=settings.run_retention_s)
    with pytest.raises(TransferError, match=said):
        await import_thread(store, views, records)
    part = store.keys.partition(thread_id)
    assert await real_backend.client.hget(part.runs, foreign) is None
    assert [key async for key in real_backend.client.scan_iter("*thostile*")] == []


async def test_a_run_hash_of_any_size_is_imported_whole(
    real_backend: Backend, settings: Settings
) -> None:
    """Lua's unpack() spreads ~8,000 values at most: a run hash is written in slices, or
    the finishing script failed past its rename, leaving the thread half-written."""
    store = EventStore.from_settings(real_backend, settings)
    run_id = "tbigrun.abcdef12"
    state = {"status": "completed", **{f"f{n}": "v" for n in range(5_000)}}
    records = hostile_export("tbigrun", [CREATED], runs={run_id: {"state": state, "ttl_ms": None}})
    views = ViewStore(store, run_retention_s=settings.run_retention_s)
    done = await import_thread(store, views, records)
    assert done.runs == 1 and done.view_saved
    part = store.keys.partition("tbigrun")
    assert await real_backend.client.hgetall(part.run(run_id)) == state
