"""Several agents at once: one message, one run per agent, streaming into the thread together.

The model here is `Lockstep`: each agent's answer waits at gates the test
opens, so which events come before which is decided by the test, never by
timing, and the overlap is read from the order of the events.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from consumers.agents import loaded as agents_file
from consumers.llm.base import Prompt
from consumers.llm.parts import Part, TextPart
from consumers.llm.scripted import ScriptedLLM
from service import commands
from slipstream import errors
from slipstream import events as ev
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.keys import Keyspace
from slipstream.store import Append, EventStore
from slipstream.threads import message_dedupe_key
from tests.harness import System, running_system

Frame = dict[str, Any]


class Lockstep:
    """Each answer is "<agent> one. two. three.", the agent told by the system prompt.

    After "one." it waits for the agent's `middle` gate, after "two." for its
    `end` gate; the prompts it was asked are kept, by agent.
    """

    name = "lockstep"

    def __init__(self) -> None:
        self.agents = {agent.system: agent.name for agent in agents_file().agents}
        self.middle: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.end: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.prompts: defaultdict[str, list[Prompt]] = defaultdict(list)

    def open(self, *agents: str) -> None:
        for agent in agents:
            self.middle[agent].set()
            self.end[agent].set()

    async def stream(self, prompt: Prompt) -> AsyncIterator[Part]:
        # The system prompt starts with the agent's own; in a thread where several
        # agents answered, a note on their labels follows it.
        agent = next(
            (name for system, name in self.agents.items() if prompt.system.startswith(system)),
            "unknown",
        )
        self.prompts[agent].append(prompt)
        yield TextPart(f"{agent} one. ")
        await self.middle[agent].wait()
        yield TextPart("two. ")
        await self.end[agent].wait()
        yield TextPart("three.")


def answer(agent: str) -> str:
    return f"{agent} one. two. three."


@pytest.fixture
def llm() -> Lockstep:
    return Lockstep()


@pytest.fixture
async def system(real_backend: Backend, settings: Settings, llm: Lockstep) -> AsyncIterator[System]:
    async with running_system(real_backend, settings, llm=llm) as running:
        yield running


class Watcher:
    """One websocket client of a thread: every event frame it got, in order."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.frames: list[Frame] = []

    async def until(self, done: Callable[[list[Frame]], bool], within: float = 20) -> None:
        async with asyncio.timeout(within):
            while not done(self.frames):
                frame = orjson.loads(await self.socket.recv())
                if frame["type"] == "event":
                    self.frames.append(frame)

    @property
    def events(self) -> list[dict[str, Any]]:
        return [f["event"] for f in self.frames]


def index(events: list[dict[str, Any]], kind: str, run_id: str) -> int:
    found = [i for i, e in enumerate(events) if e["type"] == kind and e.get("run_id") == run_id]
    assert found, f"no {kind} of {run_id}"
    return found[0]


def deltas(events: list[dict[str, Any]], run_id: str) -> list[int]:
    return [
        i for i, e in enumerate(events) if e["type"] == "message.delta" and e["run_id"] == run_id
    ]


def wrote(run_id: str, text: str) -> Callable[[list[Frame]], bool]:
    """The run's deltas so far end with `text`."""

    def done(frames: list[Frame]) -> bool:
        said = "".join(
            f["event"]["text"]
            for f in frames
            if f["event"]["type"] == "message.delta" and f["event"]["run_id"] == run_id
        )
        return said.endswith(text)

    return done


def ended(
    *run_ids: str, kinds: tuple[str, ...] = ("run.completed", "run.cancelled", "run.failed")
) -> Callable[[list[Frame]], bool]:
    def done(frames: list[Frame]) -> bool:
        finished = {f["event"]["run_id"] for f in frames if f["event"]["type"] in kinds}
        return finished >= set(run_ids)

    return done


def both(*conditions: Callable[[list[Frame]], bool]) -> Callable[[list[Frame]], bool]:
    return lambda frames: all(c(frames) for c in conditions)


async def send(system: System, thread_id: str, **body: object) -> dict[str, Any]:
    response = await system.http.post(f"/api/threads/{thread_id}/messages", json=body)
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = response.json()
    return accepted


