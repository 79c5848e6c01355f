"""`python -m consumers status`: what the workers are doing, per partition, and on Redis
Cluster which node serves each partition (a partition is one slot: its hash tag's)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import ResponseError

from slipstream import partitions as recorded_partitions
from slipstream.backend import Backend, redacted
from slipstream.keys import WORKER_REGISTRY, WORKERS_GROUP, Keyspace, Partition

LIVE_WITHIN_MS = 15_000


@dataclass(frozen=True)
class PartitionStatus:
    number: int
    queued: int  # entries in the work stream
    pending: int  # delivered to a worker, not yet acked
    lag: int | None  # entries not yet delivered (None: Redis cannot tell)
    consumers: int
    timers: int
    next_timer_in_ms: int | None
    dead: int
    active_runs: int  # runs holding their agent's lane in a thread (one per thread and agent)
    master: str | None = None  # on a cluster: host:port of the master serving it


@dataclass(frozen=True)
class NodeStatus:
    """A node of a cluster, as CLUSTER NODES of one of them says."""

    address: str  # host:port
    role: str  # "master" or "replica"
    master: str | None  # a replica's master (host:port)
    partitions: tuple[int, ...]  # those it serves (a master) or holds a copy of (a replica)
    failing: bool  # flagged fail or fail? by the cluster


@dataclass(frozen=True)
class Status:
    workers: list[tuple[str, int]]  # name, ms since last seen
    partitions: list[PartitionStatus]
    redis: str = ""  # where: the URL (without its password), or in-process fakeredis
    nodes: list[NodeStatus] | None = None  # None: one Redis, which holds every partition
    recorded: int | None = None  # the partition count the deployment recorded


def cluster_nodes(layout: dict[str, dict[str, Any]], keyspace: Keyspace) -> list[NodeStatus]:
    """Each node of a CLUSTER NODES reply (as redis-py parses it) with its partitions:
    masters by the slots they serve, replicas by their master's; masters first."""
    ids = {str(node["node_id"]): address for address, node in layout.items()}
    slots = {part.number: key_slot(part.work.encode()) for part in keyspace.all()}
    served: dict[str, tuple[int, ...]] = {}
    for address, node in layout.items():
        # redis-py gives a range as [start, end], a single slot as [slot].
        ranges = [(int(entry[0]), int(entry[-1])) for entry in node.get("slots", [])]
        served[address] = tuple(
            number
            for number, slot in slots.items()
            if any(start <= slot <= end for start, end in ranges)
        )
    nodes = []
    for address, node in layout.items():
        flags = set(str(node["flags"]).split(","))
        master = ids.get(str(node.get("master_id", "-")))
        replica = "slave" in flags or "replica" in flags
        nodes.append(
            NodeStatus(
                address=address,
                role="replica" if replica else "master",
                master=master if replica else None,
                partitions=served.get(master or "", ()) if replica else served[address],
                failing=bool(flags & {"fail", "fail?"}),
            )
        )
    order = {"master": 0, "replica": 1}
    return sorted(nodes, key=lambda n: (order[n.role], n.master or n.address, n.address))


