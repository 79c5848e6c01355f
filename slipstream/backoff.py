"""Retry delays: exponential back-off with jitter, as a pure function."""

from __future__ import annotations

import random


def compute_backoff(
    failures: int,
    *,
    base_ms: int = 500,
    factor: float = 2.0,
    max_ms: int = 30_000,
    rng: random.Random | None = None,
) -> int:
    """Delay before the attempt that follows `failures` failures (1 → about `base_ms`).

    Equal jitter: half the exponential delay is kept, the other half drawn at
    random, so retries of many runs spread out yet none retries at once.
    """
    if failures < 1:
        raise ValueError(f"failures must be at least 1, not {failures}")
    ceiling = min(max_ms, base_ms * factor ** (failures - 1))
    draw = (rng or random).random()
    return int(ceiling / 2 + draw * ceiling / 2)
