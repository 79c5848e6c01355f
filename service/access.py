"""Who may use a thread: its owner and its members. Every entry point asks here.

A thread's owner is the user who created it; the owner adds and removes
members, who may then do everything the owner does with the thread except
manage its members (a member may leave). To anyone else a thread does not
exist: the answer is the 404 of a thread that was never made, word for word.

The write side keeps this in `ss:{pNN}:access:<thread>` (`owner`, `m:<user>`)
and each user's threads per partition in `ss:{pNN}:mine:<user>`, both changed
by the append that writes `thread.created` / `thread.member_added` /
`thread.member_removed`, so access and history never disagree.

With SLIPSTREAM_AUTH=none there is one user, who may use every thread (threads
made before identity existed have no owner, and stay theirs).
"""

from __future__ import annotations

from typing import Literal

from service.auth import Caller
from service.runtime import Runtime
from slipstream import errors
from slipstream.keys import thread_of_run

Role = Literal["owner", "member"]


async def role(rt: Runtime, caller: Caller, thread_id: str) -> Role | None:
    """The caller's part in the thread; None for a stranger (or a thread that is not there)."""
    part = rt.store.keys.partition(thread_id)
    owner, member = await rt.backend.client.hmget(
        part.access(thread_id), ["owner", f"m:{caller.user}"]
    )
    if owner is not None and owner == caller.user:
        return "owner"
    return "member" if member is not None else None


async def authorize(rt: Runtime, caller: Caller, thread_id: str) -> Role:
    """The caller's role, or ThreadNotFound: the one check of every thread's entry point."""
    if rt.auth.mode == "none":
        return "owner"
    found = await role(rt, caller, thread_id)
    if found is None:
        raise errors.ThreadNotFound(thread_id)
    return found


async def visible_threads(rt: Runtime, caller: Caller) -> set[str] | None:
    """Every thread the caller may use; None when that is every thread (no auth)."""
    if rt.auth.mode == "none":
        return None
    async with rt.backend.client.pipeline(transaction=False) as pipe:
        for part in rt.store.keys.all():
            pipe.zrange(part.users_threads(caller.user), 0, -1)
        replies = await pipe.execute()
    return {str(thread_id) for reply in replies for thread_id in reply}


async def authorize_run(rt: Runtime, caller: Caller, run_id: str) -> Role:
    """As `authorize`, for the thread a run id names; RunNotFound for a stranger."""
    try:
        return await authorize(rt, caller, thread_of_run(run_id) or "")
    except errors.ThreadNotFound:
        raise errors.RunNotFound(run_id) from None
