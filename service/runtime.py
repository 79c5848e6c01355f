"""Everything a process needs to talk to Slipstream's streams, built once."""

from __future__ import annotations

from dataclasses import dataclass, field

from consumers.llm import LLM, provider_from_settings
from projections.views import ViewStore
from service.auth import Authenticator
from service.limits import Limits
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
    auth: Authenticator
    limits: Limits
    roles: list[str] = field(default_factory=lambda: ["web"])
    redis_label: str = ""
    # Progress of every supervised loop in this process, for /healthz.
    liveness: Liveness = field(default_factory=Liveness)
    # The model the router's classifier asks: made on first use, since only an agents
    # file with `[router] classifier = true` needs one in a web process.
    _llm: LLM | None = None

    def llm(self) -> LLM:
        if self._llm is None:
            self._llm = provider_from_settings(self.settings)
        return self._llm

    async def close_llm(self) -> None:
        llm, self._llm = self._llm, None
        close = getattr(llm, "aclose", None)
        if close is not None:
            await close()

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
            auth=Authenticator(settings, backend),
            limits=Limits(settings, backend.client),
            liveness=liveness,
            roles=roles or ["web"],
            redis_label=redacted(backend.url) if backend.url else "in-process fakeredis",
        )
