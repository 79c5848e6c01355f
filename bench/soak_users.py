"""The simulated people of bench.soak: each with a token, threads, two sockets per thread.

A person makes a thread, opens two websockets on it (as two tabs would), and
sends it a few messages one after the other, each one of three kinds:
- ask: a message to `assistant`, answered in full;
- cancel: a message whose answer is cancelled once its first delta is seen;
- approve: a message to `clerk`, whose scripted answer calls `calculator`, a tool
  that waits for a person's yes; the person approves it and the answer ends.
Then the sockets close and the next thread begins. Every wait is bounded; what
went wrong is an error in the shared Tally, never an exception out of the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

KINDS = ("ask", "cancel", "approve")
WEIGHTS = (2, 1, 1)  # half the runs are answered in full
SOCKETS_PER_THREAD = 2
MESSAGES_PER_THREAD = 4
WAIT_S = 30.0
"""Longest wait for anything one run does: past it the run is an error, and the person
goes on (a loaded 2-core machine answers within a few seconds)."""
THINK_S = (0.3, 0.8)
"""A pause after each answer: it keeps every person below the default 120 sends a minute."""
TERMINAL_EVENTS = ("run.completed", "run.cancelled", "run.failed")
ERRORS_KEPT = 50


@dataclass
class Tally:
    """What every simulated person did and saw, for the report."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    actions: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    threads: dict[str, str] = field(default_factory=dict)  # thread id -> its owner
    runs: dict[str, str] = field(default_factory=dict)  # run id -> its thread

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        if len(self.error_samples) < ERRORS_KEPT:
            self.error_samples.append(f"{kind}: {detail}")

    def took(self, name: str, started: float, ended: float) -> None:
        self.latencies[name].append(ended - started)

    def runs_of(self) -> dict[str, list[str]]:
        """Run ids by thread."""
        found: dict[str, list[str]] = defaultdict(list)
        for run_id, thread_id in self.runs.items():
            found[thread_id].append(run_id)
        return found


class Refused(Exception):
    """A socket's first frame was not its snapshot."""


