"""The agents a message can be addressed to, read from the agents file.

The file is `consumers/agents.toml` (the repo root's `agents.toml` links to
it, and the wheel carries it), or the one `SLIPSTREAM_AGENTS` names, which
replaces it whole. Every process loads it once at start (`load_agents_or_exit`);
anything that reads `AGENTS` before that loads it then. A bad file is refused
with one line naming the file, the agent and the field.
"""

from __future__ import annotations

import re
import sys
import tomllib
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from consumers.prompt_examples import Examples

SHIPPED_FILE = Path(__file__).with_name("agents.toml")

BUILTIN_TOOLS = ("calculator", "now", "search_thread", "fetch_url")
"""The shipped tools, in the order error messages list them."""

NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"  # as thread ids: safe in URLs, keys and @mentions
_SERVER_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"  # no dots: `mcp.<server>.<tool>` must split


# The `agent` of a classification call's `model.usage` (consumers.router.ROUTER).
ROUTER_USAGE_NAME = "router"


class AgentsFileError(ValueError):
    """The agents file cannot be used; the message is the one line the operator sees."""


class _Strict(BaseModel):
    # A misspelt key (`tool = [...]`) is an error, not a setting silently ignored.
    model_config = ConfigDict(frozen=True, extra="forbid")


class RouterConfig(_Strict):
    default: str = "assistant"
    classifier: StrictBool = False  # TOML has booleans: "yes" is a mistake, not true


class McpServer(_Strict):
    """An MCP server: stdio (`command` and `args`) or streamable HTTP (`url`).

    `env`: more environment for a stdio server, over the few variables the `mcp`
    package passes on (PATH, HOME, USER, ...): the worker's own (REDIS_URL, keys)
    are not handed to a server unless named here. `timeout`: seconds for each
    call (default 30), and for connecting (but at least 10).
    """

    command: str | None = Field(None, min_length=1)
    args: tuple[str, ...] = ()
    url: str | None = Field(None, pattern=r"^https?://\S+$")
    env: dict[str, str] = Field(default_factory=dict)
    timeout: float = Field(30.0, gt=0, le=600)

    @model_validator(mode="after")
    def _one_transport(self) -> McpServer:
        if (self.command is None) == (self.url is None):
            raise ValueError("give either command (with args) or url, not both or neither")
        if self.url is not None and self.args:
            raise ValueError("args go with command, not with url")
        if self.url is not None and self.env:
            raise ValueError("env goes with command (a process started here), not with url")
        return self


