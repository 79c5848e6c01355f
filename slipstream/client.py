"""A Python client of Slipstream's HTTP API: `Client` (blocking) and `AsyncClient`.

    from slipstream.client import Client

    with Client("http://127.0.0.1:8000", token="...") as slip:
        thread = slip.create_thread("notes")
        sent = slip.send(thread.id, "hello", agent="assistant")
        view = slip.wait(sent.run_id)

Answers are the server's own pydantic models (the thread view, summaries, the
202 bodies), so a program sees the fields the API documents, typed. Events come
over the server-sent event stream (`GET /api/threads/{id}/events/stream`), which
needs nothing beyond httpx: `events()` resumes by itself from the last event it
gave after a dropped connection (the server restarting, a proxy timing out), so
its caller sees every event once, in order, whatever the network did.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable, Collection, Generator, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx
import orjson
from pydantic import TypeAdapter, ValidationError

from projections.search import SearchHit
from projections.thread_view import ThreadSummary, ThreadView
from service.models import (
    CancelAccepted,
    MessageAccepted,
    Regenerated,
    SignalAccepted,
)
from slipstream.events import EVENT_ADAPTER, Event
from slipstream.keys import thread_of_run

__all__ = ["AsyncClient", "Client", "ClientError", "ThreadEvent"]

T = TypeVar("T")
ENDED = frozenset({"completed", "failed", "cancelled"})
# Past three of the server's default 15 s heartbeats without a byte, the connection
# is taken for dead and opened again (from the last event).
STREAM_READ_TIMEOUT_S = 50.0
RETRYABLE = frozenset({429, 500, 502, 503, 504})


class ClientError(Exception):
    """The server refused a call: its status and what it said (`detail`)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class ThreadEvent:
    """One event of a thread: its stream id (a resume position), type and body as the
    API shows them (`GET /api/threads/{id}/events`)."""

    id: str
    type: str
    data: dict[str, Any]

    @property
    def run_id(self) -> str | None:
        run_id = self.data.get("run_id")
        return run_id if isinstance(run_id, str) else None

    def typed(self) -> Event | None:
        """The event as the project's model (slipstream.events); None for a type this
        version does not know."""
        try:
            return EVENT_ADAPTER.validate_python(self.data)
        except ValidationError:
            return None


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One API call, said once for both clients: what to send and how to read the answer."""

    method: str
    path: str
    parse: Callable[[Any], T]
    json: Any = None
    params: dict[str, Any] | None = None


def _model(kind: type[T] | Any) -> Callable[[Any], T]:
    adapter: TypeAdapter[T] = TypeAdapter(kind)
    return adapter.validate_python


def _without_none(**fields: Any) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}


class _Calls:
    """The API's calls; `Client` and `AsyncClient` differ only in how they wait."""

    @staticmethod
    def create_thread(title: str) -> _Call[ThreadView]:
        return _Call("POST", "/api/threads", _model(ThreadView), json={"title": title})

    @staticmethod
    def list_threads(limit: int, archived: bool) -> _Call[list[ThreadSummary]]:
        params = {"limit": limit, "archived": str(archived).lower()}
        return _Call("GET", "/api/threads", _model(list[ThreadSummary]), params=params)

    @staticmethod
    def search(q: str, limit: int) -> _Call[list[SearchHit]]:
        params = {"q": q, "limit": limit}
        return _Call("GET", "/api/threads", _model(list[SearchHit]), params=params)

    @staticmethod
    def thread(thread_id: str) -> _Call[ThreadView]:
        return _Call("GET", f"/api/threads/{thread_id}", _model(ThreadView))

    @staticmethod
    def send(thread_id: str, content: str, **options: Any) -> _Call[MessageAccepted]:
        body = _without_none(content=content, **options)
        path = f"/api/threads/{thread_id}/messages"
        return _Call("POST", path, _model(MessageAccepted), json=body)

    @staticmethod
    def cancel(run_id: str, client_id: str | None) -> _Call[CancelAccepted]:
        path = f"/api/runs/{run_id}/cancel"
        return _Call("POST", path, _model(CancelAccepted), json=_without_none(client_id=client_id))

    @staticmethod
    def regenerate(run_id: str, client_id: str | None) -> _Call[Regenerated]:
        path = f"/api/runs/{run_id}/regenerate"
        return _Call("POST", path, _model(Regenerated), json=_without_none(client_id=client_id))

    @staticmethod
    def signal(
        run_id: str, name: str, payload: Any, client_id: str | None
    ) -> _Call[SignalAccepted]:
        body = {"name": name, "payload": payload, **_without_none(client_id=client_id)}
        return _Call("POST", f"/api/runs/{run_id}/signal", _model(SignalAccepted), json=body)

    @staticmethod
    def approval(
        run_id: str, call_id: str, approved: bool, reason: str | None, client_id: str | None
    ) -> _Call[SignalAccepted]:
        payload = {"call_id": call_id, "approved": approved, **_without_none(reason=reason)}
        return _Calls.signal(run_id, "approval", payload, client_id)


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _refusal(response: httpx.Response) -> ClientError:
    try:
        detail = str(response.json().get("detail", response.text))
    except ValueError:
        detail = response.text or response.reason_phrase
    return ClientError(response.status_code, detail)


