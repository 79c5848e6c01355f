"""Lua scripts called inside a pipeline, on one Redis and on Redis Cluster alike.

redis-py's pipeline on one Redis makes sure the server holds every script it calls
before sending them (SCRIPT EXISTS, then SCRIPT LOAD of the missing). Its cluster
pipeline does not: it sends EVALSHA alone, so a node that never loaded the script
answers NOSCRIPT, and so does a replica promoted by a failover (a replica keeps no
script cache of its master's). A script called on its own (`await script(...)`) is
safe either way: redis-py loads it and calls it again on NOSCRIPT, and on a cluster
SCRIPT LOAD goes to every primary.

`ScriptCalls` remembers where each script call sits in a pipeline. Its `execute`
runs the pipeline; for each call answered NOSCRIPT it loads the call's script (on
every primary of a cluster) and sends that call again, once. A call answered
NOSCRIPT ran nothing, so nothing runs twice; the other commands are not resent.
For pipelines without MULTI only: a call sent again would be outside the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError
from redis.typing import EncodableT


class ScriptCalls:
    """The script calls queued on one pipeline, by their place in it."""

    def __init__(self, client: Redis) -> None:
        self._client = client
        self._calls: dict[int, tuple[AsyncScript, list[str], list[EncodableT]]] = {}

    async def queue(
        self,
        pipe: Pipeline,
        script: AsyncScript,
        *,
        keys: Sequence[str],
        args: Sequence[EncodableT] = (),
    ) -> None:
        """Queue `script(keys, args)` on `pipe` (a plain or a cluster pipeline)."""
        self._calls[len(pipe)] = (script, list(keys), list(args))
        await script(keys=keys, args=args, client=pipe)

    async def execute(self, pipe: Pipeline, *, raise_on_error: bool = True) -> list[Any]:
        """Every reply of `pipe` in order, the calls a node lacked a script for sent again.

        With `raise_on_error`, the first error left is raised, as `pipe.execute()` does.
        """
        replies = list(await pipe.execute(raise_on_error=False))
        missing = [
            place
            for place, reply in enumerate(replies)
            if isinstance(reply, NoScriptError) and place in self._calls
        ]
        if missing:
            scripts = {id(self._calls[place][0]): self._calls[place][0] for place in missing}
            for script in scripts.values():
                await self._client.script_load(script.script)  # cluster: every primary
            async with self._client.pipeline(transaction=False) as again:
                for place in missing:
                    script, keys, args = self._calls[place]
                    await script(keys=keys, args=args, client=again)
                answered = await again.execute(raise_on_error=False)
            for place, reply in zip(missing, answered, strict=True):
                replies[place] = reply
        self._calls.clear()
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        return replies
