"""Who a long-lived HTTP stream serves, asked again while it stays open.

An SSE response (the plain event stream, the AI SDK's and AG-UI's) outlives the
request that opened it, as a websocket does (service/websocket.py `_Gate`):
every heartbeat the caller is identified and authorized again, and the thread
must still exist, so a revoked token, a signed-out session, a removed member or
a deleted thread stops receiving. A Redis fault while asking is no refusal: the
stream carries on and asks at the next beat.
"""

from __future__ import annotations

import time

from fastapi import Request

from service import access, auth
from service.runtime import Runtime
from slipstream import errors
from slipstream.supervise import is_redis_fault


class StreamGate:
    """`still_open()` for service/follow.py; a refusal's reason is kept in `refusal`.

    With `socket_id`, the stream holds one of the user's sockets (service/limits.py),
    renewed at each beat.
    """

    def __init__(
        self, rt: Runtime, request: Request, thread_id: str, *, socket_id: str | None = None
    ) -> None:
        self.rt, self.thread_id, self.socket_id = rt, thread_id, socket_id
        self.request = auth.Request.of(request)
        self.refusal: str | None = None
        self._checked = time.monotonic()

    async def still_open(self) -> bool:
        if time.monotonic() - self._checked < self.rt.settings.heartbeat_s:
            return True
        self._checked = time.monotonic()
        try:
            who = await self.rt.auth.identify(self.request)
            if self.socket_id is not None:
                await self.rt.limits.renew_socket(who.user, self.socket_id)
            await access.authorize(self.rt, who, self.thread_id)
            if not await self.rt.store.exists(self.thread_id):
                raise errors.ThreadNotFound(self.thread_id)
        except (auth.Unauthenticated, auth.CrossSiteRefused, errors.ThreadNotFound) as exc:
            self.refusal = str(exc)
            return False
        except Exception as exc:
            if not is_redis_fault(exc):
                raise
        return True
