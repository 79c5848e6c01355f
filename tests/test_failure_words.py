"""The chat's failure sentences (static/js/failures.js), run in Node, for the
reasons the worker writes: the provider's summaries come from its own code, the
bounds' and the runner's texts as they are written there."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from consumers.llm.anthropic import TIMED_OUT, UNREACHABLE, status_summary
from consumers.workflows.context import StepError

FAILURES = Path(__file__).resolve().parent.parent / "static" / "js" / "failures.js"
UNKNOWN = "Something went wrong."
UNREACHED = "Couldn't reach the model."

CASES: list[tuple[str, str]] = [
    (f"model error: {UNREACHABLE} (gave up after 2 attempts)", UNREACHED),
    # The reason before the provider's errors were summarised: the issue's own example.
    (
        "model error: anthropic: connection failed: ConnectError: All connection attempts "
        "failed (gave up after 2 attempts)",
        UNREACHED,
    ),
    ("model error: the connection to the model provider broke", UNREACHED),
    (f"model error: {status_summary(429)} (gave up after 5 attempts)", "The model is getting"),
    (f"model error: {status_summary(529)}", "The model is overloaded"),
    ("model error: overloaded mid-answer", "The model is overloaded"),
    (f"model error: {status_summary(401)}", "The model provider refused the API key"),
    (f"model error: {status_summary(403)}", "The model provider refused the API key"),
    (f"model error: {TIMED_OUT} (gave up after 3 attempts)", "The model took too long"),
    (f"model error: {status_summary(408)}", "The model took too long"),
    ("model error: the answer was cut off", "The model's answer was cut off"),
    (f"model error: {status_summary(500)}", "The model provider had a problem"),
    (f"model error: {status_summary(400)}", "The model provider refused the request"),
    ("model error: the model sent a tool call that is not JSON", "The model returned an error"),
    ("thread token budget of 1000 reached (1200 used)", "This thread has used up its token"),
    (
        "the model still asked for tools after 8 rounds (SLIPSTREAM_MAX_TOOL_ROUNDS=8)",
        "The agent kept calling tools",
    ),
    (
        "writer asked to hand off to critic after 3 hand-offs (SLIPSTREAM_MAX_HANDOFFS=3)",
        "The agents kept handing the question on",
    ),
    ("gave up after 5 attempts: its worker was lost each time", "The worker answering this"),
    ("work item delivered 9 times without an end; run state unreadable", "The worker answering"),
    ("internal error (TimeoutError) while streaming the answer", "Something went wrong on the"),
    (str(StepError("fetch", "TimeoutError: timed out", 3)), "A step of the workflow failed"),
    ("step 'fetch': ValueError: no such page", "A step of the workflow failed"),
    ("workflow 'research' raised KeyError (see the worker's log)", "A step of the workflow"),
    ("cancelled by a user", "The answer was stopped"),
    ("cancelled by request", "The answer was stopped"),
    ("run r1 is not in its thread's history", UNKNOWN),
]


def explain(reasons: list[str | None]) -> list[dict[str, str]]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH; the chat's failure sentences cannot be checked")
    script = (
        f"import {{ explainFailure }} from {json.dumps(FAILURES.as_uri())};\n"
        "let input = '';\n"
        "for await (const chunk of process.stdin) input += chunk;\n"
        "const out = JSON.parse(input).map((reason) => explainFailure(reason));\n"
        "process.stdout.write(JSON.stringify(out));\n"
    )
    done = subprocess.run(
        [node, "--input-type=module", "-e", script],
        input=json.dumps(reasons),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    explained: list[dict[str, str]] = json.loads(done.stdout)
    return explained


def test_each_reason_the_worker_writes_reads_as_a_sentence_with_the_reason_as_detail() -> None:
    explained = explain([reason for reason, _ in CASES])
    for (reason, sentence), shown in zip(CASES, explained, strict=True):
        assert shown["text"].startswith(sentence), (reason, shown["text"])
        assert shown["text"].endswith("."), shown["text"]
        assert shown["detail"] == reason


def test_no_reason_is_the_fallback_alone_with_nothing_to_disclose() -> None:
    assert explain([None, "", "  "]) == [{"text": UNKNOWN, "detail": ""}] * 3
