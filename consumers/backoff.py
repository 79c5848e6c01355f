"""Retry delays for runs: the core's back-off, under the name the runner imports."""

from slipstream.backoff import compute_backoff

__all__ = ["compute_backoff"]