async def gather(backend: Backend, keyspace: Keyspace) -> Status:
    redis = backend.client
    now_ms = int(time.time() * 1000)
    seen = cast(
        list[tuple[str, float]],
        await redis.zrangebyscore(
            WORKER_REGISTRY, now_ms - LIVE_WITHIN_MS, "+inf", withscores=True
        ),
    )
    workers = [(str(name), now_ms - int(score)) for name, score in seen]
    nodes = None
    if backend.cluster:
        layout = await cast(RedisCluster, redis).cluster_nodes()
        nodes = cluster_nodes(cast(dict[str, dict[str, Any]], layout), keyspace)
    master_of = {
        number: node.address
        for node in nodes or []
        if node.role == "master"
        for number in node.partitions
    }
    partitions = []
    for part in keyspace.all():
        try:
            groups = await redis.xinfo_groups(part.work)
        except ResponseError:  # no such key yet
            groups = []
        group = next((g for g in groups if g["name"] == WORKERS_GROUP), None)
        async with redis.pipeline(transaction=False) as pipe:
            pipe.xlen(part.work)
            pipe.zcard(part.timers)
            pipe.zrange(part.timers, 0, 0, withscores=True)
            pipe.xlen(part.dead)
            pipe.hlen(part.active)
            queued, timers, head, dead, active = await pipe.execute()
        partitions.append(
            PartitionStatus(
                number=part.number,
                queued=int(queued),
                pending=int(group["pending"]) if group else 0,
                lag=group.get("lag") if group else 0,
                consumers=int(group["consumers"]) if group else 0,
                timers=int(timers),
                next_timer_in_ms=int(head[0][1]) - now_ms if head else None,
                dead=int(dead),
                active_runs=int(active),
                master=master_of.get(part.number),
            )
        )
    return Status(
        workers=workers,
        partitions=partitions,
        redis=redacted(backend.url) if backend.url else "in-process fakeredis",
        nodes=nodes,
        recorded=await recorded_partitions.recorded(redis),
    )


def _names(numbers: tuple[int, ...]) -> str:
    return " ".join(Partition(n).tag.strip("{}") for n in numbers) or "-"


def render_nodes(status: Status) -> list[str]:
    """Where the partitions are: on one Redis, all on it; on a cluster, per node."""
    count = len(status.partitions)
    recorded = (
        f"recorded as {status.recorded}" if status.recorded is not None else "none recorded yet"
    )
    lines = [f"partitions: {count} ({recorded})"]
    if status.nodes is None:
        lines.append(f"one Redis ({status.redis}): every partition is on it")
        return lines
    masters = [n for n in status.nodes if n.role == "master"]
    replicas = [n for n in status.nodes if n.role == "replica"]
    lines.append(
        f"Redis Cluster ({status.redis}): {len(masters)} masters, {len(replicas)} replicas"
    )
    width = max(len(n.address) for n in status.nodes)
    for node in status.nodes:
        role = "master" if node.master is None else f"replica of {node.master}"
        if node.failing:
            role += " (failing)"
        served = f"{len(node.partitions)} partitions: {_names(node.partitions)}"
        lines.append(f"  {node.address:<{width}}  {role:<{width + 11}}  {served}")
    unserved = [p.number for p in status.partitions if p.master is None]
    if unserved:
        lines.append(f"  no master serves {_names(tuple(unserved))} now (a failover?)")
    return lines


def render(status: Status) -> str:
    lines = [f"live workers: {len(status.workers)}"]
    lines += [f"  {name}  seen {ago / 1000:.1f}s ago" for name, ago in status.workers]
    lines.append("")
    lines += render_nodes(status)
    header = (
        "partition",
        "queued",
        "pending",
        "lag",
        "consumers",
        "timers",
        "next timer",
        "dead",
        "active runs",
    )
    on_cluster = status.nodes is not None
    lines.append("")
    lines.append("  ".join(f"{h:>12}" for h in header) + ("  master" if on_cluster else ""))
    for p in status.partitions:
        next_timer = "-" if p.next_timer_in_ms is None else f"{p.next_timer_in_ms / 1000:.1f}s"
        cells = (
            f"p{p.number:02d}",
            p.queued,
            p.pending,
            "?" if p.lag is None else p.lag,
            p.consumers,
            p.timers,
            next_timer,
            p.dead,
            p.active_runs,
        )
        where = f"  {p.master or '-'}" if on_cluster else ""
        lines.append("  ".join(f"{c!s:>12}" for c in cells) + where)
    totals = status.partitions
    lines.append(
        f"\ntotal: {sum(p.pending for p in totals)} runs held by workers, "
        f"{sum(p.lag or 0 for p in totals)} waiting for one, "
        f"{sum(p.timers for p in totals)} timers, {sum(p.dead for p in totals)} dead letters"
    )
    return "\n".join(lines)