async def test_two_agents_stream_at_once_and_two_tabs_see_both(
    system: System, llm: Lockstep
) -> None:
    thread_id = await system.new_thread()
    async with connect(system.ws_url(thread_id)) as one, connect(system.ws_url(thread_id)) as two:
        for socket in (one, two):
            assert orjson.loads(await socket.recv())["type"] == "snapshot"
        accepted = await send(
            system, thread_id, content="A launch note, please", agents=["writer", "critic"]
        )
        runs = {r["agent"]: r for r in accepted["runs"]}
        writer, critic = runs["writer"]["run_id"], runs["critic"]["run_id"]
        assert accepted["run_id"] == writer == accepted["runs"][0]["run_id"]
        assert [r["agent"] for r in accepted["runs"]] == ["writer", "critic"]
        assert runs["writer"]["reply_id"] != runs["critic"]["reply_id"]

        watcher = Watcher(one)
        # Both answers have begun; neither can go on until the test says so.
        await watcher.until(both(wrote(writer, "writer one. "), wrote(critic, "critic one. ")))
        for gate in (llm.middle["writer"], llm.middle["critic"]):
            gate.set()
        await watcher.until(both(wrote(writer, "two. "), wrote(critic, "two. ")))
        llm.open("writer", "critic")
        await watcher.until(ended(writer, critic))
        other = Watcher(two)
        await other.until(ended(writer, critic))

    seen = watcher.events
    assert other.events == seen  # the second tab saw the same events, in the same order
    # Each ran while the other did: a delta of each between the other's start and end.
    for run, beside in ((writer, critic), (critic, writer)):
        began, done = index(seen, "run.started", beside), index(seen, "run.completed", beside)
        assert any(began < i < done for i in deltas(seen, run)), (run, seen)
    # Attribution: each delta goes to its run's own message; each message says its agent.
    requested = {e["run_id"]: e for e in seen if e["type"] == "run.requested"}
    assert {e["agent"] for e in requested.values()} == {"writer", "critic"}
    for run_id, request in requested.items():
        said = [e for e in seen if e["type"] == "message.delta" and e["run_id"] == run_id]
        assert {e["message_id"] for e in said} == {request["reply_id"]}
        assert "".join(e["text"] for e in said) == answer(request["agent"])
    view = await system.view(thread_id)
    replies = [m for m in view["messages"] if m["role"] == "assistant"]
    assert [(m["id"], m["agent"], m["content"], m["status"]) for m in replies] == [
        (runs[a]["reply_id"], a, answer(a), "completed") for a in ("writer", "critic")
    ]
    assert {m["run_id"] for m in replies} == {writer, critic}


async def test_one_agents_messages_run_in_order_while_another_runs_beside(
    system: System, llm: Lockstep
) -> None:
    thread_id = await system.new_thread()
    async with connect(system.ws_url(thread_id)) as socket:
        assert orjson.loads(await socket.recv())["type"] == "snapshot"
        first = await send(system, thread_id, content="Draft it", agents=["writer", "critic"])
        writer, critic = (r["run_id"] for r in first["runs"])
        later = (await send(system, thread_id, content="Shorter, please", agent="writer"))["run_id"]
        watcher = Watcher(socket)
        await watcher.until(both(wrote(writer, "writer one. "), wrote(critic, "critic one. ")))
        # The writer's lane is taken: its second message waits, in the thread's queue.
        part = system.runtime.store.keys.partition(thread_id)
        redis = system.runtime.store.redis
        assert await redis.hget(part.active, f"{thread_id}:writer") == writer
        assert await redis.hget(part.active, f"{thread_id}:critic") == critic
        assert await redis.lrange(part.queue(thread_id), 0, -1) == [later]
        assert (await system.view(thread_id))["runs"][later]["status"] == "queued"

        llm.open("writer")  # the writer finishes both; the critic stays mid-answer
        await watcher.until(ended(writer, later))
        assert (await system.view(thread_id))["runs"][critic]["status"] == "running"
        llm.open("critic")
        await watcher.until(ended(critic))

    seen = watcher.events
    assert index(seen, "run.completed", writer) < index(seen, "run.started", later)
    assert index(seen, "run.started", critic) < index(seen, "run.completed", writer)
    assert index(seen, "run.completed", later) < index(seen, "run.completed", critic)
    # The later writer run did not see the critic's answer half-written.
    (asked,) = llm.prompts["writer"][1:]
    assert "critic one" not in orjson.dumps([m.text for m in asked.messages]).decode()
    view = await system.view(thread_id)
    assert {view["runs"][r]["status"] for r in (writer, critic, later)} == {"completed"}
    assert await redis.hlen(part.active) == 0
    assert not await redis.exists(part.queue(thread_id))


