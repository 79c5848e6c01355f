"""What the chat learns about the agents and the model: example prompts and /api/about."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.agents import AgentsFileError, load
from consumers.prompt_examples import MAX_EXAMPLE_CHARS, MAX_EXAMPLES
from consumers.workflows.registry import workflow
from slipstream.backend import Backend
from slipstream.config import Settings
from tests.conftest import TEST_ENV
from tests.harness import running_system

AGENT = """\
[[agents]]
name = "assistant"
description = "General help."
system = "You help."
"""


def agents_file(tmp_path: Path, examples: str) -> Path:
    path = tmp_path / "agents.toml"
    path.write_text(f"{AGENT}examples = {examples}\n")
    return path


def test_examples_are_read_from_the_agents_file(tmp_path: Path) -> None:
    loaded = load(agents_file(tmp_path, '["Say hi.", "What is 2+2?"]'))
    assert loaded.by_name["assistant"].examples == ("Say hi.", "What is 2+2?")
    assert load(agents_file(tmp_path, "[]")).by_name["assistant"].examples == ()


def test_every_shipped_agent_and_workflow_has_examples() -> None:
    from consumers import workflows

    shipped = load()
    assert all(agent.examples for agent in shipped.agents)
    for name in ("research", "approval", "review", "reminder"):
        definition = workflows.get(name)
        assert definition is not None and definition.examples, name
    # The offline model calls a tool or hands off only when told to: the examples say so.
    assert any("[[tool calculator" in e for e in shipped.by_name["researcher"].examples)
    assert any("[[handoff writer]]" in e for e in shipped.by_name["assistant"].examples)


TOO_MANY = "[" + ", ".join(f'"example {n}"' for n in range(MAX_EXAMPLES + 1)) + "]"
BAD_EXAMPLES = [
    ('"Say hi."', "Input should be a valid tuple"),
    ('["Say hi.", 3]', "Input should be a valid string"),
    ('["  "]', "an example must not be blank"),
    ('[""]', "String should have at least 1 character"),
    (f'["{"x" * (MAX_EXAMPLE_CHARS + 1)}"]', f"at most {MAX_EXAMPLE_CHARS} characters"),
    (TOO_MANY, f"at most {MAX_EXAMPLES} items"),
]


@pytest.mark.parametrize(("examples", "message"), BAD_EXAMPLES)
def test_bad_examples_are_refused_with_one_line(
    tmp_path: Path, examples: str, message: str
) -> None:
    path = agents_file(tmp_path, examples)
    with pytest.raises(AgentsFileError) as caught:
        load(path)
    line = str(caught.value)
    assert line.startswith(f"{path}: agent 'assistant': examples: "), line
    assert message in line and "\n" not in line


@pytest.mark.parametrize(
    ("examples", "message"),
    [
        ("Say hi.", "workflow 'greet': examples: give a list of texts, not one text"),
        (("ok", " "), "workflow 'greet': examples[1]: an example must not be blank"),
        (("x" * (MAX_EXAMPLE_CHARS + 1),), "workflow 'greet': examples[0]: String should"),
        (("a",) * (MAX_EXAMPLES + 1), "workflow 'greet': examples: Tuple should have at most"),
    ],
)
def test_a_workflow_with_bad_examples_is_refused_where_it_is_registered(
    examples: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ValueError) as caught:

        @workflow("greet", examples=examples)
        async def greet(ctx: object, message: str) -> str:  # pragma: no cover: never runs
            return message

    assert str(caught.value).startswith(message), str(caught.value)


async def test_agents_list_their_model_and_examples(settings: Settings) -> None:
    backend = Backend.in_process()
    try:
        async with running_system(backend, settings, workers=False) as system:
            listed = (await system.http.get("/api/agents")).json()
            about = await system.http.get("/api/about")
    finally:
        await backend.close()
    agents = {a["name"]: a for a in listed}
    shipped = load()
    for agent in shipped.agents:
        assert agents[agent.name]["examples"] == list(agent.examples)
    assert agents["approval"]["kind"] == "workflow" and agents["approval"]["examples"]
    assert {a["model"] for a in listed} == {"scripted"}
    assert about.status_code == 200
    assert about.json() == {"llm": "scripted", "demo": True, "model": "scripted"}


async def test_about_names_the_real_model() -> None:
    settings = Settings.from_env(
        {
            **TEST_ENV,
            "SLIPSTREAM_LLM": "anthropic",
            "ANTHROPIC_API_KEY": "sk-test-not-used",
            "SLIPSTREAM_ANTHROPIC_MODEL": "claude-test-1",
        }
    )
    backend = Backend.in_process()
    try:
        async with running_system(backend, settings, workers=False) as system:
            about = (await system.http.get("/api/about")).json()
            listed = (await system.http.get("/api/agents")).json()
    finally:
        await backend.close()
    assert about == {"llm": "anthropic", "demo": False, "model": "claude-test-1"}
    assert {a["model"] for a in listed} == {"claude-test-1"}
