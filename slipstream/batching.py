"""Script calls made at once by many tasks, sent together: one write, one connection.

A worker runs dozens of runs at once, and each of their appends is a script call
of its own. Sent one by one, each takes a pooled connection and a write and a
read of its own (and the pool grows to as many connections as calls in flight).
`ScriptBatch` gathers the calls made in one turn of the event loop and sends them
as one pipeline (no MULTI: each script is atomic on its own, and none waits for
another) on one connection, then hands each caller its own reply or error. A
caller waits no longer than before: the batch goes out on the loop's next turn.

A reply lost with its connection is lost for every call of the batch: each caller
sees the error it would have seen alone (a Redis fault: a run leaves the rest to its
lease, a request answers 503). A call whose caller was cancelled before the batch
went out is not sent. A server that lacks the script (restarted, or flushed) answers
NOSCRIPT, which ran nothing: that call goes again on its own, which loads the script.

A resent batch runs each of its calls again after all of them: a call that tells its
resend by what the last call of its run wrote (an append's batch id) would take it
for a new one if another call of that run came between. So calls given one key
(`one_at_a_time`: a run's hash) go out one at a time: a second waits, held, until the
batch of the first has been answered, resends and all.

On Redis Cluster calls are not batched: the cluster client follows a slot that is
moving (ASK, MOVED) for a call on its own, and a batch would have to do it itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError
from redis.typing import EncodableT

from slipstream.backend import Backend

MAX_BATCH = 128  # calls in one pipeline at most: a bound on one reply's size and wait


@dataclass
class _Call:
    script: AsyncScript
    keys: Sequence[str]
    args: Sequence[EncodableT]
    reply: asyncio.Future[Any]
    one_at_a_time: str | None = None


class ScriptBatch:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._waiting: list[_Call] = []
        self._sending: set[asyncio.Task[None]] = set()
        # The `one_at_a_time` keys of calls waiting or in flight, and the later calls of
        # those keys, held in the order they were made.
        self._busy: set[str] = set()
        self._held: list[_Call] = []
        self.batches = 0  # sent so far, and the calls they held: for the benchmark's counts
        self.calls = 0

    @property
    def held(self) -> int:
        """Calls waiting for an earlier call of their `one_at_a_time` key to be answered."""
        return len(self._held)

    async def call(
        self,
        script: AsyncScript,
        keys: Sequence[str],
        args: Sequence[EncodableT],
        *,
        one_at_a_time: str | None = None,
    ) -> Any:
        """`await script(keys=keys, args=args)`, sent with the other calls of this loop turn;
        after every earlier call given the same `one_at_a_time` has been answered."""
        if self.backend.cluster or not self.backend.can_block:
            # A cluster: see the module's docstring. In-process fakeredis: nothing to save.
            return await script(keys=keys, args=args)
        call = _Call(script, keys, args, asyncio.get_running_loop().create_future(), one_at_a_time)
        if one_at_a_time is not None and one_at_a_time in self._busy:
            self._held.append(call)
        else:
            self._queue(call)
        return await call.reply

    def _queue(self, call: _Call) -> None:
        if call.one_at_a_time is not None:
            self._busy.add(call.one_at_a_time)
        if not self._waiting:
            asyncio.get_running_loop().call_soon(self._send_waiting)
        self._waiting.append(call)

    def _answered(self, calls: list[_Call]) -> None:
        """`calls` (a batch) are answered: the calls held behind them go in the next one."""
        for call in calls:
            if call.one_at_a_time is not None:
                self._busy.discard(call.one_at_a_time)
        held, self._held = self._held, []
        for call in held:
            if call.reply.done():  # its caller was cancelled: not sent
                continue
            if call.one_at_a_time in self._busy:
                self._held.append(call)
            else:
                self._queue(call)

    def _send_waiting(self) -> None:
        waiting, self._waiting = self._waiting, []
        for start in range(0, len(waiting), MAX_BATCH):
            task = asyncio.create_task(self._send(waiting[start : start + MAX_BATCH]))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, calls: list[_Call]) -> None:
        try:
            await self._send_calls(calls)
        finally:
            self._answered(calls)

    async def _send_calls(self, calls: list[_Call]) -> None:
        calls = [call for call in calls if not call.reply.done()]  # cancelled: not sent
        if not calls:
            return
        try:
            async with self.backend.client.pipeline(transaction=False) as pipe:
                for call in calls:
                    pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
                replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            for call in calls:
                if not call.reply.done():
                    call.reply.set_exception(exc)
            return
        except BaseException as exc:  # cancelled (the process stops): so are its callers
            for call in calls:
                call.reply.cancel()
            raise exc
        self.batches += 1
        self.calls += len(calls)
        for call, reply in zip(calls, replies, strict=True):
            if call.reply.done():  # its caller was cancelled meanwhile: not sent again
                continue
            if isinstance(reply, NoScriptError):
                try:
                    reply = await call.script(keys=call.keys, args=call.args)
                except Exception as exc:
                    reply = exc
            if call.reply.done():
                continue
            if isinstance(reply, Exception):
                call.reply.set_exception(reply)
            else:
                call.reply.set_result(reply)
