"""A worker killed with kill -9 after a tool's result: the tool ran once, the answer is whole.

Real processes on a real Redis (web, projector, workers), a short lease, and a
tool (tests/counting_tools.py) that writes a line to a file each time it runs.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_run_faults import Cluster, pid_of, wait_for

pytestmark = pytest.mark.slow

AGENTS = """\
[router]
default = "counter"

[[agents]]
name = "counter"
description = "Counts, with a tool."
system = "You count."
tools = ["tally"]
"""

ASK = '[[tool tally {"label": "sheep"}]] How many sheep?'


@pytest.fixture
def cluster(redis_url: str, tmp_path: Path) -> Iterator[Cluster]:
    agents = tmp_path / "agents.toml"
    agents.write_text(AGENTS)
    made = Cluster(
        redis_url,
        tmp_path,
        SLIPSTREAM_AGENTS=str(agents),
        SLIPSTREAM_TOOLS="tests.counting_tools",
        COUNTING_TOOL_FILE=str(tmp_path / "tally.log"),
    )
    try:
        yield made
    finally:
        made.close()


def test_kill_9_after_a_tool_result_runs_the_tool_once_and_writes_the_answer_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.start(workers=1)
    # The reference: the same question answered with no fault.
    reference_thread = cluster.thread()
    reference_run = cluster.ask(reference_thread, ASK)
    cluster.wait_runs_over([reference_thread], 1, within=60)
    reference = cluster.view(reference_thread)
    reference_reply = reference["runs"][reference_run]["reply_id"]
    expected = next(m for m in reference["messages"] if m["id"] == reference_reply)["content"]
    assert expected.startswith('tally returned "tallied sheep".')
    tally = tmp_path / "tally.log"
    assert len(tally.read_text().splitlines()) == 1

    thread_id = cluster.thread()
    run_id = cluster.ask(thread_id, ASK)

    def after_the_result() -> str | None:
        events = cluster.events(thread_id)
        result = next((i for i, e in enumerate(events) if e["type"] == "tool.result"), None)
        if result is None or not any(e["type"] == "message.delta" for e in events[result:]):
            return None
        worker: str = next(e["worker"] for e in events if e["type"] == "run.started")
        return worker

    victim = wait_for(after_the_result)
    os.kill(pid_of(victim), signal.SIGKILL)
    cluster.add_worker()
    cluster.wait_runs_over([thread_id], 1, within=60)

    events = cluster.events(thread_id)
    attempts = [e["attempt"] for e in events if e["type"] == "run.started"]
    assert attempts == [1, 2], "the killed worker's run was not taken over"
    assert [e["type"] for e in events].count("tool.called") == 1
    assert [e["type"] for e in events].count("tool.result") == 1
    keys = tally.read_text().splitlines()
    assert len(keys) == 2, "the tool ran again on the new attempt"  # one per thread
    view = cluster.view(thread_id)
    assert view["runs"][run_id]["status"] == "completed"
    reply = next(m for m in view["messages"] if m["id"] == view["runs"][run_id]["reply_id"])
    assert reply["content"] == expected
    completed = [e for e in events if e["type"] == "message.completed"]
    assert [e["text"] for e in completed] == [expected]