def position(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class Seen:
    """One frame's arrival on a socket."""

    at: float
    event: dict[str, Any]


class ThreadWatch:
    """The sockets on one thread, and when each run event first came off any of them."""

    def __init__(self, tally: Tally, thread_id: str) -> None:
        self.tally = tally
        self.thread_id = thread_id
        self.first: dict[tuple[str, str], Seen] = {}
        self.started: dict[str, list[float]] = defaultdict(list)  # run -> run.started arrivals
        self.ended: list[set[str]] = []  # per socket: the runs whose end it saw
        self.changed = asyncio.Condition()
        self.closing = False

    async def read(self, socket: ClientConnection, index: int) -> None:
        """Every frame of one socket until it closes; a close we did not ask for is an error."""
        last = (0, 0)
        try:
            async for raw in socket:
                frame = orjson.loads(raw)
                arrived = time.monotonic()
                if frame.get("type") == "error":
                    self.tally.error("socket error frame", f"{self.thread_id}: {frame}")
                    continue
                if frame.get("type") != "event":
                    continue
                at = position(frame["id"])
                if at <= last:
                    self.tally.error(
                        "socket order", f"{self.thread_id}: {frame['id']} after {last}"
                    )
                last = at
                await self._saw(index, arrived, frame["event"])
        except ConnectionClosed as exc:
            if not self.closing:
                self.tally.error("socket dropped", f"{self.thread_id}: {exc}")
        else:
            if not self.closing:
                self.tally.error("socket dropped", f"{self.thread_id}: closed by the server")

    async def _saw(self, index: int, arrived: float, event: dict[str, Any]) -> None:
        run_id = event.get("run_id")
        if not isinstance(run_id, str):
            return
        kind = str(event.get("type"))
        async with self.changed:
            self.first.setdefault((run_id, kind), Seen(arrived, event))
            if kind == "run.started":
                self.started[run_id].append(arrived)
            if kind in TERMINAL_EVENTS:
                self.ended[index].add(run_id)
            self.changed.notify_all()

    async def until(self, what: str, ready: Callable[[], bool]) -> bool:
        """Wait (bounded) for `ready`; False, with an error, when it never came."""
        try:
            async with asyncio.timeout(WAIT_S), self.changed:
                await self.changed.wait_for(ready)
            return True
        except TimeoutError:
            self.tally.error("waited too long", f"{self.thread_id}: no {what} in {WAIT_S:.0f} s")
            return False

    async def event(self, run_id: str, *kinds: str) -> Seen | None:
        """The first of `kinds` seen for the run, waited for."""

        def found() -> bool:
            return any((run_id, kind) in self.first for kind in kinds)

        if not await self.until(f"{'/'.join(kinds)} of run {run_id}", found):
            return None
        seen = [self.first[(run_id, kind)] for kind in kinds if (run_id, kind) in self.first]
        return min(seen, key=lambda s: s.at)

    def missed_ends(self) -> list[str]:
        """Runs one socket saw end and another did not (yet): each sees every event."""
        anywhere = set().union(*self.ended)
        return [run for run in anywhere for ended in self.ended if run not in ended]


class Person:
    """One simulated user: a token, an HTTP client, and the loop of threads and messages."""

    def __init__(self, name: str, token: str, base: str, tally: Tally, seed: int) -> None:
        self.name = name
        self.token = token
        self.base = base
        self.tally = tally
        self.random = random.Random(seed)
        self.sent = 0
        headers = {"Authorization": f"Bearer {token}"}
        self.http = httpx.AsyncClient(base_url=base, headers=headers, timeout=WAIT_S)

    async def close(self) -> None:
        await self.http.aclose()

    async def live(self, until: float) -> None:
        """Threads, one after another, until the monotonic time `until`."""
        while time.monotonic() < until:
            thread_id = await self._new_thread()
            if thread_id is None:
                await asyncio.sleep(1)  # the error is counted; do not spin on it
                continue
            async with self._watching(thread_id) as watch:
                if watch is None:
                    continue
                for _ in range(MESSAGES_PER_THREAD):
                    if time.monotonic() >= until:
                        break
                    await self._one(self.random.choices(KINDS, WEIGHTS)[0], watch)
                    await asyncio.sleep(self.random.uniform(*THINK_S))
                # Each end came off one socket; give the other a moment to have it too.
                await watch.until("every end on both sockets", lambda: not watch.missed_ends())

    async def _new_thread(self) -> str | None:
        made = await self._post("/api/threads", {})
        if made is None:
            return None
        thread_id = str(made.json()["id"])
        self.tally.threads[thread_id] = self.name
        return thread_id

    @contextlib.asynccontextmanager
    async def _watching(self, thread_id: str) -> AsyncIterator[ThreadWatch | None]:
        """Two sockets on the thread, each past its snapshot; closed on the way out."""
        watch = ThreadWatch(self.tally, thread_id)
        url = self.base.replace("http://", "ws://") + f"/api/threads/{thread_id}/live"
        headers = {"Authorization": f"Bearer {self.token}"}
        sockets: list[ClientConnection] = []
        readers: list[asyncio.Task[None]] = []
        opened = False
        try:
            for index in range(SOCKETS_PER_THREAD):
                async with asyncio.timeout(WAIT_S):
                    socket = await connect(url, additional_headers=headers)
                    sockets.append(socket)
                    first = orjson.loads(await socket.recv())
                if first.get("type") != "snapshot":
                    raise Refused(str(first))
                watch.ended.append(set())
                readers.append(asyncio.create_task(watch.read(socket, index)))
            opened = True
            self.tally.actions["sockets opened"] += SOCKETS_PER_THREAD
        except (OSError, TimeoutError, ConnectionClosed, Refused) as exc:
            self.tally.error("socket refused", f"{thread_id}: {exc!r}")
        try:
            yield watch if opened else None
        finally:
            watch.closing = True
            for socket in sockets:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5):
                        await socket.close()
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)

    async def _one(self, kind: str, watch: ThreadWatch) -> None:
        """One message of `kind` on the watched thread, followed to its run's end."""
        self.sent += 1
        text = f"soak {self.name} message {self.sent}: how do streams keep their order?"
        if kind == "approve":
            a, b = self.random.randint(2, 99), self.random.randint(2, 99)
            tool = orjson.dumps({"expression": f"{a} * {b}"}).decode()
            body = {"content": f"{text} [[tool calculator {tool}]]", "agent": "clerk"}
        else:
            body = {"content": text, "agent": "assistant"}
        sent = time.monotonic()
        accepted = await self._post(f"/api/threads/{watch.thread_id}/messages", body)
        if accepted is None:
            return
        self.tally.took("send → 202", sent, time.monotonic())
        run_id = str(accepted.json()["run_id"])
        self.tally.runs[run_id] = watch.thread_id
        self.tally.actions[f"{kind} sent"] += 1
        if kind == "approve":
            await self._approve(watch, run_id, sent)
        else:
            await self._answer(watch, run_id, sent, cancel=kind == "cancel")

    async def _answer(self, watch: ThreadWatch, run_id: str, sent: float, *, cancel: bool) -> None:
        delta = await watch.event(run_id, "message.delta")
        if delta is None:
            return
        self.tally.took("send → first delta", sent, delta.at)
        if cancel:
            await self._cancel(watch, run_id)
            return
        done = await watch.event(run_id, *TERMINAL_EVENTS)
        if done is not None:
            self._ended(run_id, done, "completed")
            self.tally.took("send → completed", sent, done.at)

    async def _cancel(self, watch: ThreadWatch, run_id: str) -> None:
        asked = time.monotonic()
        # A 409 is the run having ended before the cancel reached it: expected, not an error.
        response = await self._post(f"/api/runs/{run_id}/cancel", {}, expect=(409,))
        if response is not None and response.status_code == 409:
            self.tally.actions["cancel too late (409)"] += 1
        done = await watch.event(run_id, *TERMINAL_EVENTS)
        if done is None:
            return
        if done.event["type"] == "run.cancelled":
            self.tally.actions["cancelled"] += 1
            self.tally.took("cancel → cancelled", asked, done.at)
        elif self._ended(run_id, done, "completed") and response and response.status_code != 409:
            self.tally.actions["completed though the cancel was taken"] += 1

    async def _approve(self, watch: ThreadWatch, run_id: str, sent: float) -> None:
        waiting = await watch.event(run_id, "run.waiting", *TERMINAL_EVENTS)
        if waiting is None:
            return
        if waiting.event["type"] != "run.waiting" or waiting.event.get("waiting_for") != "approval":
            self.tally.error("no approval asked", f"run {run_id}: {waiting.event}")
            return
        approval = {"call_id": waiting.event["call_id"], "approved": True}
        asked = time.monotonic()
        response = await self._post(
            f"/api/runs/{run_id}/signal", {"name": "approval", "payload": approval}
        )
        if response is None:
            return
        # The attempt before the wait started before the wait was seen: any start seen
        # from here on is the run taken up again.
        if await watch.until(
            f"run {run_id} resumed", lambda: any(t >= asked for t in watch.started[run_id])
        ):
            resumed = min(t for t in watch.started[run_id] if t >= asked)
            self.tally.took("approve → resumed", asked, resumed)
        done = await watch.event(run_id, *TERMINAL_EVENTS)
        if done is not None and self._ended(run_id, done, "completed"):
            self.tally.actions["approved"] += 1

    def _ended(self, run_id: str, done: Seen, wanted: str) -> bool:
        status = done.event["type"].removeprefix("run.")
        if status == wanted:
            self.tally.actions[status] += 1
            return True
        self.tally.error(f"run {status}", f"run {run_id}: {done.event.get('reason', '')}")
        return False

    async def _post(
        self, path: str, body: dict[str, Any], expect: tuple[int, ...] = ()
    ) -> httpx.Response | None:
        """POST; a non-2xx not in `expect`, or no answer at all, is an error (None)."""
        try:
            response = await self.http.post(path, json=body)
        except httpx.HTTPError as exc:
            self.tally.error("HTTP failed", f"POST {path}: {exc!r}")
            return None
        if response.is_success or response.status_code in expect:
            return response
        self.tally.error(f"HTTP {response.status_code}", f"POST {path}: {response.text[:200]}")
        return None
