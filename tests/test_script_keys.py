"""Every Lua script names every key it touches in KEYS, all in one slot.

On Redis Cluster a script runs on the node of its KEYS' slot, and while that
slot migrates a key the script names by itself cannot be followed (a script
cannot take an ASK). One Redis accepts such a script without a word, so this
test watches it: MONITOR shows each command a script runs ("[0 lua]") right
after the EVALSHA that ran it, COMMAND GETKEYS says which keys each names,
and each must be among the call's KEYS. Cancels go by sharded pub/sub in the
partition's slot (SPUBLISH): classic PUBLISH is broadcast to every node of a
cluster.

The calls come from the paths that touch other runs' hashes (a lane's holder,
queued runs, more runs of one message, a holder from before lanes), timers,
cancels and deletes, through the store and through a whole running system.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import subprocess
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import redis
from redis.crc import key_slot

from consumers.llm.scripted import ScriptedLLM
from consumers.schedules import Schedule, Schedules
from consumers.worker import Worker
from projections.compaction import Compactor
from projections.views import ViewStore
from service import commands, transfer
from service.deletion import Deleter
from slipstream import events as ev
from slipstream import retention
from slipstream.backend import Backend, as_entries
from slipstream.config import Settings
from slipstream.keys import Keyspace, new_id
from slipstream.store import Append, EventStore
from slipstream.users import Users
from tests.fake_llm import GatedLLM
from tests.harness import running_system
from tests.waits import until

ROOT = Path(__file__).resolve().parent.parent
LINE = re.compile(r"^\S+ \[\d+ ([^\]]+)\] (.*)$")
# MONITOR quotes each argument as sdscatrepr does.
PROBE = "return redis.call('EXISTS', KEYS[1])"
ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "a": "\a", "b": "\b", '"': '"', "\\": "\\"}


def monitor_args(text: str) -> list[str]:
    args: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == " ":
            i += 1
            continue
        assert text[i] == '"', text
        i += 1
        out: list[str] = []
        while text[i] != '"':
            if text[i] == "\\":
                nxt = text[i + 1]
                if nxt == "x":
                    out.append(chr(int(text[i + 2 : i + 4], 16)))
                    i += 4
                    continue
                out.append(ESCAPES[nxt])
                i += 2
                continue
            out.append(text[i])
            i += 1
        args.append("".join(out))
        i += 1
    return args


@dataclass
class ScriptCall:
    sha: str
    keys: list[str]
    argv: list[str]
    commands: list[list[str]] = field(default_factory=list)


class Monitor:
    """`redis-cli monitor`, read on a thread until `__exit__` sees its own marker go by."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.lines: list[tuple[str, list[str]]] = []
        self._marker = f"monitor-end-{new_id('')}"
        self._ready = threading.Event()
        self._process = subprocess.Popen(
            ["redis-cli", "-u", url, "monitor"],
            stdout=subprocess.PIPE,
            text=True,
            errors="replace",
        )
        self._thread = threading.Thread(target=self._read, daemon=True)

    def __enter__(self) -> Monitor:
        self._thread.start()
        assert self._ready.wait(10), "redis-cli monitor did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        with redis.Redis.from_url(self.url) as client:
            client.echo(self._marker)
        self._thread.join(60)
        self._process.kill()
        self._process.wait(10)
        if self._process.stdout is not None:
            self._process.stdout.close()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            if line.strip() == "OK":
                self._ready.set()
                continue
            match = LINE.match(line.rstrip("\n"))
            if match is None:
                continue
            client, args = match.group(1), monitor_args(match.group(2))
            if len(args) == 2 and args[0].upper() == "ECHO" and args[1] == self._marker:
                return
            self.lines.append((client, args))


def script_calls(lines: list[tuple[str, list[str]]]) -> list[ScriptCall]:
    """Each EVAL/EVALSHA with the commands its script ran (they follow it in MONITOR)."""
    calls: list[ScriptCall] = []
    for client, args in lines:
        name = args[0].upper() if args else ""
        if client == "lua":
            assert calls, f"a script's command before any script call: {args}"
            calls[-1].commands.append(args)
        elif name in ("EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO"):
            sha = args[1]
            if name.startswith("EVAL") and not name.startswith("EVALSHA"):
                sha = hashlib.sha1(args[1].encode()).hexdigest()
            count = int(args[2])
            calls.append(ScriptCall(sha, args[3 : 3 + count], args[3 + count :]))
    return calls


def known_scripts() -> dict[str, str]:
    """sha1 -> the script's file (or module constant), for the report."""
    from consumers import schedules
    from service import limits
    from slipstream import registry, retention, users

    texts: dict[str, str] = {}
    for path in sorted((ROOT / "slipstream/lua").glob("*.lua")):
        texts[path.name] = resources.files("slipstream").joinpath(f"lua/{path.name}").read_text()
    for path in sorted((ROOT / "projections").glob("*.lua")):
        texts[path.name] = path.read_text()
    for module in (users, retention, schedules, limits, registry):
        for name, value in vars(module).items():
            if name.isupper() and isinstance(value, str) and "redis.call" in value:
                texts[f"{module.__name__}.{name}"] = value
    names: dict[str, str] = {}
    for name, text in texts.items():  # a file first, before a module's copy of it
        names.setdefault(hashlib.sha1(text.encode()).hexdigest(), name)
    return names


