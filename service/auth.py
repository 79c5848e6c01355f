"""Who is asking: one `Authenticator` every HTTP route and socket goes through.

Modes (SLIPSTREAM_AUTH):
- `none`: everyone is the one local user. The web role refuses to listen on
  anything but loopback in this mode (service/__main__.py).
- `tokens`: programs send `Authorization: Bearer <token>` (slipstream/users.py);
  the web chat signs in once with a token and then holds a session cookie.
- `header`: a reverse proxy that did the signing-in names the user in a header
  (SLIPSTREAM_AUTH_HEADER); the header counts only from SLIPSTREAM_TRUSTED_PROXIES,
  judged by the connection's own peer address (uvicorn's proxy-header rewriting is
  off, so a client cannot choose the address this checks).

The session cookie is HttpOnly, SameSite=Lax, Secure when the page came over
HTTPS, and carries the session id signed with `itsdangerous` (Pallets' signing
library, the one Starlette's sessions use) under a timestamp, so a cookie past
its age is refused before Redis is asked. Redis keeps the session, so signing
out or revoking the user ends it at once.

A state-changing request carried by the cookie must say where it comes from
(Origin or Sec-Fetch-Site; service/security.py refuses any other origin's): a
request with neither is refused, which closes the older browsers' CSRF gap.
A bearer token is never sent by a browser on its own, so it needs no such check.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection

from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.users import LOCAL_USER, UserError, Users, check_name

log = logging.getLogger("slipstream.auth")

COOKIE = "slipstream_session"
SECRET_KEY = "ss:{auth}:secret"
_SALT = "slipstream.session"
INVALID_TOKEN = "the token is not valid (unknown or revoked)"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

Via = Literal["local", "token", "session", "header"]


@dataclass(frozen=True)
class Caller:
    user: str
    via: Via


class Unauthenticated(Exception):
    """No identity, or a refused one: a 401 (websocket close 4401) saying which."""


class CrossSiteRefused(Exception):
    """A cookie request that does not say it comes from the chat's page: a 403."""


@dataclass(frozen=True)
class Request:
    """What identification needs of an HTTP request or a websocket handshake."""

    method: str
    headers: Headers
    cookies: Mapping[str, str]
    peer: str | None

    @classmethod
    def of(cls, connection: HTTPConnection) -> Request:
        """An HTTP request's, or a websocket's handshake (a GET)."""
        return cls(
            method=str(connection.scope.get("method", "GET")),
            headers=connection.headers,
            cookies=connection.cookies,
            peer=connection.client.host if connection.client else None,
        )


def _same_site(request: Request, caller: Caller) -> Caller:
    """A state-changing request a browser sent on its own (cookies) must say where from."""
    if request.method in UNSAFE_METHODS and not (
        request.headers.get("origin") or request.headers.get("sec-fetch-site")
    ):
        raise CrossSiteRefused(
            "a request signed in with a browser cookie must come from the chat's page "
            "(it has neither Origin nor Sec-Fetch-Site)"
        )
    return caller


class Authenticator:
    def __init__(self, settings: Settings, backend: Backend) -> None:
        self.settings = settings
        self.mode = settings.auth
        self.users = Users(backend)
        self._redis = backend.client
        self._proxies = [ipaddress.ip_network(n, strict=False) for n in settings.trusted_proxies]
        self._signer: URLSafeTimedSerializer | None = None

    def describe(self) -> str:
        """The mode, said plainly, for the start-up line."""
        if self.mode == "none":
            return "auth: none (one local user; loopback only)"
        if self.mode == "tokens":
            return "auth: tokens (bearer tokens and signed session cookies)"
        proxies = ", ".join(self.settings.trusted_proxies)
        return f"auth: header {self.settings.auth_header} from {proxies}"

    async def identify(self, request: Request) -> Caller:
        """The caller, or Unauthenticated / CrossSiteRefused."""
        if self.mode == "none":
            return Caller(LOCAL_USER, "local")
        if self.mode == "header":
            caller = self._from_proxy(request)
            # A request with a cookie is likely a browser's riding on the proxy's sign-in
            # cookie: the same cross-site rule as ours. Programs send no cookie.
            return _same_site(request, caller) if request.cookies else caller
        authorization = request.headers.get("authorization")
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("Authorization must be 'Bearer <token>'")
            user = await self.users.by_token(token.strip())
            if user is None:
                raise Unauthenticated(INVALID_TOKEN)
            return Caller(user, "token")
        cookie = request.cookies.get(COOKIE)
        if cookie is None:
            raise Unauthenticated("sign in: send 'Authorization: Bearer <token>'")
        session_id = await self.session_of(cookie)
        user = await self.users.by_session(session_id) if session_id else None
        if user is None:
            raise Unauthenticated("the session has ended: sign in again")
        return _same_site(request, Caller(user, "session"))

    def _from_proxy(self, request: Request) -> Caller:
        names = request.headers.getlist(self.settings.auth_header)
        if not names:
            raise Unauthenticated(f"no {self.settings.auth_header} header from the proxy")
        if len(names) > 1:
            # A proxy that appends rather than replaces would let the client's copy win.
            raise Unauthenticated(
                f"more than one {self.settings.auth_header} header: the proxy must replace "
                "the client's, not add to it"
            )
        name = names[0]
        if not self.trusted(request.peer):
            log.warning(
                "a %s header from %s, which is not a trusted proxy, was ignored",
                self.settings.auth_header,
                request.peer,
            )
            raise Unauthenticated(f"{self.settings.auth_header} is only taken from the proxy")
        try:
            return Caller(check_name(name.strip()), "header")
        except UserError as exc:
            raise Unauthenticated(str(exc)) from None

    def trusted(self, peer: str | None) -> bool:
        if peer is None:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self._proxies)

    async def sign_in(self, token: str) -> tuple[str, str]:
        """(user, signed cookie value) for a valid token; Unauthenticated otherwise."""
        user = await self.users.by_token(token.strip())
        if user is None:
            raise Unauthenticated(INVALID_TOKEN)
        try:
            session_id = await self.users.start_session(user, self.settings.session_ttl_s)
        except UserError:
            raise Unauthenticated(INVALID_TOKEN) from None
        return user, (await self._serializer()).dumps(session_id)

    async def sign_out(self, cookie: str | None) -> None:
        session_id = await self.session_of(cookie) if cookie else None
        if session_id:
            await self.users.end_session(session_id)

    async def session_of(self, cookie: str) -> str | None:
        """The session id a cookie carries, if its signature holds and it is young enough."""
        try:
            value = (await self._serializer()).loads(cookie, max_age=self.settings.session_ttl_s)
        except BadSignature:
            return None
        return value if isinstance(value, str) else None

    async def _serializer(self) -> URLSafeTimedSerializer:
        if self._signer is None:
            key = self.settings.secret_key
            if key is None:
                # One key for every web process of the deployment, made by the first.
                await self._redis.set(SECRET_KEY, secrets.token_urlsafe(48), nx=True)
                key = str(await self._redis.get(SECRET_KEY))
            self._signer = URLSafeTimedSerializer(key, salt=_SALT)
        return self._signer
