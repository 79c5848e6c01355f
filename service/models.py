"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

from consumers.agents import known_agents
from projections.thread_view import Usage

MAX_MESSAGE_BYTES = 32 * 1024
MAX_TITLE_CHARS = 200
# Agents one message may ask at once: each is a run streaming into the thread.
MAX_AGENTS_PER_MESSAGE = 8


class _Body(BaseModel):
    # Strict: a body says what it means. `"archived": 0` or `"expected_version": "3"`
    # is a 422, not a guess (the published schema says boolean and integer).
    model_config = ConfigDict(extra="forbid", strict=True)


def _client_id(about: str) -> str | None:
    return Field(
        None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description=about,
    )


class NewThread(_Body):
    title: str = Field("", max_length=MAX_TITLE_CHARS)


class NewMessage(_Body):
    content: str = Field(
        description=f"the message, 1 byte to {MAX_MESSAGE_BYTES} bytes of UTF-8, not only spaces",
        # Published, checked by the validator below (its message is clearer than a pattern's).
        json_schema_extra={"minLength": 1, "pattern": r"\S"},
    )
    agent: str | None = Field(
        None, description="which agent answers; without it the router decides (agent.routed)"
    )
    agents: list[str] | None = Field(
        None,
        description=f"several agents (1 to {MAX_AGENTS_PER_MESSAGE}, distinct) answering at "
        "once: one run each, in its own message; with `agent` too, `agent` must be the first",
    )
    client_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="the client's own id for this message: a resend with it is a no-op",
    )
    expected_version: int | None = Field(
        None, ge=0, description="the thread's version the client last saw; 409 if it moved on"
    )
    on_busy: Literal["queue", "interrupt", "reject"] = Field(
        "queue",
        description="while another run has the thread: wait for it (queue), cancel it "
        "(interrupt), or refuse with 409 (reject)",
    )
    edit_of: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="a user message of the thread this one revises: a new version of it, "
        "on a new branch (the earlier one and what followed it stay, as another branch)",
    )
    parent_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="a user message of the thread this one follows, to go on from an "
        "earlier branch (without it: the newest user message)",
    )

    @field_validator("content")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("agent")
    @classmethod
    def _known_agent(cls, value: str | None) -> str | None:
        if value is not None and value not in known_agents():
            raise ValueError(f"no agent named {value!r}; known: {', '.join(known_agents())}")
        return value

    @field_validator("agents")
    @classmethod
    def _known_agents(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("name at least one agent, or leave agents out to have it routed")
        if len(value) > MAX_AGENTS_PER_MESSAGE:
            raise ValueError(
                f"{len(value)} agents; a message may ask at most {MAX_AGENTS_PER_MESSAGE}"
            )
        known = known_agents()
        unknown = [name for name in value if name not in known]
        if unknown:
            named = ", ".join(repr(name) for name in dict.fromkeys(unknown))
            raise ValueError(f"no agent named {named}; known: {', '.join(known)}")
        twice = [name for name in dict.fromkeys(value) if value.count(name) > 1]
        if twice:
            named = ", ".join(repr(name) for name in twice)
            raise ValueError(f"{named} named more than once; each agent answers once")
        return value

    @model_validator(mode="after")
    def _agent_agrees(self) -> NewMessage:
        if self.agent is not None and self.agents is not None and self.agents[0] != self.agent:
            raise ValueError(
                f"agent {self.agent!r} and agents {self.agents!r} disagree: give agents "
                "alone, or agent as its first name"
            )
        if self.edit_of is not None and self.parent_id is not None:
            raise ValueError(
                "give edit_of or parent_id, not both: an edit follows the parent of the "
                "message it revises"
            )
        return self

    @property
    def picked(self) -> list[str]:
        """The agents the sender chose, in order (none: the router decides)."""
        if self.agents is not None:
            return list(self.agents)
        return [self.agent] if self.agent is not None else []


class RunAccepted(BaseModel):
    run_id: str
    agent: str
    reply_id: str = Field(description="id of the message the agent answers in")


class MessageAccepted(BaseModel):
    thread_id: str
    message_id: str
    run_id: str = Field(description="the first run's id (the first agent's)")
    event_id: str = Field(description="stream id of the message.sent event")
    duplicate: bool = Field(description="true when this was a resend of a known client_id")
    runs: list[RunAccepted] = Field(
        default_factory=list, description="every run the message started, one per agent"
    )


class CancelAccepted(BaseModel):
    run_id: str
    status: Literal["cancelled", "cancel_requested"] = Field(
        description="cancelled: it ended now (no worker held it); cancel_requested: its "
        "worker stops it within a fraction of a second"
    )
    was: str = Field(description="the run's status when the cancel arrived")


class RestartAccepted(BaseModel):
    run_id: str
    status: Literal["queued"] = "queued"
    was: str


class StoredEvent(BaseModel):
    id: str
    event: dict[str, object]


class ReplicaWaits(BaseModel):
    """What this process's replica wait has seen since it started (slipstream/replicas.py)."""

    replicas: int = Field(description="replicas a promised write waits for")
    unconfirmed: int = Field(description="promised writes that stand without them")
    timed_out: int = Field(description="of those, writes that waited the whole timeout")
    unwaited: int = Field(description="promised writes sent the cluster client's way (slot moving)")
    outages: list[str] = Field(description="masters whose replicas do not acknowledge now")


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    redis: str
    roles: list[str]
    partitions: int
    llm: str
    down: dict[str, str] = Field(
        default_factory=dict, description="loops of this process that made no progress, and why"
    )
    refused: dict[str, int] = Field(
        default_factory=dict,
        description="requests and sockets this process refused at a per-user limit, by limit",
    )
    replica_wait: ReplicaWaits | None = Field(
        None, description="the replica wait of this process's promised writes; none when off"
    )


class Command(_Body):
    """The body of cancel, regenerate and retry: all optional."""

    client_id: str | None = _client_id(
        "the client's own id for this command: a resend with it within the resend window "
        "answers what the first call answered and writes nothing"
    )


class SignalIn(_Body):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    payload: JsonValue = Field(
        None,
        description="what the run gets; a chat run's approval: "
        '{"call_id": str, "approved": bool, "reason"?: str}',
    )
    client_id: str | None = _client_id(
        "the sender's own id for this signal: a resend with it answers what the first call "
        "answered and is not kept twice"
    )
    signal_id: str | None = _client_id("the older name of client_id")

    @model_validator(mode="after")
    def _one_id(self) -> SignalIn:
        if self.client_id and self.signal_id and self.client_id != self.signal_id:
            raise ValueError("client_id and signal_id differ; give one of them")
        return self

    @property
    def sender_id(self) -> str | None:
        return self.client_id or self.signal_id


class SignalAccepted(BaseModel):
    run_id: str
    name: str
    was: str = Field(description="the run's status when the signal arrived")


class AgentInfo(BaseModel):
    name: str
    kind: Literal["chat", "workflow"]
    description: str
    signals: list[str] = Field(default_factory=list)
    tools: list[str] = Field(default_factory=list, description="what a chat agent may call")
    approve: list[str] = Field(
        default_factory=list, description="its tools that wait for a person's yes"
    )
    handoffs: list[str] = Field(
        default_factory=list, description="agents it may hand the conversation to"
    )
    default: bool = Field(False, description="answers when no pick, mention or rule decides")
    model: str = Field(
        description="the model that writes its answers: 'scripted' for the offline demo model"
    )
    examples: list[str] = Field(
        default_factory=list, description="messages the chat offers to send it in an empty thread"
    )


class About(BaseModel):
    """Which model answers, so a page can say when it is the offline demo one."""

    llm: Literal["scripted", "anthropic"] = Field(description="SLIPSTREAM_LLM, as in force")
    demo: bool = Field(
        description="true for the offline demo model: its answers are made up from the words "
        "of the prompt; set ANTHROPIC_API_KEY (or SLIPSTREAM_LLM=anthropic) and restart for a "
        "real one"
    )
    model: str = Field(description="the model answers come from: 'scripted' when demo")


class ThreadPatch(_Body):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"minProperties": 1})

    title: str | None = Field(None, min_length=1, max_length=MAX_TITLE_CHARS)
    archived: bool | None = None

    @field_validator("title")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be blank")
        return value.strip() if value is not None else None


class Regenerated(BaseModel):
    run_id: str
    message_id: str = Field(description="the new answer's message id")


class ThreadUsage(Usage):
    """GET /api/usage: a thread's model usage, or one agent's share of it."""

    thread_id: str
    agent: str | None = Field(
        None, description="when given, total, by_agent and by_model count only its calls"
    )


USER_NAME_PATTERN = r"^[A-Za-z0-9_.@-]{1,64}$"


class MemberIn(_Body):
    user: str = Field(pattern=USER_NAME_PATTERN, description="the user to let into the thread")


class Members(BaseModel):
    """Who may use a thread: its owner, who manages the members, and the members."""

    thread_id: str
    owner: str
    members: list[str]