async def test_a_message_with_two_mentions_starts_both_in_one_append(
    system: System, llm: Lockstep
) -> None:
    llm.open("writer", "critic")
    thread_id = await system.new_thread()
    before = await system.runtime.store.version(thread_id)
    content = "@writer draft the note, then @critic say what to cut"
    accepted = await send(system, thread_id, content=content, client_id="two-mentions")
    assert [r["agent"] for r in accepted["runs"]] == ["writer", "critic"]
    stored = await system.runtime.store.read(thread_id)
    batch = stored[before:]
    kinds = [s.event.type for s in batch[:4]]
    assert kinds == ["message.sent", "agent.routed", "run.requested", "run.requested"]
    # One script call: its dedupe key holds every id that call wrote, and each run's
    # journal begins at the message (`since`, set by the call that admitted it).
    store = system.runtime.store
    key = store.keys.partition(thread_id).dedupe(message_dedupe_key(thread_id, "two-mentions"))
    written = str(await store.redis.get(key)).partition("\n")[0]
    assert written.split(",") == [s.id for s in batch[:4]]
    for run in accepted["runs"]:
        assert (await store.run_state(run["run_id"], thread_id))["since"] == batch[0].id
    routed = batch[1].event
    assert isinstance(routed, ev.AgentRouted)
    assert (routed.agents, routed.by) == (["writer", "critic"], "mention")
    assert routed.reason == "mentioned @writer, @critic"
    requested = [s.event for s in batch[2:4]]
    assert [
        (e.run_id, e.reply_id, e.agent) for e in requested if isinstance(e, ev.RunRequested)
    ] == [(r["run_id"], r["reply_id"], r["agent"]) for r in accepted["runs"]]
    # A resend answers the same runs and writes nothing.
    again = await send(system, thread_id, content=content, client_id="two-mentions")
    assert again["duplicate"] and again["runs"] == accepted["runs"]
    for run in accepted["runs"]:
        await system.wait_for_run(thread_id, run["run_id"])
    kinds = [s.event.type for s in await system.runtime.store.read(thread_id)]
    assert (kinds.count("message.sent"), kinds.count("run.requested")) == (1, 2)
    view = await system.view(thread_id)
    assert [(m["agent"], m["content"]) for m in view["messages"] if m["role"] == "assistant"] == [
        ("writer", answer("writer")),
        ("critic", answer("critic")),
    ]


async def test_a_pick_of_several_is_routed_by_pick(system: System, llm: Lockstep) -> None:
    llm.open("writer", "critic")
    thread_id = await system.new_thread()
    accepted = await send(
        system, thread_id, content="hello", agent="critic", agents=["critic", "writer"]
    )
    assert [r["agent"] for r in accepted["runs"]] == ["critic", "writer"]
    events = [s.event for s in await system.runtime.store.read(thread_id)]
    (routed,) = [e for e in events if isinstance(e, ev.AgentRouted)]
    assert (routed.agents, routed.by) == (["critic", "writer"], "pick")
    (sent,) = [e for e in events if isinstance(e, ev.MessageSent)]
    assert (sent.agent, sent.run_id) == ("critic", accepted["run_id"])
    # A one-name list is a pick like `agent`: not routed, one run.
    single = await send(system, thread_id, content="again", agents=["writer"])
    assert [r["agent"] for r in single["runs"]] == ["writer"]
    events = [s.event for s in await system.runtime.store.read(thread_id)]
    assert len([e for e in events if isinstance(e, ev.AgentRouted)]) == 1
    for run in (*accepted["runs"], *single["runs"]):
        await system.wait_for_run(thread_id, run["run_id"])


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({"agents": ["writer", "editor", "poet"]}, "no agent named 'editor', 'poet'; known: "),
        ({"agents": ["writer", "critic", "writer"]}, "'writer' named more than once"),
        ({"agents": []}, "name at least one agent"),
        ({"agents": ["writer"] * 9}, "9 agents; a message may ask at most 8"),
        (
            {"agent": "writer", "agents": ["critic", "writer"]},
            "agent 'writer' and agents ['critic', 'writer'] disagree",
        ),
        ({"agents": "writer"}, "agents: Input should be a valid list"),
    ],
)
async def test_bad_agent_lists_are_refused_and_nothing_is_written(
    system: System, body: dict[str, object], said: str
) -> None:
    thread_id = await system.new_thread()
    version = await system.runtime.store.version(thread_id)
    response = await system.http.post(
        f"/api/threads/{thread_id}/messages", json={"content": "hi", **body}
    )
    assert response.status_code == 422
    assert said in response.text
    assert await system.runtime.store.version(thread_id) == version