def _thread_of(run_id: str) -> str:
    thread_id = thread_of_run(run_id)
    if thread_id is None:
        raise ValueError(f"{run_id!r} is not a run id (<thread id>.<hex>)")
    return thread_id


def _reached(view: ThreadView, run_id: str, until: Collection[str]) -> bool:
    run = view.runs.get(run_id)
    return run is not None and run.status in until


class _Frames:
    """Server-sent events, line by line (the spec's parsing, for what the server
    sends): the thread's events; None for a heartbeat; an `error` frame raises
    `_Dropped`, since the server ends the stream after one (the next connection
    then says, with its status, whether to go on)."""

    def __init__(self) -> None:
        self.id: str | None = None
        self.data: list[str] = []

    def feed(self, line: str) -> ThreadEvent | None:
        if line.startswith(":"):
            return None
        if line:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "id":
                self.id = value
            elif name == "data":
                self.data.append(value)
            return None
        data, event_id = "\n".join(self.data), self.id
        self.data, self.id = [], None
        if not data:
            return None
        frame = orjson.loads(data)
        if frame.get("type") == "event" and event_id is not None:
            event: dict[str, Any] = frame["event"]
            return ThreadEvent(event_id, str(event.get("type")), event)
        if frame.get("type") == "error":
            raise _Dropped(str(frame.get("detail")))
        return None


class _Dropped(Exception):
    """The stream ended or failed in a way another connection may mend."""


class _Retry:
    """Back-off between reconnections; gives up after `retries` in a row without an event."""

    def __init__(self, retries: int) -> None:
        self.retries = retries
        self.failures = 0

    def progressed(self) -> None:
        self.failures = 0

    def failed(self, exc: Exception) -> float:
        self.failures += 1
        if self.failures > self.retries:
            raise exc
        return float(min(2.0, 0.05 * 2**self.failures))


def _stream_request(thread_id: str, last: str) -> tuple[str, dict[str, str]]:
    return f"/api/threads/{thread_id}/events/stream", {"Last-Event-ID": last}


def _timeout(seconds: float) -> httpx.Timeout:
    return httpx.Timeout(seconds, read=STREAM_READ_TIMEOUT_S)


