"""Per-thread access over real HTTP and sockets: owner, member, stranger and anonymous
against every endpoint and socket action, members coming and going, and schedules."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from slipstream.backend import Backend
from slipstream.config import Settings
from tests.harness import System, running_system
from tests.waits import until

ROLES = ["owner", "member", "stranger", "anonymous"]


@dataclass
class World:
    system: System
    tokens: dict[str, str]  # role -> token (no anonymous)
    thread_id: str
    run_id: str

    def client(self, role: str) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role in self.tokens else {}
        return httpx.AsyncClient(base_url=str(self.system.http.base_url), headers=headers)

    def ws_headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"} if role in self.tokens else {}


async def run_ended(owner: httpx.AsyncClient, thread_id: str, run_id: str) -> None:
    async def ended() -> bool:
        view = (await owner.get(f"/api/threads/{thread_id}")).json()
        run = view["runs"].get(run_id)
        return bool(run) and run["status"] in ("completed", "failed", "cancelled")

    await until(ended, within=20)


@pytest.fixture
async def world(real_backend: Backend, settings: Settings) -> AsyncIterator[World]:
    tokens_mode = dataclasses.replace(settings, auth="tokens")
    async with running_system(real_backend, tokens_mode) as system:
        users = system.runtime.auth.users
        tokens = {
            role: await users.add(f"{role}-{id(system)}")
            for role in ("owner", "member", "stranger")
        }
        made = World(system, tokens, "", "")
        async with made.client("owner") as owner:
            made.thread_id = (await owner.post("/api/threads", json={"title": "t"})).json()["id"]
            added = await owner.post(
                f"/api/threads/{made.thread_id}/members",
                json={"user": f"member-{id(system)}"},
            )
            assert added.status_code == 200, added.text
            sent = await owner.post(
                f"/api/threads/{made.thread_id}/messages",
                json={"content": "hello", "agent": "assistant"},
            )
            made.run_id = sent.json()["run_id"]
            await run_ended(owner, made.thread_id, made.run_id)
        yield made


def endpoints(w: World) -> list[tuple[str, str, object, int, int]]:
    """(method, path, body, status for the owner, for a member) of every thread's route."""
    t, r = w.thread_id, w.run_id
    member = f"member-{id(w.system)}"
    approval = {"name": "approval", "payload": {"call_id": "c1", "approved": True}}
    return [
        ("GET", f"/api/threads/{t}", None, 200, 200),
        ("PATCH", f"/api/threads/{t}", {"title": "renamed"}, 200, 200),
        ("GET", f"/api/threads/{t}/events", None, 200, 200),
        ("GET", f"/api/threads/{t}/members", None, 200, 200),
        # Adding a member again changes nothing; only the owner manages members.
        ("POST", f"/api/threads/{t}/members", {"user": member}, 200, 403),
        ("DELETE", f"/api/threads/{t}/members/owner-{id(w.system)}", None, 422, 403),
        ("GET", f"/api/usage?thread_id={t}", None, 200, 200),
        ("GET", f"/api/runs/{r}", None, 200, 200),
        ("POST", f"/api/runs/{r}/cancel", {}, 409, 409),  # finished: the run's own answer
        ("POST", f"/api/runs/{r}/retry", {}, 409, 409),  # completed runs are not retried
        ("POST", f"/api/runs/{r}/signal", approval, 409, 409),  # not waiting
        ("POST", f"/api/threads/{t}/messages", {"content": "hi", "agent": "assistant"}, 202, 202),
        ("POST", f"/api/runs/{r}/regenerate", {}, 202, 202),
    ]


async def stream_length(w: World) -> int:
    view = await w.system.runtime.views.current(w.thread_id)
    length: int = await w.system.runtime.backend.client.xlen(view.stream_key)
    return length


