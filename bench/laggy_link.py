"""A TCP proxy in front of a Redis master, for bench.failover: a network with some lag.

On one host, kill -9 of a master loses nothing its replica was sent: the
kernel still delivers what the process wrote before it died. A crashed host
or a cut network loses what was in flight, and what is in flight is the
replication lag. This proxy makes that lag: the master announces the proxy's
port (cluster-announce-port), so its replica and its clients reach it
through here; bytes from the master to a connection that has said REPLCONF
(its replica's link) are held `lag_ms` before they go on, every other
connection passes at once. `crash()` drops whatever is held and resets every
connection, as the host's death would.

It runs on an event loop of its own, in a thread, so the writers measured
do not slow it, nor it them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Coroutine
from typing import Any

from tests.redis_cluster import BUS_OFFSET, Cluster, Node

READ = 65_536


class LaggyLink:
    def __init__(self, target_port: int, lag_ms: int) -> None:
        self.target_port = target_port
        self.lag_s = lag_ms / 1000
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.Server | None = None
        self.transports: list[asyncio.Transport] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    def start(self) -> int:
        """Listen on a free loopback port; returns it."""
        self.thread.start()
        self.port = self._run(self._listen())
        return self.port

    def crash(self) -> None:
        """Drop what is held and reset every connection; accept no more."""
        self._run(self._crash())

    def stop(self) -> None:
        if self.thread.is_alive():
            with contextlib.suppress(Exception):
                self._run(self._crash())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
        if not self.thread.is_alive() and not self.loop.is_closed():
            self.loop.close()

    def _run(self, work: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(10)

    async def _listen(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        sockets = self.server.sockets
        return int(sockets[0].getsockname()[1])

    async def _crash(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
        for transport in self.transports:
            transport.abort()  # a reset: nothing held or buffered goes out

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        for made in (writer, up_writer):
            made.transport.get_extra_info("socket").setsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
            )
            self.transports.append(made.transport)  # type: ignore[arg-type]
        replica = asyncio.Event()
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        for work in (
            self._upstream(reader, up_writer, replica),
            self._downstream(up_reader, writer, replica, held),
            self._release(writer, held),
        ):
            task = asyncio.create_task(work)
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _upstream(
        self, reader: asyncio.StreamReader, up: asyncio.StreamWriter, replica: asyncio.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(READ):
                if b"REPLCONF" in data.upper():
                    replica.set()
                up.write(data)
                await up.drain()
        up.close()

    async def _downstream(
        self,
        up: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        replica: asyncio.Event,
        held: asyncio.Queue[tuple[float, bytes]],
    ) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError):
            while data := await up.read(READ):
                if replica.is_set() or not held.empty():
                    held.put_nowait((loop.time() + self.lag_s, data))
                else:
                    writer.write(data)
                    await writer.drain()
        held.put_nowait((loop.time() + self.lag_s, b""))

    async def _release(
        self, writer: asyncio.StreamWriter, held: asyncio.Queue[tuple[float, bytes]]
    ) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError):
            while True:
                due, data = await held.get()
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())  # the link's lag itself
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        writer.close()


def lag_replica_link(cluster: Cluster, master: Node, lag_ms: int) -> LaggyLink:
    """Put a link of `lag_ms` between `master` and its replica: the master announces the
    link's port, and its replica (and every client that asks the cluster) reaches it there.
    Returns once the replica follows it through the link."""
    replica = cluster.replicas_of(master)[0]
    link = LaggyLink(master.port, lag_ms)
    port = link.start()
    with master.client() as client:
        client.config_set("cluster-announce-bus-port", master.port + BUS_OFFSET)
        client.config_set("cluster-announce-port", port)
    deadline = time.monotonic() + 30
    while True:  # the replica hears of the new address by gossip, and reconnects through it
        with replica.client() as client:
            role = client.execute_command("ROLE")
        if int(role[2]) == port and role[3] == "connected":
            break
        if time.monotonic() > deadline:
            link.stop()
            raise TimeoutError("the replica did not move to the lagging link")
        time.sleep(0.05)
    cluster.wait_healthy()
    return link