async def test_cancelling_one_of_two_runs_leaves_the_other_running(
    system: System, llm: Lockstep
) -> None:
    thread_id = await system.new_thread()
    async with connect(system.ws_url(thread_id)) as socket:
        assert orjson.loads(await socket.recv())["type"] == "snapshot"
        accepted = await send(system, thread_id, content="Go", agents=["writer", "critic"])
        writer, critic = (r["run_id"] for r in accepted["runs"])
        watcher = Watcher(socket)
        await watcher.until(both(wrote(writer, "writer one. "), wrote(critic, "critic one. ")))
        cancelled = await system.http.post(f"/api/runs/{writer}/cancel")
        assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancel_requested"
        await watcher.until(ended(writer))
        view = await system.view(thread_id)
        assert (view["runs"][writer]["status"], view["runs"][critic]["status"]) == (
            "cancelled",
            "running",
        )
        assert not [
            e for e in watcher.events if e.get("run_id") == critic and "cancel" in e["type"]
        ]

        # Retried, the writer's run runs again in its lane, beside the critic still at work.
        llm.open("writer")
        retried = await system.http.post(f"/api/runs/{writer}/retry")
        assert retried.status_code == 202, retried.text
        await watcher.until(ended(writer, kinds=("run.completed",)))
        assert (await system.view(thread_id))["runs"][critic]["status"] == "running"
        llm.open("critic")
        await watcher.until(ended(critic))
        # Regenerating the critic's answer is a new run of the critic, in a new message.
        regenerated = await system.http.post(f"/api/runs/{critic}/regenerate")
        assert regenerated.status_code == 202, regenerated.text
        again = regenerated.json()
        await watcher.until(ended(again["run_id"]))
    view = await system.view(thread_id)
    replies = {m["id"]: m for m in view["messages"] if m["role"] == "assistant"}
    by_run = {r["run_id"]: r["reply_id"] for r in accepted["runs"]}
    assert (replies[by_run[writer]]["agent"], replies[by_run[writer]]["content"]) == (
        "writer",
        answer("writer"),
    )
    assert replies[again["message_id"]]["agent"] == "critic"
    assert view["runs"][again["run_id"]]["agent"] == "critic"
    assert replies[again["message_id"]]["content"] == answer("critic")


async def test_a_workflow_answers_beside_an_agent_in_its_own_lane(
    system: System, llm: Lockstep
) -> None:
    llm.open("assistant")  # the approval workflow drafts with the assistant
    thread_id = await system.new_thread()
    async with connect(system.ws_url(thread_id)) as socket:
        assert orjson.loads(await socket.recv())["type"] == "snapshot"
        accepted = await send(
            system, thread_id, content="Announce it", agents=["critic", "approval"]
        )
        critic, approval = (r["run_id"] for r in accepted["runs"])
        watcher = Watcher(socket)

        def parked(frames: list[Frame]) -> bool:
            return any(
                f["event"]["type"] == "run.waiting" and f["event"]["run_id"] == approval
                for f in frames
            )

        # The workflow drafts and parks for its signal while the critic is mid-answer.
        await watcher.until(both(wrote(critic, "critic one. "), parked))
        signalled = await system.http.post(
            f"/api/runs/{approval}/signal",
            json={"name": "approval", "payload": {"approved": True}},
        )
        assert signalled.status_code == 202, signalled.text
        await watcher.until(ended(approval))
        assert not ended(critic)(watcher.frames)
        llm.open("critic")
        await watcher.until(ended(critic))
    view = await system.view(thread_id)
    assert view["runs"][approval]["status"] == view["runs"][critic]["status"] == "completed"
    assert view["runs"][approval]["result"]["status"] == "published"