@pytest.mark.parametrize("role", ROLES)
async def test_the_access_matrix(world: World, role: str) -> None:
    """Every route of a thread and its runs, as each kind of caller."""
    missing_thread = "thread 'tnothere' does not exist"
    async with world.client(role) as client, world.client("owner") as owner:
        for method, path, body, as_owner, as_member in endpoints(world):
            allowed = as_owner if role == "owner" else as_member
            before = await stream_length(world)
            kwargs = {"json": body} if body is not None else {}
            response = await client.request(method, path, **kwargs)
            got = (method, path, response.status_code, response.text[:200])
            if role in ("owner", "member"):
                assert response.status_code == allowed, got
            elif role == "stranger":
                assert response.status_code == 404, got
                # Word for word what a thread or run that does not exist answers.
                detail = response.json()["detail"]
                if "/api/runs/" in path:
                    assert detail == f"run {world.run_id!r} does not exist", got
                else:
                    assert detail == f"thread {world.thread_id!r} does not exist", got
                assert await stream_length(world) == before, got  # nothing written
            else:
                assert response.status_code == 401, got
                assert await stream_length(world) == before, got
            if allowed == 202 and role in ("owner", "member"):
                run_id = response.json()["run_id"]
                await run_ended(owner, world.thread_id, run_id)
        nowhere = await client.get("/api/threads/tnothere")
        if role != "anonymous":
            assert nowhere.json()["detail"] == missing_thread


@pytest.mark.parametrize("role", ROLES)
async def test_lists_show_only_what_the_caller_may_use(world: World, role: str) -> None:
    async with world.client(role) as client:
        threads = await client.get("/api/threads")
        runs = await client.get("/api/runs")
        if role == "anonymous":
            assert (threads.status_code, runs.status_code) == (401, 401)
            return
        thread_ids = [t["id"] for t in threads.json()]
        run_ids = [r["id"] for r in runs.json()]
        if role == "stranger":
            assert thread_ids == [] and run_ids == []
        else:
            assert thread_ids == [world.thread_id]
            assert world.run_id in run_ids


@pytest.mark.parametrize("role", ROLES)
async def test_the_thread_socket_as_each_caller(world: World, role: str) -> None:
    url = world.system.ws_url(world.thread_id)
    async with connect(url, additional_headers=world.ws_headers(role)) as socket:
        first = orjson.loads(await socket.recv())
        if role in ("owner", "member"):
            assert first["type"] == "snapshot"
            assert first["view"]["id"] == world.thread_id
            return
        assert first["type"] == "error"
        with pytest.raises(ConnectionClosed) as closed:
            await socket.recv()
        expected = 4404 if role == "stranger" else 4401
        assert closed.value.rcvd is not None and closed.value.rcvd.code == expected
        if role == "stranger":
            assert first["detail"] == f"thread {world.thread_id!r} does not exist"


async def test_members_come_and_go(world: World) -> None:
    system = world.system
    member, stranger = f"member-{id(system)}", f"stranger-{id(system)}"
    t = world.thread_id
    async with (
        world.client("owner") as owner,
        world.client("member") as bob,
        world.client("stranger") as carol,
    ):
        listed = (await owner.get(f"/api/threads/{t}/members")).json()
        assert listed == {"thread_id": t, "owner": f"owner-{id(system)}", "members": [member]}
        again = await owner.post(f"/api/threads/{t}/members", json={"user": member})
        assert again.json()["members"] == [member]  # adding twice changes nothing
        assert (
            await bob.post(f"/api/threads/{t}/members", json={"user": stranger})
        ).status_code == 403
        unknown = await owner.post(f"/api/threads/{t}/members", json={"user": "nobody-here"})
        assert unknown.status_code == 422 and "no user named 'nobody-here'" in unknown.text
        itself = await owner.post(f"/api/threads/{t}/members", json={"user": f"owner-{id(system)}"})
        assert itself.status_code == 422
        bad = await owner.post(f"/api/threads/{t}/members", json={"user": "a b"})
        assert bad.status_code == 422

        # carol joins, watching the list: the thread appears there live.
        list_url = f"ws://127.0.0.1:{system.port}/api/live/threads"
        async with connect(list_url, additional_headers=world.ws_headers("stranger")) as listing:
            assert orjson.loads(await listing.recv())["threads"] == []
            added = await owner.post(f"/api/threads/{t}/members", json={"user": stranger})
            assert added.json()["members"] == sorted([member, stranger])
            frame = orjson.loads(await listing.recv())
            assert frame["type"] == "thread" and frame["summary"]["id"] == t
            assert (await carol.get(f"/api/threads/{t}")).status_code == 200
            # ... and leaves it: the list is sent again without it.
            assert (await carol.delete(f"/api/threads/{t}/members/{stranger}")).status_code == 204
            while (frame := orjson.loads(await listing.recv()))["type"] != "threads":
                pass
            assert frame["threads"] == []
        assert (await carol.get(f"/api/threads/{t}")).status_code == 404

        assert (await bob.delete(f"/api/threads/{t}/members/owner-{id(system)}")).status_code == 403
        owner_out = await owner.delete(f"/api/threads/{t}/members/owner-{id(system)}")
        assert owner_out.status_code == 422
        assert (await owner.delete(f"/api/threads/{t}/members/{stranger}")).status_code == 404
        assert (await owner.delete(f"/api/threads/{t}/members/{member}")).status_code == 204
        assert (await bob.get(f"/api/threads/{t}")).status_code == 404

    events = await system.runtime.store.read(t)
    changes = [(s.event.type, getattr(s.event, "user", "")) for s in events]
    assert [c for c in changes if c[0].startswith("thread.member")] == [
        ("thread.member_added", member),
        ("thread.member_added", stranger),
        ("thread.member_removed", stranger),
        ("thread.member_removed", member),
    ]
    assert events[0].event.type == "thread.created"
    assert getattr(events[0].event, "owner", "") == f"owner-{id(system)}"


