"""One log format for every process."""

from __future__ import annotations

import logging
import os


def setup(role: str) -> None:
    logging.basicConfig(
        level=os.environ.get("SLIPSTREAM_LOG_LEVEL", "INFO").upper(),
        format=f"%(asctime)s %(levelname)-7s {role} %(name)s: %(message)s",
    )