def problems(calls: list[ScriptCall], client: redis.Redis) -> list[str]:
    """Every command of a script that names a key outside its KEYS or out of its slot."""
    names = known_scripts()
    commands_run = [command for call in calls for command in call.commands]
    with client.pipeline(transaction=False) as pipe:
        for command in commands_run:
            pipe.command_getkeys(*command)
        replies = iter(pipe.execute(raise_on_error=False))
    found: list[str] = []
    for call in calls:
        script = names.get(call.sha, call.sha[:12])
        slots = {key_slot(key.encode()) for key in call.keys}
        if len(slots) > 1:
            found.append(f"{script}: KEYS span slots {sorted(slots)}: {call.keys}")
        declared = set(call.keys)
        for command in call.commands:
            reply = next(replies)
            keys = [] if isinstance(reply, Exception) else [str(key) for key in reply]
            verb = command[0].upper()
            if verb == "PUBLISH":
                found.append(f"{script}: classic PUBLISH (broadcast to every node): {command}")
            if verb == "SPUBLISH" and slots and key_slot(command[1].encode()) not in slots:
                found.append(f"{script}: SPUBLISH to a channel of another slot: {command[:2]}")
            for key in keys:
                if key not in declared:
                    found.append(f"{script}: {verb} {key} is not in KEYS {call.keys}")
    return found


async def _end(store: EventStore, run_id: str, thread_id: str) -> None:
    await store.append(
        Append(
            thread_id,
            [ev.RunCompleted(run_id=run_id)],
            run_id=run_id,
            run_fields={"status": "completed"},
        )
    )


async def lanes_and_queues(store: EventStore) -> None:
    """The appends that touch runs other than their own."""
    # A second message waits for the lane's holder, then gets it when the first ends.
    thread_id, _ = await commands.create_thread(store)
    first = (await commands.send_message(store, thread_id, "a", "writer")).run_id
    second = (await commands.send_message(store, thread_id, "b", "writer")).run_id
    assert (await store.run_state(second, thread_id))["status"] == "queued"
    await _end(store, first, thread_id)
    await _end(store, second, thread_id)

    # One message, two agents: the second run is admitted in the same call.
    await commands.send_message(store, thread_id, "both", ["writer", "critic"])

    # An interrupt flags a running holder and announces it; one waiting ends at once.
    thread_id, _ = await commands.create_thread(store)
    held = (await commands.send_message(store, thread_id, "long", "writer")).run_id
    part = store.keys.partition(thread_id)
    await store.redis.hset(part.run(held), "status", "running")
    newer = await commands.send_message(store, thread_id, "now", "writer", on_busy="interrupt")
    assert (await store.run_state(held, thread_id))["cancel"] == "1"
    await commands.cancel_run(store, newer.run_id)  # queued: cancelled on the spot
    thread_id, _ = await commands.create_thread(store)
    parked = (await commands.send_message(store, thread_id, "approve?", "writer")).run_id
    await store.redis.hset(store.keys.partition(thread_id).run(parked), "status", "waiting")
    await commands.send_message(store, thread_id, "instead", "writer", on_busy="interrupt")
    assert (await store.run_state(parked, thread_id))["status"] == "cancelled"

    # A holder from before lanes (keyed by the thread alone) and a run queued behind it.
    thread_id, _ = await commands.create_thread(store)
    part = store.keys.partition(thread_id)
    old = f"{thread_id}.0123456789abcdef"
    await store.redis.hset(part.run(old), mapping={"status": "running", "agent": "writer"})
    await store.redis.hset(part.active, thread_id, old)
    waiting = f"{thread_id}.fedcba9876543210"
    await store.redis.hset(part.run(waiting), mapping={"status": "queued", "agent": "critic"})
    await store.redis.rpush(part.queue(thread_id), waiting)
    writer = (await commands.send_message(store, thread_id, "a", "writer")).run_id
    await _end(store, old, thread_id)
    work = as_entries(await store.redis.xrange(part.work))
    admitted = [f["run"] for _, f in work if f["thread"] == thread_id]
    assert sorted(admitted) == sorted([waiting, writer])


async def due_timers(store: EventStore, backend: Backend, settings: Settings) -> None:
    thread_id, _ = await commands.create_thread(store)
    run_id = (await commands.send_message(store, thread_id, "later", "writer")).run_id
    part = store.keys.partition(thread_id)
    await store.redis.hset(part.run(run_id), "status", "waiting")
    await store.redis.zadd(part.timers, {run_id: 0})
    worker = Worker(backend, store, ScriptedLLM(), settings)
    await worker._fire_due_timers()
    assert worker.stats["timers_fired"] == 1
    assert (await store.run_state(run_id, thread_id))["status"] == "queued"