async def test_a_run_that_hands_off_stays_in_the_lane_it_was_admitted_under(
    real_backend: Backend, settings: Settings
) -> None:
    async with running_system(real_backend, settings, llm=ScriptedLLM(words=8)) as system:
        thread_id = await system.new_thread()
        handing = (await send(system, thread_id, content="@writer draft [[handoff critic]]"))[
            "run_id"
        ]
        after = (await send(system, thread_id, content="and again", agent="writer"))["run_id"]
        await system.wait_for_run(thread_id, handing)
        view = await system.wait_for_run(thread_id, after)
        store = system.runtime.store
        state = await store.run_state(handing, thread_id)
        assert (state["agent"], state["lane"]) == ("writer", "writer")
        assert await store.redis.hlen(store.keys.partition(thread_id).active) == 0
        seen = [s.event for s in await store.read(thread_id)]
    kinds = [(e.type, getattr(e, "run_id", None)) for e in seen]
    assert ("agent.handoff", handing) in kinds
    # The next writer message waited for the run the writer handed to the critic.
    assert kinds.index(("run.completed", handing)) < kinds.index(("run.started", after))
    replies = [(m["run_id"], m["agent"]) for m in view["messages"] if m["role"] == "assistant"]
    assert sorted(replies) == sorted([(handing, "writer"), (handing, "critic"), (after, "writer")])


# The lanes in the append script itself, without a worker.


@pytest.fixture
def lanes_store(real_backend: Backend, settings: Settings) -> EventStore:
    return EventStore(real_backend, Keyspace(settings.partitions), queue_max=3)


async def _admitted(store: EventStore, thread_id: str) -> list[str]:
    work = store.keys.partition(thread_id).work
    return [fields["run"] for _, fields in await store.redis.xrange(work)]


async def _end(store: EventStore, run_id: str, thread_id: str) -> None:
    await store.append(
        Append(
            thread_id,
            [ev.RunCompleted(run_id=run_id)],
            run_id=run_id,
            run_fields={"status": "completed"},
        )
    )


async def test_each_agent_has_its_lane_and_its_queue_order(lanes_store: EventStore) -> None:
    store = lanes_store
    thread_id, _ = await commands.create_thread(store)
    part = store.keys.partition(thread_id)
    both_sent = await commands.send_message(store, thread_id, "a", ["writer", "critic"])
    writer, critic = (r.run_id for r in both_sent.runs)
    writer2 = (await commands.send_message(store, thread_id, "b", "writer")).run_id
    writer3 = (await commands.send_message(store, thread_id, "c", "writer")).run_id
    review = (await commands.send_message(store, thread_id, "d", ["approval", "critic"])).runs
    # The writer's and critic's first runs and the workflow (an agent too) run at once.
    assert await _admitted(store, thread_id) == [writer, critic, review[0].run_id]
    assert await store.redis.lrange(part.queue(thread_id), 0, -1) == [
        writer2,
        writer3,
        review[1].run_id,
    ]
    # The queue bound counts every run a message would add: one more is refused whole.
    version = await store.version(thread_id)
    with pytest.raises(errors.QueueFull):
        await commands.send_message(store, thread_id, "e", ["writer", "assistant"])
    assert await store.version(thread_id) == version
    # Reject refuses when any of its agents is busy; a free one alone is taken.
    with pytest.raises(errors.ThreadBusy):
        await commands.send_message(
            store, thread_id, "f", ["assistant", "writer"], on_busy="reject"
        )
    assert await store.version(thread_id) == version
    assistant = await commands.send_message(store, thread_id, "g", "assistant", on_busy="reject")
    await _end(store, assistant.run_id, thread_id)

    await _end(store, critic, thread_id)  # the critic's lane goes to its next run only
    assert (await _admitted(store, thread_id))[-1] == review[1].run_id
    await _end(store, writer, thread_id)
    assert (await _admitted(store, thread_id))[-1] == writer2
    assert await store.redis.lrange(part.queue(thread_id), 0, -1) == [writer3]
    await _end(store, writer2, thread_id)
    assert (await _admitted(store, thread_id))[-1] == writer3
    for run in (writer3, review[0].run_id, review[1].run_id):
        await _end(store, run, thread_id)
    assert await store.redis.hlen(part.active) == 0
    assert not await store.redis.exists(part.queue(thread_id))
    hashes = [await store.run_state(r.run_id, thread_id) for r in both_sent.runs]
    assert [(h["agent"], h["lane"], h["since"]) for h in hashes] == [
        ("writer", "writer", both_sent.event_id),
        ("critic", "critic", both_sent.event_id),
    ]


