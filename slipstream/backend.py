"""Connections to Redis, real or in-process.

redis-py's defaults do not suit a stream consumer: a blocking read longer
than the socket timeout is retried, a full pool raises, and a timed-out
command is retried ten times, so a paused Redis holds a caller for a minute.
So commands use a `BlockingConnectionPool` with short timeouts (a paused or
unreachable Redis is an error within about a second, which callers turn into
a 503 or a retried pass) and one retry, on a dropped connection only: a
command that timed out may have run, and is not sent twice. Each blocking
reader gets a client of its own with no socket timeout (a read must not time
out while Redis is merely idle; and redis-py 8 can leave a read with a socket
timeout hanging when it is cancelled) and TCP keep-alive, so a peer that
vanished without a reset is still noticed.

On Redis Cluster (`redis+cluster://` or `rediss+cluster://`, see
`cluster_nodes`) the client is redis-py's cluster client, which routes each
command by its key's slot and follows MOVED and ASK. Every key of a partition
shares one hash tag, so a script or transaction of one partition runs on one
node; what spans partitions (pipelines of reads) is split by the client.

In-process fakeredis cannot block on streams the way Redis does, so there
readers poll without blocking and wait on a `Notifier` that every append
pokes: the same code paths, without a sleep loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qsl, unquote

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import AskError, ExecAbortError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

Entry = tuple[str, dict[str, str]]

# The default of SLIPSTREAM_REDIS_TIMEOUT_MS: a paused or unreachable Redis must
# turn into an answer (503) within a second.
COMMAND_TIMEOUT_S = 0.75
# How long a command may wait for a free connection: each busy one frees itself
# within the command timeout even when Redis hangs, so this is rarely reached.
POOL_WAIT_S = 1.0


def _keepalive() -> dict[int, int]:
    """Probe an idle reader's peer after 5 s, every 2 s, 3 times: a Redis host that
    vanished without a reset is noticed in about 11 s instead of the kernel's 2 hours."""
    options = {}
    for name, value in (("TCP_KEEPIDLE", 5), ("TCP_KEEPINTVL", 2), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            options[getattr(socket, name)] = value
    return options


CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}  # scheme -> TLS
# What a cluster URL's query may set: TLS files and checks, as redis-py names them.
CLUSTER_OPTIONS = frozenset({"ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs"})


# How a blocking reader connects: no socket timeout (a read must not time out
# while Redis is merely idle; and redis-py 8 can leave a read with a socket
# timeout hanging when it is cancelled), TCP keep-alive, one connection, no retry.
_BLOCKING_READER: dict[str, Any] = {
    "decode_responses": True,
    "socket_timeout": None,
    "socket_keepalive": True,
    "socket_keepalive_options": _keepalive(),
    "socket_connect_timeout": COMMAND_TIMEOUT_S,
    "single_connection_client": True,
    "retry": Retry(NoBackoff(), 0),
}
# At most one layout refresh this often, however many readers failed.
LAYOUT_REFRESH_S = 0.5


