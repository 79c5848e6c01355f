"""`slipstream.client` end to end against a whole system on a real Redis, with tokens:
the README's example as written, every call of both clients, and the event stream
resuming by itself after its connection is cut mid-answer."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from slipstream.backend import Backend
from slipstream.client import AsyncClient, Client, ClientError, ThreadEvent
from slipstream.config import Settings
from tests.harness import System, running_system
from tests.waits import until

README = Path(__file__).resolve().parent.parent / "README.md"


@dataclasses.dataclass
class Served:
    system: System
    url: str
    token: str


@contextlib.asynccontextmanager
async def served(backend: Backend, settings: Settings) -> AsyncIterator[Served]:
    with_tokens = dataclasses.replace(settings, auth="tokens")
    async with running_system(backend, with_tokens) as system:
        token = await system.runtime.auth.users.add("client-user")
        yield Served(system, str(system.http.base_url).rstrip("/"), token)


class Cutter:
    """A TCP proxy in front of the web server whose open connections a test can cut
    (as a restarting server or a proxy's timeout would)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers += [writer, up_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while chunk := await source.read(65536):
                    sink.write(chunk)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


def readme_example() -> str:
    section = README.read_text().split("### Python client", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found is not None, "the README's Python client section has no example"
    return found.group(1)


async def test_the_readme_example_runs_as_written(
    real_backend: Backend,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with served(real_backend, settings) as s:
        monkeypatch.setenv("SLIPSTREAM_TOKEN", s.token)
        code = readme_example().replace("http://127.0.0.1:8000", s.url)
        scope: dict[str, object] = {}
        await asyncio.to_thread(exec, code, scope)  # blocking client: off the server's loop
        view, sent = scope["view"], scope["sent"]
        answer = view.messages[-1].content  # type: ignore[attr-defined]
        assert view.runs[sent.run_id].status == "completed"  # type: ignore[attr-defined]
        printed = capsys.readouterr().out
        assert printed.startswith(answer) and answer, printed
        assert printed.rstrip().endswith(f"completed {len(answer)} characters")


async def test_every_call_of_the_async_client(real_backend: Backend, settings: Settings) -> None:
    async with served(real_backend, settings) as s:
        async with AsyncClient(s.url) as anonymous:
            with pytest.raises(ClientError) as refused:
                await anonymous.list_threads()
            assert refused.value.status == 401
        async with AsyncClient(s.url, token=s.token) as slip:
            thread = await slip.create_thread("client tour")
            assert [t.id for t in await slip.list_threads()] == [thread.id]
            sent = await slip.send(thread.id, "zebras gallop", agent="assistant", client_id="c-1")
            again = await slip.send(thread.id, "zebras gallop", agent="assistant", client_id="c-1")
            assert again.duplicate and again.message_id == sent.message_id
            view = await slip.wait(sent.run_id)
            assert view.runs[sent.run_id].status == "completed"
            assert view.messages[-1].content and view.messages[-1].status == "completed"

            async def found() -> bool:
                return [hit.id for hit in await slip.search("zebras")] == [thread.id]

            await until(found)

            edited = await slip.send(thread.id, "horses trot", edit_of=sent.message_id)
            both = await slip.send(thread.id, "both of you", agents=["assistant", "writer"])
            assert [r.agent for r in both.runs] == ["assistant", "writer"]
            for run in (edited.run_id, *(r.run_id for r in both.runs)):
                assert (await slip.wait(run)).runs[run].status == "completed"

            again_run = await slip.regenerate(sent.run_id)
            assert (await slip.wait(again_run.run_id)).runs[again_run.run_id].status == "completed"

            with pytest.raises(ClientError) as bad:
                await slip.send(thread.id, "hi", agent="nobody")
            assert bad.value.status == 422 and "no agent named 'nobody'" in bad.value.detail
            with pytest.raises(ClientError) as gone:
                await slip.thread("nobody-made-this")
            assert gone.value.status == 404


async def test_cancel_and_approval_with_the_blocking_client(
    real_backend: Backend, settings: Settings
) -> None:
    slow = dataclasses.replace(settings, scripted_delay_ms=10, scripted_words=100)
    async with served(real_backend, slow) as s:

        def tour() -> None:
            with Client(s.url, token=s.token) as slip:
                thread = slip.create_thread()
                long = slip.send(thread.id, "a long answer please", agent="assistant")
                for event in slip.events(thread.id, after=long.event_id):
                    if event.type == "message.delta":
                        break  # it is streaming: stop it
                assert slip.cancel(long.run_id).run_id == long.run_id
                assert slip.wait(long.run_id).runs[long.run_id].status == "cancelled"

                ask = 'read it [[tool fetch_url {"url": "https://example.com/"}]]'
                sent = slip.send(thread.id, ask, agent="researcher")
                waiting = slip.wait(sent.run_id, until={"waiting"})
                approval = waiting.runs[sent.run_id].approval
                assert approval is not None and approval.tool == "fetch_url"
                denied = slip.deny(sent.run_id, approval.call_id, reason="not today")
                assert denied.was == "waiting"
                done = slip.wait(sent.run_id).runs[sent.run_id]
                assert done.status == "completed"
                assert [t.denied for t in done.tools] == [True]

                other = slip.send(thread.id, ask, agent="researcher")
                call = slip.wait(other.run_id, until={"waiting"}).runs[other.run_id].approval
                assert call is not None
                assert slip.approve(other.run_id, call.call_id).name == "approval"
                assert slip.wait(other.run_id).runs[other.run_id].status in ("completed", "failed")
                with pytest.raises(ClientError) as late:
                    slip.approve(other.run_id, call.call_id)
                assert late.value.status == 409

        await asyncio.to_thread(tour)


async def _stream_through_cuts(s: Served, *, blocking: bool) -> tuple[list[str], list[str], int]:
    """(ids the client's iterator gave, the thread's ids over the same span, connections)."""
    cutter = Cutter(s.system.port)
    via = await cutter.start()
    try:
        async with AsyncClient(s.url, token=s.token) as direct:
            thread = await direct.create_thread()
            sent = await direct.send(thread.id, "stream a while", agent="assistant")
            seen: list[ThreadEvent] = []
            cut_after = {3, 12}  # events: cut there, twice, mid-answer

            def done(event: ThreadEvent) -> bool:
                seen.append(event)
                if len(seen) in cut_after:
                    cutter_loop.call_soon_threadsafe(cutter.cut)
                return event.type == "run.completed" and event.run_id == sent.run_id

            cutter_loop = asyncio.get_running_loop()
            if blocking:

                def follow() -> None:
                    with Client(via, token=s.token) as slip:
                        for event in slip.events(thread.id, after=sent.event_id):
                            if done(event):
                                return

                await asyncio.to_thread(follow)
            else:
                async with AsyncClient(via, token=s.token) as slip:
                    events = slip.events(thread.id, after=sent.event_id)
                    async with contextlib.aclosing(events):
                        async for event in events:
                            if done(event):
                                break
            stored = (
                await s.system.http.get(
                    f"/api/threads/{thread.id}/events",
                    params={"after": sent.event_id},
                    headers={"Authorization": f"Bearer {s.token}"},
                )
            ).json()
            ids = [e["id"] for e in stored]
            return [e.id for e in seen], ids[: ids.index(seen[-1].id) + 1], cutter.connections
    finally:
        await cutter.close()


@pytest.mark.parametrize("blocking", [False, True], ids=["async", "blocking"])
async def test_events_resume_by_themselves_after_a_cut(
    real_backend: Backend, settings: Settings, blocking: bool
) -> None:
    slow = dataclasses.replace(settings, scripted_delay_ms=5, scripted_words=300)
    async with served(real_backend, slow) as s:
        got, stored, connections = await _stream_through_cuts(s, blocking=blocking)
    assert got == stored  # every event once, in order, across the cuts
    assert len(got) > 12 and got[-1] == stored[-1] and connections >= 3
