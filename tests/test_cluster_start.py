"""Roles started while their cluster cannot be reached wait for it, and then work."""

from __future__ import annotations

from pathlib import Path

from tests.processes import env_for, processes, spawn, wait_for_log
from tests.redis_cluster import Cluster


def test_a_worker_started_while_no_node_answers_waits_and_then_works(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "cluster")
    cluster.start(masters=3, replicas=0)
    try:
        for node in cluster.nodes:  # every node down: not one seed answers
            node.stop()
        log = tmp_path / "worker.log"
        with processes() as running:
            worker = spawn("consumers", env_for(REDIS_URL=cluster.url), log)
            running.append(worker)
            # "Redis Cluster cannot be connected" is a fault to wait out, not a crash.
            wait_for_log(log, "cannot check the partition count with Redis yet", worker)
            for node in cluster.nodes:  # back, from their nodes.conf: the same cluster
                node.start()
            cluster.wait_healthy()
            wait_for_log(log, "Redis answers; partitions checked", worker)
            wait_for_log(log, "taking work from 4 partitions", worker)
            assert worker.poll() is None
    finally:
        cluster.stop()