async def the_other_scripts(store: EventStore, backend: Backend, settings: Settings) -> None:
    """Leases, work given back, consumers forgotten, users and sessions, schedules and the
    retention backfill: each of their scripts once."""
    thread_id, _ = await commands.create_thread(store)
    run_id = (await commands.send_message(store, thread_id, "leased", "writer")).run_id
    part = store.keys.partition(thread_id)
    reader, forgetter = (Worker(backend, store, ScriptedLLM(), settings) for _ in range(2))
    await reader.setup()
    items = await reader._read(backend.client, [part], count=100, block_ms=0)
    assert run_id in {item.run_id for item in items}
    await reader._give_back(items)
    await forgetter._forget_dead_consumers()  # the reader holds nothing and never registered
    assert forgetter.stats["consumers_forgotten"] >= 1
    claim = await reader.leases.claim(run_id, thread_id, reader.name, items[0].entry_id)
    assert claim.outcome == "OK"
    ours, _ = await reader.leases.renew(run_id, thread_id, claim.token, reader.name, "0-1")
    assert ours

    users = Users(backend)
    await users.add("audit")
    session = await users.start_session("audit", 60)
    assert await users.by_session(session) == "audit"
    await users.revoke("audit")

    await Schedules(store).put(Schedule(name="audit", workflow="research", every_s=3600))
    await retention.backfill(backend, settings)
    await Compactor(backend, store, after_s=1).compact(thread_id)

    # An export imported again once the thread is gone (import_thread.lua).
    moved, _ = await commands.create_thread(store, "moved")
    views = ViewStore(store, run_retention_s=settings.run_retention_s)
    exported = await transfer.export_thread(store, moved)
    assert await Deleter(store, views).delete(moved)
    assert (await transfer.import_thread(store, views, exported)).thread == moved


async def a_running_system(backend: Backend, settings: Settings) -> None:
    """Runs, a cancel reaching a running one, and a thread deleted under a running one."""
    llm = GatedLLM()
    async with running_system(backend, settings, llm=llm) as system:
        thread_id = await system.new_thread()
        accepted = await system.send(thread_id, "stop me")
        await asyncio.wait_for(llm.started.wait(), 10)
        response = await system.http.post(f"/api/runs/{accepted['run_id']}/cancel")
        assert response.status_code == 202
        view = await system.wait_for_run(thread_id, accepted["run_id"])
        assert view["runs"][accepted["run_id"]]["status"] == "cancelled"

        async def found() -> bool:  # search.lua and search_places.lua, once it is indexed
            hits = await system.http.get("/api/threads", params={"q": "stop"})
            return bool(hits.status_code == 200 and hits.json())

        await until(found, within=20)

        llm.started.clear()
        llm.closed.clear()
        thread_id = await system.new_thread()
        await system.send(thread_id, "delete me")
        await asyncio.wait_for(llm.started.wait(), 10)
        assert (await system.http.delete(f"/api/threads/{thread_id}")).status_code == 204
        await until(lambda: _is_set(llm.closed))  # the announcement stopped the model


async def _is_set(event: asyncio.Event) -> bool:
    return event.is_set()


async def test_every_script_names_every_key_it_touches(redis_url: str, settings: Settings) -> None:
    backend = Backend.connect(redis_url)
    store = EventStore(backend, Keyspace(settings.partitions))
    try:
        with Monitor(redis_url) as monitor:
            # MONITOR shows a script's commands after its call (Redis 7.0): checked here.
            await backend.client.eval(PROBE, 1, "probe")
            await a_running_system(backend, settings)  # first: its worker would take the rest
            await lanes_and_queues(store)
            await due_timers(store, backend, settings)
            await the_other_scripts(store, backend, settings)
    finally:
        await backend.close()

    calls = script_calls(monitor.lines)
    probe = next(call for call in calls if call.sha == hashlib.sha1(PROBE.encode()).hexdigest())
    assert probe.commands == [["EXISTS", "probe"]], "MONITOR shows scripts in another order"
    names = known_scripts()
    ran = {names.get(call.sha, call.sha) for call in calls if call.commands}
    # The paths above ran every script (but group_count.lua, for a feed trimmed past a
    # group): nothing vacuous.
    expected = {
        *(path.name for path in (ROOT / "slipstream/lua").glob("*.lua")),
        "search.lua",
        "search_places.lua",
        "store_view.lua",
        "compact.lua",
        "slipstream.users._TOKEN_LUA",
        "slipstream.users._SESSION_LUA",
        "slipstream.users._REVOKE_LUA",
        "consumers.schedules._PUT",
        "slipstream.retention._EXPIRE_IF_FOREVER",
        "slipstream.retention._EXPIRE_IF_FINISHED",
        "slipstream.registry._LIVE",
    }
    assert expected <= ran, sorted(expected - ran)
    appends = [call for call in calls if names.get(call.sha) == "append.lua"]
    assert any(len(call.keys) > 12 for call in appends), "no append named another run's hash"
    assert any(c[0].upper() == "SPUBLISH" for call in calls for c in call.commands)
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        found = problems(calls, client)
    assert not found, "\n".join(found)