async def test_interrupt_stops_only_the_holders_of_its_agents_lanes(
    lanes_store: EventStore,
) -> None:
    store = lanes_store
    thread_id, _ = await commands.create_thread(store)
    writer = (await commands.send_message(store, thread_id, "a", "writer")).run_id
    critic = (await commands.send_message(store, thread_id, "b", "critic")).run_id
    now = await commands.send_message(
        store, thread_id, "now", ["writer", "assistant"], on_busy="interrupt"
    )
    events = [s.event for s in await store.read(thread_id, start=now.event_id)]
    stopped = [e.run_id for e in events if isinstance(e, ev.RunCancelRequested)]
    assert stopped == [writer]
    assert (await store.run_state(writer, thread_id))["cancel"] == "1"
    assert "cancel" not in await store.run_state(critic, thread_id)
    new_writer, assistant = (r.run_id for r in now.runs)
    assert (await _admitted(store, thread_id))[-1] == assistant
    await _end(store, writer, thread_id)  # the interrupted run stops: the new one goes next
    assert (await _admitted(store, thread_id))[-1] == new_writer


async def test_a_cancel_ends_at_once_an_interrupted_run_no_worker_took_yet(
    lanes_store: EventStore,
) -> None:
    """The interrupt's flag waits for a worker; a cancel meanwhile need not."""
    store = lanes_store
    thread_id, _ = await commands.create_thread(store)
    writer = (await commands.send_message(store, thread_id, "a", "writer")).run_id
    newer = await commands.send_message(store, thread_id, "now", "writer", on_busy="interrupt")
    assert (await store.run_state(writer, thread_id))["cancel"] == "1"

    outcome = await commands.cancel_run(store, writer)

    assert (outcome.status, outcome.was) == ("cancelled", "queued")
    assert (await store.run_state(writer, thread_id))["status"] == "cancelled"
    assert (await _admitted(store, thread_id))[-1] == newer.run_id


async def test_a_run_admitted_before_lanes_still_hands_the_thread_on(
    lanes_store: EventStore,
) -> None:
    """A deployment upgraded mid-run: the old holder was keyed by the thread alone."""
    store = lanes_store
    thread_id, _ = await commands.create_thread(store)
    part = store.keys.partition(thread_id)
    old = f"{thread_id}.0123456789abcdef"
    await store.redis.hset(part.run(old), mapping={"status": "running", "agent": "writer"})
    await store.redis.hset(part.active, thread_id, old)
    waiting = f"{thread_id}.fedcba9876543210"  # queued behind it, before lanes: no lane field
    await store.redis.hset(part.run(waiting), mapping={"status": "queued", "agent": "critic"})
    await store.redis.rpush(part.queue(thread_id), waiting)
    # The old holder still holds the writer's lane: a new writer run waits for it.
    writer = (await commands.send_message(store, thread_id, "a", "writer")).run_id
    assert await _admitted(store, thread_id) == []
    await _end(store, old, thread_id)
    # Ended, it lets every free lane's first run go: the critic's and the writer's.
    assert sorted(await _admitted(store, thread_id)) == sorted([waiting, writer])
    assert not await store.redis.hexists(part.active, thread_id)
    assert not await store.redis.exists(part.queue(thread_id))
