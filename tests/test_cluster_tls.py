"""Redis Cluster over TLS (`rediss+cluster://`): the connections Slipstream makes to one
node itself (a partition's MULTI, a blocking reader) speak TLS as the cluster client does."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from slipstream.backend import Backend
from slipstream.keys import Partition
from tests.redis_cluster import _free_node_port


@pytest.fixture
def tls_cluster_url(tmp_path: Path) -> Iterator[str]:
    """One TLS-only master serving every slot: the smallest cluster there is."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not on PATH: no certificate for a TLS node")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    port = _free_node_port()
    server = subprocess.Popen(
        [
            *("redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"),
            *("--tls-cert-file", str(cert), "--tls-key-file", str(key)),
            *("--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no", "--tls-cluster", "yes"),
            *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
            *("--save", "", "--appendonly", "no", "--dir", str(tmp_path)),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        with redis.Redis(
            host="127.0.0.1",
            port=port,
            ssl=True,
            ssl_ca_certs=str(cert),
            socket_timeout=2,
            decode_responses=True,
        ) as node:
            deadline = time.monotonic() + 10
            while True:
                try:
                    node.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            while "cluster_state:ok" not in node.execute_command("CLUSTER", "INFO"):
                if time.monotonic() > deadline:
                    raise TimeoutError("the TLS cluster did not come up")
                time.sleep(0.05)
        yield f"rediss+cluster://127.0.0.1:{port}?ssl_ca_certs={cert}"
    finally:
        server.terminate()
        server.wait(10)


async def test_a_partitions_multi_and_reader_speak_tls(tls_cluster_url: str) -> None:
    backend = Backend.connect(tls_cluster_url)
    part = Partition(3)
    try:
        await backend.client.xadd(part.feed, {"n": "1"})  # the cluster client: TLS already
        async with backend.pipeline_for(part.feed) as pipe:
            pipe.xlen(part.feed)
            pipe.xadd(part.feed, {"n": "2"})
            length, _ = await pipe.execute()
        assert length == 1
        reader = await backend.reader_for(part.feed)
        try:
            reply = await backend.xread(reader, {part.feed: "0-0"}, count=10, block_ms=100)
        finally:
            await backend.release(reader)
        assert [fields["n"] for _, entries in reply for _, fields in entries] == ["1", "2"]
    finally:
        await backend.close()
