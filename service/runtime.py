"""Everything a process needs to talk to Slipstream's streams, built once."""

from __future__ import annotations

from dataclasses import dataclass, field

from projections.views import ViewStore
from service.live import Hub
from slipstream.backend import Backend, redacted
from slipstream.config import Settings
from slipstream.keys import Keyspace
from slipstream.store import EventStore
from slipstream.supervise import Liveness


@dataclass
class Runtime:
    settings: Settings
    backend: Backend
    store: EventStore
    views: ViewStore
    hub: Hub
    roles: list[str] = field(default_factory=lambda: ["web"])
    redis_label: str = ""
    # Progress of every supervised loop in this process, for /healthz.
    liveness: Liveness = field(default_factory=Liveness)

    @classmethod
    def build(
        cls, settings: Settings, backend: Backend, *, roles: list[str] | None = None
    ) -> Runtime:
        keyspace = Keyspace(settings.partitions)
        liveness = Liveness()
        store = EventStore.from_settings(backend, settings)
        return cls(
            settings=settings,
            backend=backend,
            store=store,
            views=ViewStore(store, run_retention_s=settings.run_retention_s),
            hub=Hub(backend, keyspace, liveness=liveness),
            liveness=liveness,
            roles=roles or ["web"],
            redis_label=redacted(backend.url) if backend.url else "in-process fakeredis",
        )
