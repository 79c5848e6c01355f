"""The projector on Redis Cluster, where new entries are read in one MULTI per partition."""

from __future__ import annotations

import pytest
from redis.exceptions import ResponseError

from projections.projector import Projector
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.keys import PROJECTORS_GROUP, Keyspace
from slipstream.store import EventStore
from tests.test_projector_faults import feed_threads, thread_in, trim_past, view_title


async def test_a_gap_read_before_another_partition_failed_is_still_folded(
    cluster_url: str, settings: Settings
) -> None:
    """One pass reads partition after partition, each in its own MULTI. A partition read
    across a trimmed gap has moved its group past the gap, so the gap is seen then or
    never: a later partition's failing read in the same pass must not lose it."""
    backend = Backend.connect(cluster_url)
    try:
        store = EventStore(backend, Keyspace(settings.partitions), feed_maxlen=10)
        projector = Projector(backend, store, "p1")
        await projector.run_once()  # nothing yet: its first pass is behind it
        gapped, failing = projector.partitions[0], projector.partitions[-1]
        lost = await thread_in(store, gapped, "lost")
        await trim_past(store, gapped, 300)
        assert lost not in await feed_threads(store, gapped)  # trimmed before it was folded
        await backend.client.xgroup_destroy(failing.feed, PROJECTORS_GROUP)

        with pytest.raises(ResponseError, match="NOGROUP"):
            await projector._fold_pass()  # read the gapped partition, then failed
        await projector.setup()  # as the fold loop does after NOGROUP
        await projector.run_once()

        assert await view_title(store, lost) == "lost"
        assert projector.stats["gaps"] == 1
    finally:
        await backend.close()
