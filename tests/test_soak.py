"""`python -m bench.soak --minutes 1 --json`: a minute of people at once, then checked.

The soak starts its own redis-server, web process, two workers and projector, and
six simulated people with a token each who ask, cancel and approve on threads
watched by two sockets each. The test reads its JSON report: nothing went wrong
(no unexpected HTTP answer, no socket dropped, nothing logged at ERROR), every
run ended, every stored view equals a rebuild from its stream, and each kind of
run happened often enough to mean something.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import orjson
import pytest

from tests.conftest import subprocess_env
from tests.processes import ROOT

pytestmark = pytest.mark.slow

BOUND_S = 150  # a minute of load, start-up, the drain and the checks, on a busy machine


@pytest.mark.timeout(BOUND_S + 30)
def test_a_one_minute_soak_ends_clean() -> None:
    command = [sys.executable, "-m", "bench.soak", "--minutes", "1", "--users", "6", "--json"]
    # A session of its own, so that a soak past its bound goes with every process it started.
    soak = subprocess.Popen(
        command,
        cwd=ROOT,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = soak.communicate(timeout=BOUND_S)
    except subprocess.TimeoutExpired:
        os.killpg(soak.pid, signal.SIGKILL)
        soak.communicate()
        raise AssertionError(f"the soak ran past {BOUND_S} s") from None
    assert soak.returncode == 0, err[-4000:]
    report = orjson.loads(out)  # stdout holds the JSON and nothing else
    assert report["passed"] is True
    assert report["errors"] == 0, report["error_samples"]
    assert report["unsettled"] == 0
    assert report["views_checked"] == report["threads"] > 10
    assert report["views_differ"] == []
    runs = report["runs"]
    assert set(runs) == {"completed", "cancelled"}, runs  # every run terminal, none failed
    actions = report["actions"]
    assert runs["completed"] >= 40, actions
    assert runs["cancelled"] >= 10 and actions["cancelled"] == runs["cancelled"], actions
    assert actions["approved"] >= 10, actions
    assert report["events"] > 5 * sum(runs.values())  # each run appends six events at least
    for name, row in report["latency_ms"].items():
        assert row["count"] > 0 and 0 < row["median"] <= row["p99"] <= row["max"], name
    assert set(report["rss_kib"]) == {"redis", "web", "worker 1", "worker 2", "projector"}
    for role, rss in report["rss_kib"].items():
        assert 0 < rss["start"] <= rss["peak"] and rss["end"] > 0, role
