"""The agents file: the shipped one, SLIPSTREAM_AGENTS, and one line for each mistake."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from consumers import agents
from consumers.agents import AgentsFileError, load
from slipstream.config import Settings
from tests.ports import free_port
from tests.processes import ROOT, env_for, exits_within, processes, spawn

MINIMAL = """\
[router]
default = "assistant"

[[agents]]
name = "assistant"
description = "General help."
system = "You help."
handoffs = ["critic"]

[[agents]]
name = "critic"
description = "Reviews."
system = "You review."
tools = ["calculator"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agents.toml"
    path.write_text(text)
    return path


def test_the_shipped_file_has_the_four_agents_with_real_prompts() -> None:
    shipped = load()
    assert [a.name for a in shipped.agents] == ["assistant", "researcher", "writer", "critic"]
    assert shipped.router.default == "assistant" and shipped.router.classifier is False
    researcher = shipped.by_name["researcher"]
    assert researcher.tools == ("calculator", "now", "search_thread", "fetch_url")
    assert researcher.approve == ("fetch_url",)
    assert researcher.route[0].search("Can you look up the population of Lyon?")
    for agent in shipped.agents:
        assert len(agent.system.split()) > 60, f"{agent.name}'s prompt is a stub"
        assert "\\" not in agent.system  # TOML's line continuations were applied
        for target in agent.handoffs:
            assert target in agent.system, f"{agent.name}'s prompt never says when to hand off"


def test_the_repo_root_file_is_the_shipped_one() -> None:
    # The root's agents.toml links to the package's copy, which the wheel carries.
    assert (ROOT / "agents.toml").read_bytes() == agents.SHIPPED_FILE.read_bytes()
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["consumers"] == ["agents.toml"]


def test_the_public_names_are_the_loaded_files(tmp_path: Path) -> None:
    custom = load(
        write(tmp_path, MINIMAL.replace('default = "assistant"', 'default = "critic"')),
        workflow_names=(),
    )
    previous = agents.use(custom)
    try:
        assert list(agents.AGENTS) == ["assistant", "critic"]
        assert agents.DEFAULT_AGENT == "critic" == agents.default_agent()
        assert agents.agent_named("nobody").name == "critic"
        assert "research" in agents.known_agents()  # workflows stay addressable
    finally:
        agents.use(previous)


def test_slipstream_agents_names_the_file() -> None:
    assert Settings.from_env({}).agents_file is None
    assert Settings.from_env({"SLIPSTREAM_AGENTS": "/etc/a.toml"}).agents_file == Path(
        "/etc/a.toml"
    )


def test_tool_names_come_from_the_caller_and_the_declared_mcp_servers(tmp_path: Path) -> None:
    text = MINIMAL.replace('tools = ["calculator"]', 'tools = ["serch", "mcp.files.read"]')
    text += '\n[mcp.files]\ncommand = "python"\nargs = ["-m", "files_server"]\n'
    parsed = load(write(tmp_path, text), known_tools={"serch"}, workflow_names=())
    assert parsed.mcp["files"].args == ("-m", "files_server")


def test_approve_may_name_one_tool_of_a_listed_mcp_server(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        'tools = ["calculator"]', 'tools = ["mcp.files"]\napprove = ["mcp.files.delete"]'
    )
    text += '\n[mcp.files]\nurl = "http://127.0.0.1:9000/mcp"\n'
    assert load(write(tmp_path, text), workflow_names=()).by_name["critic"].approve


BAD = [
    (
        MINIMAL.replace('"calculator"', '"serch"'),
        "agent 'critic': tools: unknown tool 'serch' "
        "(known: calculator, now, search_thread, fetch_url)",
    ),
    (
        MINIMAL.replace('tools = ["calculator"]', 'tools = ["calculator"]\napprove = ["now"]'),
        "agent 'critic': approve: 'now' is not one of its tools",
    ),
    (
        MINIMAL.replace('handoffs = ["critic"]', 'handoffs = ["editor"]'),
        "agent 'assistant': handoffs: no agent named 'editor' (agents: assistant, critic)",
    ),
    (
        MINIMAL.replace('handoffs = ["critic"]', 'handoffs = ["assistant"]'),
        "agent 'assistant': handoffs: an agent cannot hand off to itself",
    ),
    (
        MINIMAL.replace('default = "assistant"', 'default = "helper"'),
        "router: default: no agent named 'helper' (agents: assistant, critic)",
    ),
    (
        MINIMAL.replace('name = "critic"', 'name = "assistant"'),
        "agent 'assistant': name: defined twice (agents #1 and #2)",
    ),
    (
        MINIMAL.replace('name = "critic"', 'name = "research"'),
        "agent 'research': name: a workflow has this name; give the agent another",
    ),
    (
        MINIMAL.replace('name = "critic"', 'name = "router"'),
        "agent 'router': name: 'router' is the router's; give the agent another",
    ),
    (
        MINIMAL.replace('tools = ["calculator"]', 'route = ["(?i)\\\\b(review"]'),
        "agent 'critic': route: bad regular expression '(?i)\\\\b(review': missing ), "
        "unterminated subpattern at position 6",
    ),
    (
        MINIMAL.replace('tools = ["calculator"]', 'tool = ["calculator"]'),
        "agent 'critic': tool: Extra inputs are not permitted",
    ),
    (
        MINIMAL.replace('name = "critic"', 'name = "the critic"'),
        "agent 'the critic': name: String should match pattern '^[A-Za-z0-9_-]{1,64}$'",
    ),
    (
        MINIMAL.replace('tools = ["calculator"]', "temperature = 3"),
        "agent 'critic': temperature: Input should be less than or equal to 1",
    ),
    (
        MINIMAL.replace('system = "You review."\n', ""),
        "agent 'critic': system: Field required",
    ),
    (
        MINIMAL.replace('"calculator"', '"mcp.files"'),
        "agent 'critic': tools: 'mcp.files' names MCP server 'files', which is not declared "
        "(declared: none); add a [mcp.files] table",
    ),
    (
        MINIMAL + '\n[mcp.files]\ncommand = "x"\nurl = "http://h/mcp"\n',
        "mcp server 'files': give either command (with args) or url, not both or neither",
    ),
    (
        MINIMAL.replace("[router]", "[router\n"),
        "not valid TOML: ",
    ),
    ('[router]\ndefault = "assistant"\n', "agents: Field required"),
    (
        MINIMAL.replace('default = "assistant"', "classifier = 'yes'"),
        "router: classifier: Input should be a valid boolean",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_a_bad_file_is_refused_with_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(AgentsFileError) as caught:
        load(path)
    line = str(caught.value)
    assert "\n" not in line
    assert line.startswith(f"{path}: {message}"), line


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(AgentsFileError, match=r"nothere\.toml: cannot be read: No such file"):
        load(tmp_path / "nothere.toml")


@pytest.mark.parametrize("role", ["service", "consumers"])
def test_a_bad_file_stops_the_process_at_start_with_one_line(role: str, tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace('"calculator"', '"serch"'))
    # The worker checks REDIS_URL first; nothing listens there, and nothing is asked of it.
    env = env_for(
        PORT=str(free_port()), SLIPSTREAM_AGENTS=str(path), REDIS_URL="redis://127.0.0.1:1/0"
    )
    if role == "service":
        env.pop("REDIS_URL")
    log = tmp_path / f"{role}.log"
    with processes() as running:
        process = spawn(role, env, log)
        running.append(process)
        assert exits_within(process, 20) == 1
    assert log.read_text().splitlines() == [
        f"configuration error: {path}: agent 'critic': tools: unknown tool 'serch' "
        "(known: calculator, now, search_thread, fetch_url)"
    ]