class Client:
    """The blocking client. `token`: an API token (`python -m service users add NAME`)."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        token: str | None = None,
        timeout: float = 30.0,
        retries: int = 10,
    ) -> None:
        self.retries = retries
        self._timeout = timeout
        self.http = httpx.Client(base_url=base_url, headers=_headers(token), timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _do(self, call: _Call[T]) -> T:
        response = self.http.request(call.method, call.path, json=call.json, params=call.params)
        if response.status_code >= 400:
            raise _refusal(response)
        return call.parse(response.json())

    def create_thread(self, title: str = "") -> ThreadView:
        return self._do(_Calls.create_thread(title))

    def list_threads(self, *, limit: int = 50, archived: bool = False) -> list[ThreadSummary]:
        return self._do(_Calls.list_threads(limit, archived))

    def search(self, q: str, *, limit: int = 20) -> list[SearchHit]:
        """The caller's threads holding every word of `q`, best match first."""
        return self._do(_Calls.search(q, limit))

    def thread(self, thread_id: str) -> ThreadView:
        return self._do(_Calls.thread(thread_id))

    def send(
        self,
        thread_id: str,
        content: str,
        *,
        agent: str | None = None,
        agents: list[str] | None = None,
        client_id: str | None = None,
        edit_of: str | None = None,
        parent_id: str | None = None,
        on_busy: str | None = None,
        expected_version: int | None = None,
    ) -> MessageAccepted:
        """Append a user message (202). With `client_id`, a resend writes nothing and
        answers what the first send did (`duplicate`)."""
        return self._do(
            _Calls.send(
                thread_id,
                content,
                agent=agent,
                agents=agents,
                client_id=client_id,
                edit_of=edit_of,
                parent_id=parent_id,
                on_busy=on_busy,
                expected_version=expected_version,
            )
        )

    def cancel(self, run_id: str, *, client_id: str | None = None) -> CancelAccepted:
        return self._do(_Calls.cancel(run_id, client_id))

    def regenerate(self, run_id: str, *, client_id: str | None = None) -> Regenerated:
        return self._do(_Calls.regenerate(run_id, client_id))

    def signal(
        self, run_id: str, name: str, payload: Any = None, *, client_id: str | None = None
    ) -> SignalAccepted:
        return self._do(_Calls.signal(run_id, name, payload, client_id))

    def approve(
        self, run_id: str, call_id: str, *, reason: str | None = None, client_id: str | None = None
    ) -> SignalAccepted:
        """Say yes to the tool call the run waits on (`view.runs[run_id].approval`)."""
        return self._do(_Calls.approval(run_id, call_id, True, reason, client_id))

    def deny(
        self, run_id: str, call_id: str, *, reason: str | None = None, client_id: str | None = None
    ) -> SignalAccepted:
        return self._do(_Calls.approval(run_id, call_id, False, reason, client_id))

    def events(self, thread_id: str, *, after: str | None = None) -> Iterator[ThreadEvent]:
        """The thread's events after `after` (None: from its first), then live, for ever:
        stop iterating to stop. A dropped connection is opened again from the last event."""
        for event in self._follow(thread_id, after):
            if event is not None:
                yield event

    def _follow(
        self, thread_id: str, after: str | None
    ) -> Generator[ThreadEvent | None, None, None]:
        last, retry = after or "0-0", _Retry(self.retries)
        while True:
            path, headers = _stream_request(thread_id, last)
            try:
                with self.http.stream(
                    "GET", path, headers=headers, timeout=_timeout(self._timeout)
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise _refusal(response)
                    frames = _Frames()
                    for line in response.iter_lines():
                        event = frames.feed(line)
                        if event is not None:
                            last = event.id
                            retry.progressed()
                        yield event
                raise _Dropped("the stream ended")
            except ClientError as exc:
                if exc.status not in RETRYABLE:
                    raise
                time.sleep(retry.failed(exc))
            except (httpx.TransportError, _Dropped) as exc:
                time.sleep(retry.failed(exc))

    def wait(
        self, run_id: str, *, until: Collection[str] = ENDED, timeout: float | None = None
    ) -> ThreadView:
        """The thread's view once the run's status is one of `until` (by default: it has
        ended; `{"waiting"}`: it waits, e.g. for an approval). TimeoutError after
        `timeout` seconds (noticed at the next event or heartbeat)."""
        thread_id = _thread_of(run_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        view = self.thread(thread_id)
        if _reached(view, run_id, until):
            return view
        followed = self._follow(thread_id, view.last_event_id)
        for event in followed:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} did not reach {sorted(until)} in {timeout} s")
            if event is not None and event.run_id == run_id and event.type.startswith("run."):
                view = self.thread(thread_id)
                if _reached(view, run_id, until):
                    followed.close()  # its connection goes now, not when collected
                    return view
        raise AssertionError("unreachable: the stream is followed for ever")


class AsyncClient:
    """The asyncio client: the same calls as `Client`, awaited."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        token: str | None = None,
        timeout: float = 30.0,
        retries: int = 10,
    ) -> None:
        self.retries = retries
        self._timeout = timeout
        self.http = httpx.AsyncClient(base_url=base_url, headers=_headers(token), timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.aclose()

    async def _do(self, call: _Call[T]) -> T:
        response = await self.http.request(
            call.method, call.path, json=call.json, params=call.params
        )
        if response.status_code >= 400:
            raise _refusal(response)
        return call.parse(response.json())

    async def create_thread(self, title: str = "") -> ThreadView:
        return await self._do(_Calls.create_thread(title))

    async def list_threads(self, *, limit: int = 50, archived: bool = False) -> list[ThreadSummary]:
        return await self._do(_Calls.list_threads(limit, archived))

    async def search(self, q: str, *, limit: int = 20) -> list[SearchHit]:
        return await self._do(_Calls.search(q, limit))

    async def thread(self, thread_id: str) -> ThreadView:
        return await self._do(_Calls.thread(thread_id))

    async def send(
        self,
        thread_id: str,
        content: str,
        *,
        agent: str | None = None,
        agents: list[str] | None = None,
        client_id: str | None = None,
        edit_of: str | None = None,
        parent_id: str | None = None,
        on_busy: str | None = None,
        expected_version: int | None = None,
    ) -> MessageAccepted:
        return await self._do(
            _Calls.send(
                thread_id,
                content,
                agent=agent,
                agents=agents,
                client_id=client_id,
                edit_of=edit_of,
                parent_id=parent_id,
                on_busy=on_busy,
                expected_version=expected_version,
            )
        )

    async def cancel(self, run_id: str, *, client_id: str | None = None) -> CancelAccepted:
        return await self._do(_Calls.cancel(run_id, client_id))

    async def regenerate(self, run_id: str, *, client_id: str | None = None) -> Regenerated:
        return await self._do(_Calls.regenerate(run_id, client_id))

    async def signal(
        self, run_id: str, name: str, payload: Any = None, *, client_id: str | None = None
    ) -> SignalAccepted:
        return await self._do(_Calls.signal(run_id, name, payload, client_id))

    async def approve(
        self, run_id: str, call_id: str, *, reason: str | None = None, client_id: str | None = None
    ) -> SignalAccepted:
        return await self._do(_Calls.approval(run_id, call_id, True, reason, client_id))

    async def deny(
        self, run_id: str, call_id: str, *, reason: str | None = None, client_id: str | None = None
    ) -> SignalAccepted:
        return await self._do(_Calls.approval(run_id, call_id, False, reason, client_id))

    async def events(
        self, thread_id: str, *, after: str | None = None
    ) -> AsyncGenerator[ThreadEvent, None]:
        """As `Client.events`; close it (`contextlib.aclosing`) to stop."""
        async with contextlib.aclosing(self._follow(thread_id, after)) as followed:
            async for event in followed:
                if event is not None:
                    yield event

    async def _follow(
        self, thread_id: str, after: str | None
    ) -> AsyncGenerator[ThreadEvent | None, None]:
        last, retry = after or "0-0", _Retry(self.retries)
        while True:
            path, headers = _stream_request(thread_id, last)
            try:
                async with self.http.stream(
                    "GET", path, headers=headers, timeout=_timeout(self._timeout)
                ) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        raise _refusal(response)
                    frames = _Frames()
                    async for line in response.aiter_lines():
                        event = frames.feed(line)
                        if event is not None:
                            last = event.id
                            retry.progressed()
                        yield event
                raise _Dropped("the stream ended")
            except ClientError as exc:
                if exc.status not in RETRYABLE:
                    raise
                await asyncio.sleep(retry.failed(exc))
            except (httpx.TransportError, _Dropped) as exc:
                await asyncio.sleep(retry.failed(exc))

    async def wait(self, run_id: str, *, until: Collection[str] = ENDED) -> ThreadView:
        """As `Client.wait`; bound it with `asyncio.timeout`."""
        thread_id = _thread_of(run_id)
        view = await self.thread(thread_id)
        if _reached(view, run_id, until):
            return view
        async with contextlib.aclosing(self._follow(thread_id, view.last_event_id)) as followed:
            async for event in followed:
                if event is not None and event.run_id == run_id and event.type.startswith("run."):
                    view = await self.thread(thread_id)
                    if _reached(view, run_id, until):
                        return view
        raise AssertionError("unreachable: the stream is followed for ever")