def redacted(url: str) -> str:
    """The URL without its password, for logs and health answers."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, hosts = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{hosts}"


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


@dataclass(frozen=True)
class ClusterURL:
    """`redis+cluster://[user:password@]host:port[,host:port...][?option=value...]`.

    The hosts are seeds: the client asks them for the cluster's layout and finds
    the other nodes itself, so one live seed is enough, and more survive the loss
    of some. `rediss+cluster://` speaks TLS to every node.
    """

    seeds: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    tls: bool
    options: dict[str, str]

    @classmethod
    def parse(cls, url: str) -> ClusterURL:
        scheme, _, rest = url.partition("://")
        if scheme.lower() not in CLUSTER_SCHEMES:
            raise ValueError(f"not a cluster URL (redis+cluster:// or rediss+cluster://): {scheme}")
        rest, _, query = rest.partition("?")
        rest = rest.rstrip("/")
        if "/" in rest:
            raise ValueError("a cluster URL names no database: Redis Cluster has only db 0")
        userinfo, at, hosts = rest.rpartition("@")
        username = password = None
        if at:
            user, colon, secret = userinfo.partition(":")
            username = unquote(user) or None
            password = unquote(secret) if colon else None
        seeds = tuple(_host_port(seed) for seed in hosts.split(",") if seed)
        if not seeds:
            raise ValueError("a cluster URL needs at least one host:port")
        options = dict(parse_qsl(query))
        unknown = sorted(set(options) - CLUSTER_OPTIONS)
        if unknown:
            raise ValueError(
                f"unknown cluster URL option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(CLUSTER_OPTIONS))}"
            )
        return cls(seeds, username, password, CLUSTER_SCHEMES[scheme.lower()], options)


def _host_port(seed: str) -> tuple[str, int]:
    host, colon, port = seed.rpartition(":")
    if not colon or not port.isdigit() or not host:
        raise ValueError(f"cluster seed {seed!r} is not host:port")
    return host.strip("[]"), int(port)


def cluster_client(url: str, **options: Any) -> aioredis.Redis:
    """redis-py's cluster client for a `redis+cluster://` URL.

    Typed as the plain client: it offers the same command API, which is all
    Slipstream uses (pipelines, scripts, transactions of one slot, sharded pub/sub).
    """
    parsed = ClusterURL.parse(url)
    settings: dict[str, Any] = {**parsed.options, **options}
    client = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in parsed.seeds],
        username=parsed.username,
        password=parsed.password,
        ssl=parsed.tls,
        decode_responses=True,
        # A failover or a resharding is seen as refused connections, CLUSTERDOWN
        # or MOVED for a second or so: a few spaced retries ride most of it out,
        # and what lasts longer is a fault the caller's loop already survives.
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
        **settings,
    )
    return cast(aioredis.Redis, client)


def _one_reconnect() -> Retry:
    # A connection killed while idle in the pool fails its next command: one
    # fresh connection answers it. Timeouts are not retried (the command may have run).
    return Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


StreamReply = list[tuple[str, list[Entry]]]


def as_stream_reply(reply: Any) -> StreamReply:
    """XREAD/XREADGROUP replies as decoded strings (RESP2, decode_responses=True)."""
    return cast(StreamReply, list(reply or []))


def as_entries(reply: Any) -> list[Entry]:
    """XRANGE replies; entries whose fields were deleted are dropped."""
    return [(entry_id, fields) for entry_id, fields in cast(list[Entry], reply or []) if fields]


async def stream_pages(
    redis: aioredis.Redis, key: str, *, count: int, start: str = "-", end: str = "+"
) -> AsyncIterator[list[Entry]]:
    """XRANGE of `key` from `start` to `end` (inclusive ids, or `(id` exclusive), a page
    of `count` at a time: one XRANGE of a long stream would outlast the command timeout,
    and its reply's parsing would hold up the event loop. For a stream that only grows
    at its end (a thread's), so no entry is skipped between pages."""
    while True:
        page = cast(list[Entry], await redis.xrange(key, start, end, count=count))
        entries = as_entries(page)
        if entries:
            yield entries
        if len(page) < count:  # the reply's own length: as_entries may drop some
            return
        start = f"({page[-1][0]}"


class Notifier:
    """Wakes in-process readers when something was appended."""

    def __init__(self) -> None:
        self._generation = 0
        self._changed = asyncio.Event()

    @property
    def generation(self) -> int:
        return self._generation

    def notify(self) -> None:
        self._generation += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_after(self, generation: int, seconds: float) -> None:
        """Return once something was appended after `generation`, or on timeout."""
        if self._generation != generation:
            return
        changed = self._changed
        # asyncio.timeout, not wait_for: on 3.11 wait_for can lose a cancellation
        # that arrives together with the event.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await changed.wait()


@dataclass
class Backend:
    """A command client plus a way to make blocking readers."""

    client: aioredis.Redis
    url: str | None
    fake_server: Any = None
    notifier: Notifier | None = None
    timeout_s: float = COMMAND_TIMEOUT_S
    # Connections per node of `pipeline_for` on a cluster: as many as one Redis's pool, since
    # every promised append goes that way (slipstream/replicas.py). A pool much smaller than
    # the callers starves some: a caller that frees a connection takes it again at once.
    node_connections: int = 64
    _readers: list[aioredis.Redis] = field(default_factory=list)
    _nodes: dict[str, aioredis.Redis] = field(default_factory=dict)
    _refreshed_at: float = float("-inf")

    @property
    def can_block(self) -> bool:
        return self.fake_server is None

    @property
    def cluster(self) -> bool:
        """On Redis Cluster: no command may name keys of two partitions."""
        return self.url is not None and is_cluster_url(self.url)

    @classmethod
    def connect(
        cls, url: str, *, max_connections: int = 64, timeout_s: float = COMMAND_TIMEOUT_S
    ) -> Backend:
        if is_cluster_url(url):
            client = cluster_client(
                url,
                # Per node; a cluster client raises, rather than waits, when all are busy.
                max_connections=max_connections * 4,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                health_check_interval=30,
            )
            return cls(
                client=client, url=url, timeout_s=timeout_s, node_connections=max_connections
            )
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=POOL_WAIT_S,
            decode_responses=True,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=30,
            retry=_one_reconnect(),
        )
        return cls(client=aioredis.Redis.from_pool(pool), url=url, timeout_s=timeout_s)

    @classmethod
    def in_process(cls) -> Backend:
        import fakeredis

        server = fakeredis.FakeServer()
        client = fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
        return cls(client=client, url=None, fake_server=server, notifier=Notifier())

    def reader(self) -> aioredis.Redis:
        """A client of its own for one blocking reader."""
        if self.fake_server is not None:
            return self.client
        if self.cluster:
            # A cluster client of its own, for blocking reads of any partitions (each
            # holds one connection); one partition's reader is cheaper: `reader_for`.
            reader = cluster_client(
                self.url or "",
                socket_timeout=None,
                socket_keepalive=True,
                socket_keepalive_options=_keepalive(),
                socket_connect_timeout=COMMAND_TIMEOUT_S,
            )
            self._readers.append(reader)
            return reader
        reader = aioredis.Redis.from_url(self.url or "", **_BLOCKING_READER)
        self._readers.append(reader)
        return reader

    async def reader_for(self, key: str) -> aioredis.Redis:
        """A client of its own for one blocking reader of `key`'s partition.

        On a cluster: one plain connection to the master that serves the slot
        now. Not a cluster client: each of those costs a layout discovery (tens
        of ms) and a pool per node, and asks the server for XREAD's keys before
        every read. If the slot moves or the node fails, the read fails; the
        reader is released as failed, which refreshes the layout, and the next
        one goes to the new master.
        """
        if not self.cluster:
            return self.reader()
        cluster = cast(RedisCluster, self.client)
        if not cluster.get_nodes():
            await cluster.initialize()
        node = cluster.get_node_from_key(key)
        if node is None:
            raise RedisConnectionError(f"no node of the cluster serves {key} now")
        reader = aioredis.Redis(
            host=node.host,
            port=int(node.port),
            **_BLOCKING_READER,
            **_node_credentials(cluster, pool=False),
        )
        self._readers.append(reader)
        return reader

    async def release(self, reader: aioredis.Redis, *, failed: bool = False) -> None:
        """Close a reader made by `reader()` or `reader_for()`; `failed`: after a fault."""
        if reader is self.client:
            return
        if reader in self._readers:
            self._readers.remove(reader)
        await reader.aclose()
        if failed and self.cluster:
            await self._refresh_layout()  # the slot may have moved, or its master failed

    def appended(self) -> None:
        if self.notifier is not None:
            self.notifier.notify()

    async def xread(
        self, reader: aioredis.Redis, streams: dict[str, str], *, count: int, block_ms: int
    ) -> StreamReply:
        ids = cast(Any, streams)
        if self.notifier is None:
            return as_stream_reply(await reader.xread(ids, count=count, block=block_ms or None))
        generation = self.notifier.generation
        reply = as_stream_reply(await reader.xread(ids, count=count))
        if not _has_entries(reply) and block_ms:
            await self.notifier.wait_after(generation, block_ms / 1000)
            reply = as_stream_reply(await reader.xread(ids, count=count))
        return reply

    async def xreadgroup(
        self,
        reader: aioredis.Redis,
        group: str,
        consumer: str,
        streams: dict[str, str],
        *,
        count: int,
        block_ms: int,
    ) -> StreamReply:
        ids = cast(Any, streams)
        if self.notifier is None:
            return as_stream_reply(
                await reader.xreadgroup(group, consumer, ids, count=count, block=block_ms or None)
            )
        generation = self.notifier.generation
        reply = as_stream_reply(await reader.xreadgroup(group, consumer, ids, count=count))
        if not _has_entries(reply) and block_ms:
            await self.notifier.wait_after(generation, block_ms / 1000)
            reply = as_stream_reply(await reader.xreadgroup(group, consumer, ids, count=count))
        return reply

    @contextlib.asynccontextmanager
    async def pipeline_for(self, key: str, *, transaction: bool = True) -> AsyncIterator[Pipeline]:
        """A pipeline on one connection to the node that holds `key`: MULTI/EXEC by default.

        Every key it names must share `key`'s partition. On one Redis this is the
        client's own pipeline. On a cluster it runs on a plain connection to the
        slot's master rather than through the cluster client, whose transactions
        resolve each queued command's slot on a thread of their own, blocking the
        event loop meanwhile; and it keeps commands such as WAIT on the connection
        that wrote. A redirection (the slot moved) or a lost node refreshes the
        cluster's layout, so the caller's next try goes to the right node; so does a
        timeout (a hung master whose replica took over).
        """
        if not self.cluster:
            async with self.client.pipeline(transaction=transaction) as pipe:
                yield pipe
            return
        node = await self._node_client(key)
        try:
            async with node.pipeline(transaction=transaction) as pipe:
                yield pipe
        except (ResponseError, ExecAbortError, RedisConnectionError, RedisTimeoutError) as exc:
            # A timeout too: a hung master keeps its connections, and once its replica
            # has taken over only a fresh layout stops sending the partition's MULTIs there.
            if isinstance(exc, RedisConnectionError | RedisTimeoutError) or _redirected(exc):
                await self._refresh_layout()
            raise

    async def _node_client(self, key: str) -> aioredis.Redis:
        cluster = cast(RedisCluster, self.client)
        if not cluster.get_nodes():
            await cluster.initialize()
        node = cluster.get_node_from_key(key)
        if node is None:
            raise RedisConnectionError(f"no node of the cluster serves {key} now")
        client = self._nodes.get(node.name)
        if client is None:
            pool = aioredis.BlockingConnectionPool(
                host=node.host,
                port=node.port,
                max_connections=self.node_connections,
                timeout=POOL_WAIT_S,
                decode_responses=True,
                socket_timeout=self.timeout_s,
                socket_connect_timeout=self.timeout_s,
                health_check_interval=30,
                retry=_one_reconnect(),
                **_node_credentials(cluster, pool=True),
            )
            client = self._nodes[node.name] = aioredis.Redis.from_pool(pool)
        return client

    async def _refresh_layout(self) -> None:
        # Every reader of a failed node fails at once: one refresh serves them all.
        now = time.monotonic()
        if now - self._refreshed_at < LAYOUT_REFRESH_S:
            return
        self._refreshed_at = now
        cluster = cast(RedisCluster, self.client)
        with contextlib.suppress(Exception):  # the next command tries again anyway
            await cluster.nodes_manager.initialize()

    async def close(self) -> None:
        for reader in self._readers:
            await reader.aclose()
        self._readers.clear()
        for node in self._nodes.values():
            await node.aclose()
        self._nodes.clear()
        await self.client.aclose()


def _redirected(exc: Exception) -> bool:
    """MOVED or ASK (redis-py raises them as AskError, whose text drops the word),
    or a MULTI aborted by one."""
    return isinstance(exc, AskError | ExecAbortError) or "MOVED" in str(exc)


def _node_credentials(cluster: RedisCluster, *, pool: bool) -> dict[str, Any]:
    """What the cluster client connects to its nodes with: user, password, TLS.

    The cluster client keeps TLS as its connection class (it has no `ssl` option):
    a connection pool takes that class (`pool`), a client takes `ssl=True`; either
    with the cluster client's ssl_* options.
    """
    kwargs = cluster.nodes_manager.connection_kwargs
    found = {name: kwargs[name] for name in ("username", "password") if kwargs.get(name)}
    connection_class = kwargs.get("connection_class")
    if isinstance(connection_class, type) and issubclass(connection_class, SSLConnection):
        found.update(
            (name, value)
            for name, value in kwargs.items()
            if name.startswith("ssl_") and value is not None
        )
        found.update({"connection_class": connection_class} if pool else {"ssl": True})
    return found


def _has_entries(reply: StreamReply) -> bool:
    return any(entries for _, entries in reply)
