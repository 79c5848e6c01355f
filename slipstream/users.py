"""Users, their API tokens and their browser sessions, kept in Redis.

A token is 32 random bytes (`ss_` + URL-safe base64) shown once when it is made;
Redis keeps only its SHA-256. A slow password hash (argon2, bcrypt) protects
guessable secrets; a 256-bit random token cannot be guessed, so a fast digest is
as safe and lets every request be checked with one `HGET`. The digest is the
standard library's `hashlib`.

A session is what the web chat holds after signing in with a token: a random id
in Redis with a lifetime, which the cookie carries signed (service/auth.py).
Revoking a user deletes their tokens and every session they hold, so the next
request of each is a 401.

Keys (one deployment-wide hash tag, `{auth}`, so each script's keys, and the
MULTI that starts a session, share a slot on a cluster):
- `ss:{auth}:users`: user name -> JSON (created_ms, serial: a random id of this record).
- `ss:{auth}:tokens`: SHA-256 of a token -> user name.
- `ss:{auth}:user_tokens:<user>`: the digests of that user's tokens.
- `ss:{auth}:session:<id>`: user name and serial, expiring with the session.
- `ss:{auth}:sessions:<user>`: that user's session ids, expiring with the newest.
Users and tokens live until revoked; sessions expire.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass

import orjson

from slipstream.backend import Backend

USERS = "ss:{auth}:users"
TOKENS = "ss:{auth}:tokens"
SESSION_PREFIX = "ss:{auth}:session:"
USER_SESSIONS_PREFIX = "ss:{auth}:sessions:"
USER_TOKENS_PREFIX = "ss:{auth}:user_tokens:"
TOKEN_PREFIX = "ss_"
USER_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
LOCAL_USER = "local"
"""The one user of SLIPSTREAM_AUTH=none."""

# KEYS: users, tokens, the user's token digests, the user's sessions, then the
# session keys found; ARGV: the name. Deleting the user first makes any session
# started meanwhile worthless too: a session counts only while its user exists.
_REVOKE_LUA = """
local existed = redis.call('HDEL', KEYS[1], ARGV[1])
local digests = redis.call('SMEMBERS', KEYS[3])
for _, d in ipairs(digests) do
  redis.call('HDEL', KEYS[2], d)
end
redis.call('DEL', KEYS[3], KEYS[4])
local sessions = 0
for i = 5, #KEYS do
  sessions = sessions + redis.call('DEL', KEYS[i])
end
return {existed, #digests, sessions}
"""

# KEYS: users, tokens, the user's token digests; ARGV: name, digest. A token is only
# written for a user that exists, so one made while the user is revoked is not left.
_TOKEN_LUA = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[2])
return 1
"""

# KEYS: the session, users. The session holds "<name> <serial of the user>", a
# random id each user record gets: a user revoked and made again under the same
# name does not inherit the old one's sessions.
_SESSION_LUA = """
local held = redis.call('GET', KEYS[1])
if not held then return false end
local name, serial = string.match(held, '^(%S+) (%S+)$')
if not name then return false end
local record = redis.call('HGET', KEYS[2], name)
if not record then return false end
if cjson.decode(record)['serial'] ~= serial then return false end
return name
"""


class UserError(ValueError):
    """A name that cannot be a user, a user that exists already or does not."""


@dataclass(frozen=True)
class User:
    name: str
    created_ms: int
    tokens: int


@dataclass(frozen=True)
class Revoked:
    tokens: int
    sessions: int


def check_name(name: str) -> str:
    if not USER_NAME.match(name):
        raise UserError(f"{name!r} cannot be a user name: 1 to 64 letters, digits and _ . @ -")
    return name


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class Users:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.redis = backend.client
        self._revoke = self.redis.register_script(_REVOKE_LUA)
        self._session = self.redis.register_script(_SESSION_LUA)
        self._new_token = self.redis.register_script(_TOKEN_LUA)

    async def add(self, name: str) -> str:
        """Create a user; returns their first token (kept nowhere but in the answer)."""
        check_name(name)
        record = orjson.dumps(
            {"created_ms": int(time.time() * 1000), "serial": secrets.token_hex(8)}
        ).decode()
        if not await self.redis.hsetnx(USERS, name, record):
            raise UserError(f"user {name!r} exists already; `users token {name}` makes a new token")
        return await self._token_for(name)

    async def token(self, name: str) -> str:
        """Another token for an existing user (the others keep working)."""
        return await self._token_for(check_name(name))

    async def _token_for(self, name: str) -> str:
        token = new_token()
        keys = [USERS, TOKENS, USER_TOKENS_PREFIX + name]
        if not await self._new_token(keys=keys, args=[name, digest(token)]):
            raise UserError(f"no user named {name!r}")
        return token

    async def list(self) -> list[User]:
        users = await self.redis.hgetall(USERS)
        owners = await self.redis.hvals(TOKENS)
        counts: dict[str, int] = {}
        for owner in owners:
            counts[str(owner)] = counts.get(str(owner), 0) + 1
        found = []
        for name, raw in sorted(users.items()):
            created = int(orjson.loads(raw).get("created_ms", 0))
            found.append(User(str(name), created, counts.get(str(name), 0)))
        return found

    async def revoke(self, name: str) -> Revoked:
        """Remove the user, every token of theirs and every session they hold."""
        check_name(name)
        sessions = [
            SESSION_PREFIX + str(sid)
            for sid in await self.redis.smembers(USER_SESSIONS_PREFIX + name)
        ]
        keys = [USERS, TOKENS, USER_TOKENS_PREFIX + name, USER_SESSIONS_PREFIX + name, *sessions]
        reply = await self._revoke(keys=keys, args=[name])
        existed, tokens, ended = (int(x) for x in reply)
        if not existed:
            raise UserError(f"no user named {name!r}")
        return Revoked(tokens=tokens, sessions=ended)

    async def by_token(self, token: str) -> str | None:
        """The user a token belongs to, or None."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        owner = await self.redis.hget(TOKENS, digest(token))
        return str(owner) if owner else None

    async def exists(self, name: str) -> bool:
        return bool(await self.redis.hexists(USERS, name))

    async def start_session(self, name: str, lifetime_s: int) -> str:
        """A new session of an existing user (UserError if there is none)."""
        raw = await self.redis.hget(USERS, name)
        if not raw:
            raise UserError(f"no user named {name!r}")
        serial = str(orjson.loads(raw)["serial"])
        session_id = secrets.token_urlsafe(24)
        async with self.backend.pipeline_for(USER_SESSIONS_PREFIX + name) as pipe:
            pipe.set(SESSION_PREFIX + session_id, f"{name} {serial}", ex=lifetime_s)
            pipe.sadd(USER_SESSIONS_PREFIX + name, session_id)
            pipe.expire(USER_SESSIONS_PREFIX + name, lifetime_s)
            await pipe.execute()
        return session_id

    async def by_session(self, session_id: str) -> str | None:
        """The user of a live session of an existing user, or None (one round trip)."""
        owner = await self._session(keys=[SESSION_PREFIX + session_id, USERS])
        return str(owner) if owner else None

    async def end_session(self, session_id: str) -> None:
        held = await self.redis.getdel(SESSION_PREFIX + session_id)
        if held:
            await self.redis.srem(USER_SESSIONS_PREFIX + str(held).split(" ")[0], session_id)