class Agent(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = Field(min_length=1)
    system: str = Field(min_length=1, description="the system prompt")
    model: str | None = Field(None, min_length=1, description="else the provider's default")
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=1)
    tools: tuple[str, ...] = ()
    approve: tuple[str, ...] = Field((), description="tools that wait for a person's yes")
    handoffs: tuple[str, ...] = Field((), description="agents it may hand the conversation to")
    route: tuple[re.Pattern[str], ...] = Field((), description="router rules, in order")
    context_tokens: int | None = Field(
        None,
        ge=1,
        description="estimated tokens of thread it is sent; else SLIPSTREAM_CONTEXT_TOKENS",
    )
    examples: Examples = Field((), description="prompts the chat offers in an empty thread")

    @field_validator("route", mode="before")
    @classmethod
    def _compile(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            return value  # pydantic says what is wrong with it
        compiled: list[Any] = []
        for pattern in value:
            if not isinstance(pattern, str):
                raise ValueError(f"{pattern!r} is not a string")
            try:
                compiled.append(re.compile(pattern))
            except re.error as exc:
                raise ValueError(f"bad regular expression {pattern!r}: {exc}") from None
        return compiled


class AgentsFile(_Strict):
    router: RouterConfig = RouterConfig()
    agents: tuple[Agent, ...] = Field(min_length=1)
    mcp: dict[str, McpServer] = Field(default_factory=dict)

    @field_validator("mcp")
    @classmethod
    def _server_names(cls, value: dict[str, McpServer]) -> dict[str, McpServer]:
        for name in value:
            if not re.match(_SERVER_PATTERN, name):
                raise ValueError(f"server name {name!r} must match {_SERVER_PATTERN}")
        return value

    @property
    def by_name(self) -> dict[str, Agent]:
        return {a.name: a for a in self.agents}

    @property
    def default(self) -> Agent:
        return self.by_name[self.router.default]


def default_known_tools(mcp_servers: Collection[str]) -> set[str]:
    """The shipped tools and one `mcp.<server>` per declared server."""
    return {*BUILTIN_TOOLS, *(f"mcp.{s}" for s in mcp_servers)}


def load(
    path: Path | None = None,
    *,
    known_tools: Collection[str] | None = None,
    workflow_names: Collection[str] | None = None,
) -> AgentsFile:
    """Read and check the agents file (`path`, else the shipped one).

    `known_tools` are the tool names agents may list (default: the shipped
    ones); `mcp.<server>` and `mcp.<server>.<tool>` are known for each server
    the file declares. `workflow_names` (default: the registered workflows)
    may not be agent names too: a message addressed to one would be ambiguous.
    """
    label = "agents.toml" if path is None else str(path)
    source = SHIPPED_FILE if path is None else path
    try:
        raw = tomllib.loads(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AgentsFileError(f"{label}: cannot be read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise AgentsFileError(f"{label}: not valid TOML: {exc}") from None
    try:
        parsed = AgentsFile.model_validate(raw)
    except ValidationError as exc:
        raise AgentsFileError(f"{label}: {_first_error(exc, raw)}") from None
    if workflow_names is None:
        from consumers import workflows

        workflow_names = workflows.names()
    problem = _cross_check(parsed, known_tools, workflow_names)
    if problem:
        raise AgentsFileError(f"{label}: {problem}")
    return parsed


def _first_error(exc: ValidationError, raw: dict[str, Any]) -> str:
    error = exc.errors()[0]
    loc = list(error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    more = exc.error_count() - 1
    tail = f" (and {more} more)" if more else ""
    where: list[str] = []
    if loc[:1] == ["agents"] and len(loc) >= 2 and isinstance(loc[1], int):
        where.append(_agent_label(raw, loc[1]))
        loc = loc[2:]
    elif loc[:1] == ["mcp"] and len(loc) >= 2:
        where.append(f"mcp server {loc[1]!r}")
        loc = loc[2:]
    elif loc[:1] == ["router"] and len(loc) >= 2:
        where.append("router")
        loc = loc[1:]
    field = ".".join(str(part) for part in loc if not isinstance(part, int))
    if field:
        where.append(field)
    return ": ".join([*where, message]) + tail


def _agent_label(raw: dict[str, Any], index: int) -> str:
    agents = raw.get("agents")
    entry = agents[index] if isinstance(agents, list) and index < len(agents) else None
    name = entry.get("name") if isinstance(entry, dict) else None
    return f"agent {name!r}" if isinstance(name, str) else f"agent #{index + 1}"


def _known_list(known: Collection[str]) -> str:
    first = [t for t in BUILTIN_TOOLS if t in known]
    return ", ".join([*first, *sorted(set(known) - set(first))])


def _cross_check(
    parsed: AgentsFile, known_tools: Collection[str] | None, workflow_names: Collection[str]
) -> str | None:
    """The first rule that spans fields or agents and is broken, as `where: field: what`."""
    servers = set(parsed.mcp)
    known = set(BUILTIN_TOOLS if known_tools is None else known_tools)
    known |= {f"mcp.{s}" for s in servers}
    seen: dict[str, int] = {}
    for number, agent in enumerate(parsed.agents, start=1):
        where = f"agent {agent.name!r}"
        if agent.name in seen:
            return f"{where}: name: defined twice (agents #{seen[agent.name]} and #{number})"
        seen[agent.name] = number
        if agent.name in workflow_names:
            return f"{where}: name: a workflow has this name; give the agent another"
        if agent.name == ROUTER_USAGE_NAME:
            # The classifier's model.usage is charged to this name: an agent of its
            # own would mix its usage with the router's.
            return f"{where}: name: {ROUTER_USAGE_NAME!r} is the router's; give the agent another"
        for name in agent.tools:
            server = _server_of(name)
            if server is not None and server not in servers:
                declared = ", ".join(sorted(servers)) or "none"
                return (
                    f"{where}: tools: {name!r} names MCP server {server!r}, which is not "
                    f"declared (declared: {declared}); add a [mcp.{server}] table"
                )
            if server is None and name not in known:
                return f"{where}: tools: unknown tool {name!r} (known: {_known_list(known)})"
        for name in agent.approve:
            server = _server_of(name)
            if name not in agent.tools and f"mcp.{server}" not in agent.tools:
                return f"{where}: approve: {name!r} is not one of its tools"
    for agent in parsed.agents:
        for target in agent.handoffs:
            if target == agent.name:
                return f"agent {agent.name!r}: handoffs: an agent cannot hand off to itself"
            if target not in seen:
                return (
                    f"agent {agent.name!r}: handoffs: no agent named {target!r} "
                    f"(agents: {', '.join(seen)})"
                )
    if parsed.router.default not in seen:
        return (
            f"router: default: no agent named {parsed.router.default!r} (agents: {', '.join(seen)})"
        )
    return None


def _server_of(tool: str) -> str | None:
    """`mcp.files` and `mcp.files.read` belong to server `files`; other tools to none."""
    if not tool.startswith("mcp."):
        return None
    return tool.split(".")[1]


def with_mcp_tools(
    parsed: AgentsFile, listed: Mapping[str, Sequence[str]], label: str
) -> AgentsFile:
    """The file with `mcp.<server>` in `tools` and `approve` replaced by the tools
    the server listed (`listed`: server -> its tool names, for the servers that
    answered), so that agents name each MCP tool as the registry does.

    A server missing from `listed` (unreachable at start) is left as written: its
    named tools answer errors until it can be reached. An agent naming a tool a
    server did not list is an `AgentsFileError` in the file's one-line form.
    """
    agents: list[Agent] = []
    for agent in parsed.agents:
        for name in agent.tools:
            server = _server_of(name)
            tools = listed.get(server or "")
            if server is not None and tools is not None and name != f"mcp.{server}":
                tool = name.removeprefix(f"mcp.{server}.")
                if tool not in tools:
                    known = ", ".join(tools) or "none"
                    raise AgentsFileError(
                        f"{label}: agent {agent.name!r}: tools: MCP server {server!r} has no "
                        f"tool {tool!r} (it lists: {known})"
                    )

        def concrete(names: tuple[str, ...]) -> tuple[str, ...]:
            out: list[str] = []
            for name in names:
                server = _server_of(name)
                tools = listed.get(server or "")
                if tools is not None and name == f"mcp.{server}":
                    out.extend(f"mcp.{server}.{tool}" for tool in tools)
                else:
                    out.append(name)
            return tuple(dict.fromkeys(out))  # in order, once each

        agents.append(
            agent.model_copy(
                update={"tools": concrete(agent.tools), "approve": concrete(agent.approve)}
            )
        )
    return parsed.model_copy(update={"agents": tuple(agents)})


_loaded: AgentsFile | None = None


def loaded() -> AgentsFile:
    """The agents file this process uses: loaded at start, or here on first use."""
    global _loaded
    if _loaded is None:
        from slipstream.config import Settings

        _loaded = load(Settings.from_env().agents_file)
    return _loaded


def use(agents_file: AgentsFile | None) -> AgentsFile | None:
    """Make `agents_file` the process's (None: load it again on next use); returns the old."""
    global _loaded
    previous, _loaded = _loaded, agents_file
    return previous


def load_agents_or_exit(path: Path | None, known_tools: Collection[str] | None = None) -> None:
    """For the processes' entry points, after the workflows and tools are loaded: a bad
    file stops the process with its one line."""
    try:
        use(load(path, known_tools=known_tools))
    except AgentsFileError as exc:
        sys.exit(f"configuration error: {exc}")


class _LoadedAgents(Mapping[str, Agent]):
    """`AGENTS`: the loaded file's agents by name, read when first used."""

    def __getitem__(self, name: str) -> Agent:
        return loaded().by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(loaded().by_name)

    def __len__(self) -> int:
        return len(loaded().agents)


AGENTS: Mapping[str, Agent] = _LoadedAgents()


def default_agent() -> str:
    """The name of the agent that answers when nothing else decides (`[router] default`)."""
    return loaded().router.default


def agent_named(name: str) -> Agent:
    """The agent of that name, else the default one (a workflow's turns, an old run's)."""
    return AGENTS.get(name) or loaded().default


def known_agents() -> list[str]:
    """Chat agents and workflows: a message can be addressed to any of them."""
    from consumers import workflows

    return sorted({*AGENTS, *workflows.names()})


def __getattr__(name: str) -> str:
    # `DEFAULT_AGENT` is the loaded file's default, read on use so that importing
    # this module never reads the file (a bad one must fail in the entry point).
    if name == "DEFAULT_AGENT":
        return default_agent()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
