"""`python -m tests.stuck_role`: a role that never stops when asked, for the grace test.

Every real role stops within seconds, even on a paused Redis; this one ignores
`stop`, so the forced exit after the grace period can be seen.
"""

from __future__ import annotations

import asyncio
import logging

from slipstream import logs, process


async def ignores_stop(stop: asyncio.Event) -> None:
    logging.getLogger("slipstream.stuck").info("stuck role running")
    await asyncio.Event().wait()


if __name__ == "__main__":
    logs.setup("worker")
    process.on_signals("worker")
    asyncio.run(process.until_signalled(ignores_stop))
