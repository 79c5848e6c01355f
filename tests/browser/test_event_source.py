"""A browser's own `EventSource` on `GET /api/threads/{id}/events/stream`."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Page

from tests.processes import embedded_service

FOLLOW = """
([threadId, runId]) => new Promise((resolve, reject) => {
  const source = new EventSource(`/api/threads/${threadId}/events/stream`);
  const frames = [];
  source.onmessage = (message) => {
    const frame = JSON.parse(message.data);
    frames.push({id: message.lastEventId, frame});
    const event = frame.event || {};
    if (event.type === "run.completed" && event.run_id === runId) {
      source.close();
      resolve(frames);
    }
  };
  source.onerror = () => { source.close(); reject(new Error("the stream failed")); };
})
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The embedded system, answering quickly (this test watches one whole answer)."""
    with embedded_service(
        tmp_path_factory.mktemp("event-source"),
        SLIPSTREAM_SCRIPTED_DELAY_MS="5",
        SLIPSTREAM_SCRIPTED_WORDS="60",
    ) as (url, _env):
        yield url


def test_an_event_source_follows_an_answer(page: Page, server: str) -> None:
    with httpx.Client(base_url=server) as http:
        thread_id = http.post("/api/threads", json={}).json()["id"]
        sent = http.post(
            f"/api/threads/{thread_id}/messages", json={"content": "hi", "agent": "assistant"}
        ).json()
        frames = page.evaluate(FOLLOW, [thread_id, sent["run_id"]])
        stored = http.get(f"/api/threads/{thread_id}/events").json()
    snapshot, *events = frames
    assert snapshot["frame"]["type"] == "snapshot"
    # The page may open after the run started: its snapshot holds what came before.
    after = snapshot["frame"]["last_event_id"]
    ids = [e["id"] for e in stored]
    expected = stored[ids.index(after) + 1 :] if after else stored
    assert [f["frame"] for f in events] == [
        {"type": "event", "id": e["id"], "event": e["event"]} for e in expected
    ]
    assert [f["id"] for f in events] == [e["id"] for e in expected]
