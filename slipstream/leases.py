"""Run leases: who owns a run now, proven by a fencing token."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from importlib import resources
from typing import Literal

from slipstream.backend import Backend
from slipstream.keys import Keyspace, Partition


def _lua(name: str) -> str:
    return resources.files("slipstream").joinpath(f"lua/{name}").read_text()


@dataclass(frozen=True)
class Claim:
    outcome: Literal["OK", "NORUN", "FINISHED", "BUSY", "DUPLICATE"]
    token: int = 0
    attempt: int = 0
    cancel_requested: bool = False
    failures: int = 0
    detail: str = ""
    agent: str = ""
    since: str = ""  # stream id where the run's own events begin


class Leases:
    def __init__(self, backend: Backend, keyspace: Keyspace, *, lease_ms: int) -> None:
        self.redis = backend.client
        self.keys = keyspace
        self.lease_ms = lease_ms
        self._claim = self.redis.register_script(_lua("claim.lua"))
        self._renew = self.redis.register_script(_lua("renew.lua"))

    def _partition(self, thread_id: str) -> Partition:
        return self.keys.partition(thread_id)

    async def claim(self, run_id: str, thread_id: str, worker: str, entry_id: str = "") -> Claim:
        # A fresh id per call, so the script tells a resend of this call (the
        # same id) from a later claim by the same worker (a takeover, which counts).
        claim_id = secrets.token_hex(8)
        reply = await self._claim(
            keys=[self._partition(thread_id).run(run_id)],
            args=[worker, self.lease_ms, entry_id, claim_id],
        )
        outcome = str(reply[0])
        if outcome == "OK":
            return Claim(
                "OK",
                int(reply[1]),
                int(reply[2]),
                str(reply[3]) == "1",
                int(reply[4]),
                agent=str(reply[5]),
                since=str(reply[6]),
            )
        if outcome == "FINISHED":
            return Claim("FINISHED", detail=str(reply[1]))
        if outcome == "DUPLICATE":
            return Claim("DUPLICATE")
        if outcome == "BUSY":
            return Claim("BUSY", detail=f"{reply[1]} holds it for {reply[2]} ms more")
        return Claim("NORUN")

    async def renew(
        self, run_id: str, thread_id: str, token: int, worker: str, entry_id: str
    ) -> tuple[bool, bool]:
        """Returns (still ours, cancel requested)."""
        part = self._partition(thread_id)
        reply = await self._renew(
            keys=[part.run(run_id), part.work], args=[token, self.lease_ms, worker, entry_id]
        )
        return bool(int(reply[0])), str(reply[1]) == "1"
