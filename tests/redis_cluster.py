"""A real Redis Cluster for the tests: 3 masters and 3 replicas on loopback.

Started from `redis-server --cluster-enabled yes` and joined with
`redis-cli --cluster create`, as an operator would. Each node's cluster bus
listens on its port + 10000, so both ports are checked free, and the ports
stay below 55535 (tests/ports.py draws from 20000 up).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.crc import key_slot

from tests.ports import free_port

BUS_OFFSET = 10_000
NODE_TIMEOUT_MS = 2_000  # how long a master may be silent before its replica takes over


def _free_node_port() -> int:
    for _ in range(200):
        port = free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + BUS_OFFSET))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free with its cluster bus port")


@dataclass
class Node:
    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError("redis-server is not on PATH")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(NODE_TIMEOUT_MS),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
        )

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)

    def kill(self) -> None:
        """kill -9: the node vanishes mid-write, as a crashed host would."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
            self.process = None

    def pause(self) -> None:
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None:
            self.resume()
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None


@dataclass
class Cluster:
    """Six nodes; `url` is the `redis+cluster://` form Slipstream takes."""

    workdir: Path
    nodes: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        seeds = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[:3])
        return f"redis+cluster://{seeds}"

    def start(self, masters: int = 3, replicas: int = 1) -> None:
        count = masters * (1 + replicas)
        self.nodes = [Node(_free_node_port(), self.workdir / f"node{i}") for i in range(count)]
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            _wait_for_ping(node)
        create = [
            "redis-cli",
            "--cluster",
            "create",
            *[f"127.0.0.1:{node.port}" for node in self.nodes],
            "--cluster-replicas",
            str(replicas),
            "--cluster-yes",
        ]
        subprocess.run(create, check=True, capture_output=True, timeout=60)
        self.wait_healthy()

    def live_nodes(self) -> list[Node]:
        return [node for node in self.nodes if node.process is not None]

    def masters(self) -> list[Node]:
        """The live nodes that are masters now (a failover changes which)."""
        found = []
        for node in self.live_nodes():
            with node.client() as client:
                if client.execute_command("ROLE")[0] == "master":
                    found.append(node)
        return found

    def master_of(self, key: str) -> Node:
        """The live master that serves `key`'s slot now."""
        for node in self.live_nodes():
            with node.client() as client:
                slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
                for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                    if int(start) <= slot <= int(end):
                        port = int(master[1])
                        return next(n for n in self.nodes if n.port == port)
        raise RuntimeError("no live node answered")

    def replicas_of(self, master: Node) -> list[Node]:
        """The live nodes that replicate `master` now, each by its own account."""
        found = []
        for node in self.live_nodes():
            with node.client() as client:
                role = client.execute_command("ROLE")
            if role[0] == "slave" and int(role[2]) == master.port:
                found.append(node)
        return found

    def wait_healthy(self, within_s: float = 60) -> None:
        """Every live node says the cluster is ok and agrees on who serves each slot, and every
        live replica has its master's full copy (a WAIT for it can be answered)."""
        deadline = time.monotonic() + within_s
        while True:
            try:
                if self._healthy():
                    return
            except (redis.RedisError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the cluster did not become healthy")
            time.sleep(0.1)

    def _healthy(self) -> bool:
        layouts = set()
        for node in self.live_nodes():
            with node.client() as client:
                info = client.execute_command("CLUSTER", "INFO")
                if "cluster_state:ok" not in info:
                    return False
                slots = client.execute_command("CLUSTER", "SLOTS")
                layouts.add(tuple(sorted((int(s[0]), int(s[1]), int(s[2][1])) for s in slots)))
                if sum(int(s[1]) - int(s[0]) + 1 for s in slots) != 16384:
                    return False
        return len(layouts) == 1 and self._synced()

    def _synced(self) -> bool:
        """Every live replica has its master's full copy and acknowledges its writes.

        A replica's ROLE says "connected" once it has loaded the copy, but its master
        streams writes to it only after its first acknowledgement, up to a second
        later: until then a WAIT for it times out. So each master with replicas
        writes a probe key (of its own slots, gone in 2 s) and WAITs for them.
        """
        following: dict[int, int] = {}
        for node in self.live_nodes():
            with node.client() as client:
                role = client.execute_command("ROLE")
            if role[0] == "slave":
                if role[3] != "connected":
                    return False
                following[int(role[2])] = following.get(int(role[2]), 0) + 1
        for master_port, replicas in following.items():
            with redis.Redis(port=master_port, socket_timeout=2, decode_responses=True) as client:
                slots = client.execute_command("CLUSTER", "SLOTS")
                served = [(int(s[0]), int(s[1])) for s in slots if int(s[2][1]) == master_port]
                if not served:
                    return False
                pipe = client.pipeline(transaction=False)
                pipe.set(_key_in(served[0][0]), "probe", px=2000)
                pipe.execute_command("WAIT", replicas, 100)
                if int(pipe.execute()[-1]) < replicas:
                    return False
        return True

    def flush(self) -> None:
        for node in self.masters():
            with node.client() as client:
                client.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _key_in(slot: int) -> str:
    """A key of `slot`, for a write that must land on the node serving it."""
    for n in range(1_000_000):
        key = f"cluster-probe:{{{n}}}"
        if key_slot(key.encode()) == slot:
            return key
    raise RuntimeError(f"no key found for slot {slot}")


def _wait_for_ping(node: Node, within_s: float = 10) -> None:
    deadline = time.monotonic() + within_s
    while True:
        try:
            with node.client() as client:
                client.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline or node.process is None or node.process.poll():
                raise
            time.sleep(0.02)
