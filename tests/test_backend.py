"""What the Redis connection shows of itself."""

from __future__ import annotations

import pytest

from slipstream.backend import redacted


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        (
            "rediss://app:s3cret@cache/1?ssl_cert_reqs=none",
            "rediss://app:***@cache/1?ssl_cert_reqs=none",
        ),
    ],
)
def test_a_redis_password_never_reaches_a_log_line(url: str, shown: str) -> None:
    assert redacted(url) == shown
