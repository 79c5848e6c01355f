"""The lag and pending gauges of a consumer group, per partition, read from Redis.

A worker reports the `workers` group of the work streams, a projector the
`projectors` group of the feeds: each process the group it belongs to, so a
process that is not there reports nothing stale. Several workers report the
same numbers; Grafana takes their `max`. One pass is one pipeline of
XINFO GROUPS and XLEN per partition (a cluster's client sends it to each node
in turn), every `EVERY_S`, and only in a process whose metrics are served.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from slipstream import metrics
from slipstream.backend import Backend
from slipstream.keys import Partition
from slipstream.supervise import Loop

EVERY_S = 5.0


class GroupLag:
    """Sets `slipstream_consumer_group_lag` and `_pending` of `group` on each partition's
    stream (`stream_of`); `deleted_when_done`: the group's consumers delete what they
    finished (the work streams), so when Redis cannot say the lag (entries deleted) it is
    the stream's length less what is pending."""

    def __init__(
        self,
        backend: Backend,
        partitions: list[Partition],
        group: str,
        stream_of: Callable[[Partition], str],
        *,
        deleted_when_done: bool = False,
    ) -> None:
        self.backend = backend
        self.partitions = partitions
        self.group = group
        self.stream_of = stream_of
        self.deleted_when_done = deleted_when_done

    def loop(self, log: logging.Logger) -> Loop:
        return Loop(
            f"metrics.lag.{self.group}",
            self.refresh,
            every_s=EVERY_S,
            stale_after_s=6 * EVERY_S,
            log=log,
        )

    async def refresh(self) -> None:
        """One pass: what a partition's reply holds is set, whatever the others' failed."""
        async with self.backend.client.pipeline(transaction=False) as pipe:
            for part in self.partitions:
                pipe.xinfo_groups(self.stream_of(part))
                pipe.xlen(self.stream_of(part))
            replies = await pipe.execute(raise_on_error=False)
        failed: Exception | None = None
        for i, part in enumerate(self.partitions):
            groups, length = replies[2 * i], replies[2 * i + 1]
            if isinstance(groups, Exception) or isinstance(length, Exception):
                if "no such key" not in str(groups).lower():
                    failed = failed or (groups if isinstance(groups, Exception) else length)
                continue  # no stream yet: nothing to report
            found = self._group(groups)
            if found is None:
                continue
            self._set(part, found, int(length))
        if failed is not None:
            raise failed  # the loop logs the outage once and tries again

    def _group(self, groups: list[dict[str, Any]]) -> dict[str, Any] | None:
        return next((g for g in groups if g.get("name") == self.group), None)

    def _set(self, part: Partition, group: dict[str, Any], length: int) -> None:
        label = part.tag.strip("{}")
        pending = int(group.get("pending") or 0)
        lag = group.get("lag")
        if lag is None:
            lag = max(0, length - pending) if self.deleted_when_done else float("nan")
        metrics.GROUP_LAG.labels(self.group, label).set(float(lag))
        metrics.GROUP_PENDING.labels(self.group, label).set(pending)