async def test_a_member_removed_while_watching_is_closed_out(
    real_backend: Backend, settings: Settings
) -> None:
    quick = dataclasses.replace(settings, auth="tokens", heartbeat_s=0.2)
    async with running_system(real_backend, quick, workers=False) as system:
        users = system.runtime.auth.users
        alice, bob = await users.add("alice-watch"), await users.add("bob-watch")
        base = str(system.http.base_url)
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {alice}"}
        ) as owner:
            t = (await owner.post("/api/threads", json={})).json()["id"]
            await owner.post(f"/api/threads/{t}/members", json={"user": "bob-watch"})
            headers = {"Authorization": f"Bearer {bob}"}
            async with connect(system.ws_url(t), additional_headers=headers) as socket:
                assert orjson.loads(await socket.recv())["type"] == "snapshot"
                await owner.delete(f"/api/threads/{t}/members/bob-watch")
                frames = []
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        frames.append(orjson.loads(await socket.recv()))
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404
                assert frames[-1] == {"type": "error", "detail": f"thread {t!r} does not exist"}


async def test_schedules_belong_to_their_creator(world: World) -> None:
    body = {"name": "digest", "workflow": "research", "every_s": 3600, "input": "digest"}
    async with world.client("owner") as owner, world.client("stranger") as carol:
        made = (await owner.put("/api/schedules/digest", json=body)).json()
        assert made["schedule"]["owner"] == f"owner-{id(world.system)}"
        assert [s["schedule"]["name"] for s in (await owner.get("/api/schedules")).json()] == [
            "digest"
        ]
        assert (await carol.get("/api/schedules")).json() == []
        assert (await carol.delete("/api/schedules/digest")).status_code == 404
        # The same name is carol's own schedule, beside the owner's.
        forged = {**body, "owner": f"owner-{id(world.system)}"}
        hers = (await carol.put("/api/schedules/digest", json=forged)).json()
        assert hers["schedule"]["owner"] == f"stranger-{id(world.system)}"
        assert len((await owner.get("/api/schedules")).json()) == 1
        # Its runs go to a thread of the creator's.
        schedule_thread = [
            t for t in (await owner.get("/api/threads")).json() if t["title"] == "Schedule: digest"
        ]
        assert len(schedule_thread) == 1
        assert (await carol.get(f"/api/threads/{schedule_thread[0]['id']}")).status_code == 404
        assert (await owner.delete("/api/schedules/digest")).status_code == 204
        assert len((await carol.get("/api/schedules")).json()) == 1


async def test_without_auth_there_are_no_members(backend: Backend, settings: Settings) -> None:
    async with running_system(backend, settings, workers=False) as system:
        t = await system.new_thread()
        refused = await system.http.post(f"/api/threads/{t}/members", json={"user": "bob"})
        assert refused.status_code == 400
        assert "one user" in refused.json()["detail"]
        members = (await system.http.get(f"/api/threads/{t}/members")).json()
        assert members == {"thread_id": t, "owner": "local", "members": []}
