"""What the Redis connection shows of itself."""

from __future__ import annotations

import re
from typing import Any

import pytest
from redis.crc import key_slot

from consumers.status import cluster_nodes
from slipstream.backend import ClusterURL, redacted
from slipstream.config import Settings
from slipstream.errors import ConfigError
from slipstream.keys import Keyspace


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


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis+cluster://a:7000,b:7001", "redis+cluster://a:7000,b:7001"),
        ("redis+cluster://:s3cret@a:7000,b:7001", "redis+cluster://:***@a:7000,b:7001"),
        ("rediss+cluster://app:p@ss@a:7000/", "rediss+cluster://app:***@a:7000/"),
    ],
)
def test_a_cluster_password_never_reaches_a_log_line(url: str, shown: str) -> None:
    assert redacted(url) == shown


def test_a_cluster_url_names_its_seeds_credentials_and_tls_options() -> None:
    parsed = ClusterURL.parse(
        "rediss+cluster://app:p%40ss@10.0.0.1:7000,[::1]:7001/?ssl_ca_certs=/etc/ca.pem"
    )
    assert parsed.seeds == (("10.0.0.1", 7000), ("::1", 7001))
    assert (parsed.username, parsed.password, parsed.tls) == ("app", "p@ss", True)
    assert parsed.options == {"ssl_ca_certs": "/etc/ca.pem"}
    assert ClusterURL.parse("redis+cluster://h:1").tls is False


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("redis+cluster://h:7000/0", "names no database"),
        ("redis+cluster://h:7000?db=1", "unknown cluster URL option(s) db"),
        ("redis+cluster://h", "'h' is not host:port"),
        ("redis+cluster://", "at least one host:port"),
    ],
)
def test_a_bad_cluster_url_is_a_one_line_configuration_error(url: str, error: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(error)):
        Settings.from_env({"REDIS_URL": url})


def test_status_reads_a_master_serving_a_single_slot() -> None:
    keyspace = Keyspace(16)
    slot = key_slot(keyspace.all()[3].work.encode())
    layout: dict[str, dict[str, Any]] = {
        "127.0.0.1:7000": {
            "node_id": "a",
            "flags": "master",
            "master_id": "-",
            "slots": [["0", str(slot - 1)]],
        },
        "127.0.0.1:7001": {
            "node_id": "b",
            "flags": "myself,master",
            "master_id": "-",
            "slots": [[str(slot)]],
        },
        "127.0.0.1:7002": {"node_id": "c", "flags": "slave", "master_id": "b", "slots": []},
    }
    nodes = {node.address: node for node in cluster_nodes(layout, keyspace)}
    assert nodes["127.0.0.1:7001"].partitions == (3,)
    assert nodes["127.0.0.1:7002"].partitions == (3,)
    assert nodes["127.0.0.1:7002"].master == "127.0.0.1:7001"
