"""The HTTP API. Bad input gets a 4xx that says what is wrong, and nothing is written."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request, Response, status

from consumers import workflows
from consumers.agents import AGENTS, default_agent
from consumers.agents import loaded as agents_file
from consumers.llm import LLM
from consumers.llm.scripted import MODEL_NAME as SCRIPTED_MODEL
from consumers.router import ROUTER, Decision, model_classifier, route
from consumers.schedules import Schedule, Schedules, ScheduleState, schedule_key
from consumers.workflows.cron import CronError
from projections import search
from projections.run_index import Cursor
from projections.search import SearchHit
from projections.thread_view import (
    RunStatus,
    RunSummary,
    RunView,
    ThreadSummary,
    ThreadView,
    tally,
)
from service import access, commands
from service.deletion import Deleter, ThreadKeptChanging
from service.models import (
    MAX_AGENTS_PER_MESSAGE,
    MAX_MESSAGE_BYTES,
    USER_NAME_PATTERN,
    About,
    AgentInfo,
    CancelAccepted,
    Command,
    Health,
    MemberIn,
    Members,
    MessageAccepted,
    NewMessage,
    NewThread,
    Regenerated,
    ReplicaWaits,
    RestartAccepted,
    RunAccepted,
    SignalAccepted,
    SignalIn,
    StoredEvent,
    ThreadPatch,
    ThreadUsage,
)
from service.runtime import Runtime
from service.session import authenticated, caller
from slipstream import codec, errors, events
from slipstream.config import Settings
from slipstream.keys import is_stream_id, stream_id_tuple, thread_of_run
from slipstream.replicas import ReplicaWait

# Every route of `router` needs a caller (service/session.py); `public` ones do not.
router = APIRouter(dependencies=[Depends(authenticated)], responses={401: {}, 403: {}})
public = APIRouter()

ThreadId = Annotated[
    str,
    Path(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="thread id, as POST /api/threads gave it"),
]
RunId = Annotated[
    str,
    Path(
        pattern=r"^[A-Za-z0-9_-]{1,64}\.[a-f0-9]{6,32}$", description="run id, as sending gave it"
    ),
]


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def check_stream_id(value: str | None, name: str) -> None:
    if value is not None and not is_stream_id(value):
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"{name}={value!r} is not a stream id; expected <ms>-<seq>, e.g. 1700000000000-0",
        )


async def existing_view(rt: Runtime, thread_id: str) -> ThreadView:
    view = await rt.views.current(thread_id)
    if view.version == 0:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"thread {thread_id!r} does not exist")
    return view


@router.post("/api/threads", status_code=status.HTTP_201_CREATED, response_model=ThreadView)
async def create_thread(
    request: Request, body: Annotated[NewThread | None, Body()] = None
) -> ThreadView:
    rt = runtime(request)
    thread_id, _ = await commands.create_thread(
        rt.store, (body or NewThread()).title, owner=caller(request).user
    )
    return await rt.views.current(thread_id)


SEARCH_HITS = 50  # the most threads a search answers with


@router.get("/api/threads", response_model=list[SearchHit], responses={422: {}})
async def list_threads(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    archived: Annotated[
        bool,
        Query(
            description="list the archived threads instead; with q, search only the archived "
            "threads (without it a search finds archived threads too, marked `archived`)"
        ),
    ] = False,
    q: Annotated[
        str | None,
        Query(
            max_length=search.MAX_QUERY_CHARS,
            description="search: the threads holding every one of these words (in the title "
            "or a message), best match first, each with a `snippet` and the `message_id` it "
            f"is from; at most {search.MAX_QUERY_WORDS} words, and at most {SEARCH_HITS} "
            "threads whatever the limit. Empty: the list as without it",
        ),
    ] = None,
) -> list[ThreadSummary]:
    rt = runtime(request)
    if q is not None and q.strip():
        return list(await _search(rt, caller(request).user, q, limit, archived=archived))
    wanted = limit if not archived else 500
    mine = await access.visible_threads(rt, caller(request))
    if mine is None:
        summaries = await rt.views.summaries(wanted)
    else:
        summaries = await rt.views.summaries_of(mine, wanted)
    return [s for s in summaries if s.archived == archived][:limit]


@router.patch("/api/threads/{thread_id}", response_model=ThreadSummary, responses={404: {}})
async def update_thread(request: Request, thread_id: ThreadId, body: ThreadPatch) -> ThreadSummary:
    """Rename a thread, or archive / unarchive it."""
    if body.title is None and body.archived is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "give title and/or archived")
    rt = runtime(request)
    await access.authorize(rt, caller(request), thread_id)
    await commands.update_thread(rt.store, thread_id, title=body.title, archived=body.archived)
    return (await rt.views.current(thread_id)).summary()


async def _search(
    rt: Runtime, user: str, q: str, limit: int, *, archived: bool
) -> list[search.SearchHit]:
    try:
        words = search.query_words(q)
    except search.BadQuery as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    finder = search.Search(rt.backend.client, rt.store.keys)
    # A hit's snippet is looked for inside Redis, message by message: a search answers
    # at most SEARCH_HITS, so one query's work stays bounded whatever `limit` asks.
    limit = min(limit, SEARCH_HITS)
    # Archived threads are a few among many: look further for them, as the list does.
    wanted = limit if not archived else 4 * SEARCH_HITS
    matches = await finder.matches(
        words, user=None if rt.auth.mode == "none" else user, limit=wanted
    )
    hits = await finder.hits(matches, words)
    return [hit for hit in hits if hit.archived or not archived][:limit]


@router.get("/api/threads/{thread_id}", response_model=ThreadView, responses={404: {}})
async def get_thread(request: Request, thread_id: ThreadId) -> ThreadView:
    await access.authorize(runtime(request), caller(request), thread_id)
    return await existing_view(runtime(request), thread_id)


@router.delete(
    "/api/threads/{thread_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={403: {}, 404: {}},
)
async def delete_thread(request: Request, thread_id: ThreadId) -> None:
    """Delete the thread and every key of it (its owner only); then it is a 404 everywhere.

    A run of it that is going stops; see service/deletion.py for what lapses later.
    """
    rt = runtime(request)
    if await access.authorize(rt, caller(request), thread_id) != "owner":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only the thread's owner deletes it")
    try:
        deleted = await Deleter(rt.store, rt.views).delete(thread_id)
    except ThreadKeptChanging as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    if not deleted:
        raise errors.ThreadNotFound(thread_id)


UserName = Annotated[str, Path(pattern=USER_NAME_PATTERN, description="a user name")]


async def _members(rt: Runtime, thread_id: str) -> Members:
    held = await rt.backend.client.hgetall(rt.store.keys.partition(thread_id).access(thread_id))
    return Members(
        thread_id=thread_id,
        owner=str(held.get("owner", "")),
        members=sorted(str(f)[2:] for f in held if str(f).startswith("m:")),
    )


def _one_user_mode(rt: Runtime) -> None:
    if rt.auth.mode == "none":
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            "SLIPSTREAM_AUTH=none has one user, who may use every thread: there are no members",
        )


@router.get("/api/threads/{thread_id}/members", response_model=Members, responses={404: {}})
async def list_members(request: Request, thread_id: ThreadId) -> Members:
    """The thread's owner and members (any of them may ask)."""
    rt = runtime(request)
    await access.authorize(rt, caller(request), thread_id)
    return await _members(rt, thread_id)


@router.post(
    "/api/threads/{thread_id}/members",
    response_model=Members,
    responses={400: {}, 403: {}, 404: {}, 422: {}},
)
async def add_member(request: Request, thread_id: ThreadId, body: MemberIn) -> Members:
    """Let a user into the thread (the owner only); adding a member again changes nothing."""
    rt = runtime(request)
    _one_user_mode(rt)
    who = caller(request)
    if await access.authorize(rt, who, thread_id) != "owner":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only the thread's owner adds members")
    current = await _members(rt, thread_id)
    if body.user == current.owner:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"{body.user} owns the thread already"
        )
    if body.user in current.members:
        return current
    if rt.auth.mode == "tokens" and not await rt.auth.users.exists(body.user):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"no user named {body.user!r}")
    await commands.change_members(rt.store, thread_id, body.user, add=True, by=who.user)
    return await _members(rt, thread_id)


@router.delete(
    "/api/threads/{thread_id}/members/{user}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={400: {}, 403: {}, 404: {}, 422: {}},
)
async def remove_member(request: Request, thread_id: ThreadId, user: UserName) -> None:
    """The owner removes a member; a member may remove themself (leave the thread)."""
    rt = runtime(request)
    _one_user_mode(rt)
    who = caller(request)
    role = await access.authorize(rt, who, thread_id)
    if role != "owner" and user != who.user:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "only the thread's owner removes other members"
        )
    current = await _members(rt, thread_id)
    if user == current.owner:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "the owner cannot be removed from the thread"
        )
    if user not in current.members:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{user} is not a member of the thread")
    await commands.change_members(rt.store, thread_id, user, add=False, by=who.user)


@router.post(
    "/api/threads/{thread_id}/messages",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=MessageAccepted,
    responses={404: {}, 409: {}, 413: {}, 422: {}, 429: {}},
)
async def send_message(request: Request, thread_id: ThreadId, body: NewMessage) -> MessageAccepted:
    await access.authorize(runtime(request), caller(request), thread_id)
    size = len(body.content.encode())
    if size > MAX_MESSAGE_BYTES:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"content is {size} bytes; a message may have at most {MAX_MESSAGE_BYTES}",
        )
    await _check_place(runtime(request), thread_id, body)
    # Before routing: the classifier is a model call, and spam must not cost one.
    await _may_start_runs(request, send=True)
    # A resend is answered from the first send before routing: routing may ask a
    # model, whose answer the resend would only throw away (the append dedupes it).
    if not body.picked and body.client_id is not None:
        before = await commands.earlier_send(runtime(request).store, thread_id, body.client_id)
        if before is not None:
            return _accepted(before)
    return _accepted(await send_routed(runtime(request), caller(request).user, thread_id, body))


async def send_routed(rt: Runtime, user: str, thread_id: str, body: NewMessage) -> commands.Sent:
    """Append `body` and the runs that answer it, to the agents it picks or as the router
    decides; `user`'s new runs count against their runs-at-once limit. The caller has
    checked access and limits, and answered a resend it could tell before routing.
    (The HTTP API, the AI SDK's /api/chat and AG-UI all send through here.)"""
    agents = body.picked
    routed: tuple[events.RoutedBy, str] | None = None
    with_run: Callable[[str], list[events.Event]] | None = None
    if len(agents) > 1:
        routed = ("pick", f"chosen by the sender: {', '.join(agents)}")
    elif not agents:
        agents, routed, with_run = await _route(rt, body.content)
    sent = await commands.send_message(
        rt.store,
        thread_id,
        body.content,
        agents,
        client_id=body.client_id,
        expected_version=body.expected_version,
        on_busy=body.on_busy,
        routed=routed,
        with_run=with_run,
        edit_of=body.edit_of,
        parent_id=body.parent_id,
    )
    if not sent.duplicate:
        await rt.limits.add_runs(user, [r.run_id for r in sent.runs] or [sent.run_id])
    return sent


async def _check_place(rt: Runtime, thread_id: str, body: NewMessage) -> None:
    """422 unless the message an edit revises (or a reply follows) is a user message here."""
    for field, message_id in (("edit_of", body.edit_of), ("parent_id", body.parent_id)):
        if message_id is None:
            continue
        found = (await existing_view(rt, thread_id)).message(message_id)
        if found is None or found.role != "user":
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"{field}: {message_id!r} is not a user message of thread {thread_id!r}",
            )


async def _may_start_runs(request: Request, *, send: bool = False) -> None:
    """LimitReached (429) past the caller's sends a minute or runs at once; nothing written."""
    rt, user = runtime(request), caller(request).user
    if send:
        await rt.limits.take_send(user)
    keys = rt.store.keys
    await rt.limits.check_runs(
        user, lambda run_id: keys.partition(thread_of_run(run_id) or "").run(run_id)
    )


def _accepted(sent: commands.Sent) -> MessageAccepted:
    return MessageAccepted(
        thread_id=sent.thread_id,
        message_id=sent.message_id,
        run_id=sent.run_id,
        event_id=sent.event_id,
        duplicate=sent.duplicate,
        runs=[RunAccepted(run_id=r.run_id, agent=r.agent, reply_id=r.reply_id) for r in sent.runs],
    )


async def _route(
    rt: Runtime, content: str
) -> tuple[list[str], tuple[events.RoutedBy, str], Callable[[str], list[events.Event]] | None]:
    """Who answers a message sent with no agent, how that was decided, and the
    classification call's usage (charged to the first run, see `classified_usage`).

    Several `@mentions` start one run each, the first MAX_AGENTS_PER_MESSAGE of them.
    """
    loaded = agents_file()
    classify = None
    if loaded.router.classifier:
        classify = model_classifier(
            rt.llm(), loaded.router.default, timeout_s=rt.settings.classifier_timeout_ms / 1000
        )
    decision = await route(content, None, loaded, classify, workflows=workflows.names())
    agents, reason = list(decision.agents), decision.reason
    if len(agents) > MAX_AGENTS_PER_MESSAGE:
        agents = agents[:MAX_AGENTS_PER_MESSAGE]
        reason += f"; the first {MAX_AGENTS_PER_MESSAGE} answer"
    return agents, (decision.by, reason), classified_usage(decision, rt.llm)


def classified_usage(
    decision: Decision, llm: Callable[[], LLM]
) -> Callable[[str], list[events.Event]] | None:
    """The router's model call as a `model.usage` of the run it started (agent `router`):
    the run is requested in the same append, so it is the one there is to charge."""
    usage = decision.usage
    if usage is None:
        return None
    return lambda run_id: [
        events.ModelUsage(
            run_id=run_id,
            agent=ROUTER,
            model=usage.model or llm().name,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
        )
    ]


@router.get(
    "/api/threads/{thread_id}/events", response_model=list[StoredEvent], responses={404: {}}
)
async def thread_events(
    request: Request,
    thread_id: ThreadId,
    after: Annotated[
        str | None,
        # Published; checked by check_stream_id, whose 400 says what a stream id looks like.
        Query(
            description="only events after this stream id",
            json_schema_extra={"pattern": r"^[0-9]{1,19}-[0-9]{1,19}$"},
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[StoredEvent]:
    check_stream_id(after, "after")
    rt = runtime(request)
    await access.authorize(rt, caller(request), thread_id)
    if not await rt.store.exists(thread_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"thread {thread_id!r} does not exist")
    stored = await rt.store.read(thread_id, after=after, count=limit)
    return [StoredEvent(id=s.id, event=codec.event_json(s.event)) for s in stored]


@router.post(
    "/api/runs/{run_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=CancelAccepted,
    responses={404: {}, 409: {}},
)
async def cancel_run(
    request: Request, run_id: RunId, body: Annotated[Command | None, Body()] = None
) -> CancelAccepted:
    """Stop a run from any client; 409 once it has finished."""
    await access.authorize_run(runtime(request), caller(request), run_id)
    outcome = await commands.cancel_run(
        runtime(request).store,
        run_id,
        reason="cancelled by a user",
        client_id=(body or Command()).client_id,
    )
    return CancelAccepted(run_id=run_id, status=outcome.status, was=outcome.was)


@router.post(
    "/api/runs/{run_id}/regenerate",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Regenerated,
    responses={404: {}, 409: {}, 429: {}},
)
async def regenerate(
    request: Request, run_id: RunId, body: Annotated[Command | None, Body()] = None
) -> Regenerated:
    """A new answer to the same message, as a new run; 409 while the run is still going."""
    rt = runtime(request)
    await access.authorize_run(rt, caller(request), run_id)
    await _may_start_runs(request)
    new_run, reply_id = await commands.regenerate(
        rt.store, rt.views, run_id, client_id=(body or Command()).client_id
    )
    await runtime(request).limits.add_runs(caller(request).user, [new_run])
    return Regenerated(run_id=new_run, message_id=reply_id)


@router.post(
    "/api/runs/{run_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RestartAccepted,
    responses={404: {}, 409: {}, 429: {}},
)
async def retry_run(
    request: Request, run_id: RunId, body: Annotated[Command | None, Body()] = None
) -> RestartAccepted:
    """Run a failed or cancelled run again, as a fresh attempt; 409 for any other status."""
    await access.authorize_run(runtime(request), caller(request), run_id)
    await _may_start_runs(request)
    was = await commands.restart_run(
        runtime(request).store,
        run_id,
        reason="retried by a user",
        client_id=(body or Command()).client_id,
    )
    await runtime(request).limits.add_runs(caller(request).user, [run_id])
    return RestartAccepted(run_id=run_id, was=was)


@router.post(
    "/api/runs/{run_id}/signal",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SignalAccepted,
    responses={404: {}, 409: {}, 422: {}},
)
async def signal_run(request: Request, run_id: RunId, body: SignalIn) -> SignalAccepted:
    """Human input: resumes the run if it waits for this signal.

    A workflow keeps a signal it declares for a later wait. A chat run takes only
    `approval` with `{call_id, approved, reason?}` for the call it waits on
    (422: a bad payload; 409: not waiting for that call).
    """
    await access.authorize_run(runtime(request), caller(request), run_id)
    was = await commands.signal_run(
        runtime(request).store, run_id, body.name, body.payload, body.sender_id
    )
    return SignalAccepted(run_id=run_id, name=body.name, was=was)


@router.get(
    "/api/runs",
    response_model=list[RunSummary],
    responses={400: {}, 200: {"headers": {"X-Next-Cursor": {"description": "the next page"}}}},
)
async def list_runs(
    request: Request,
    response: Response,
    status_: Annotated[RunStatus | None, Query(alias="status")] = None,
    agent: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[
        str | None,
        Query(
            description="X-Next-Cursor of the previous page: the page after it",
            json_schema_extra={"pattern": r"^[0-9]{1,15}:[A-Za-z0-9_-]{1,64}\.[a-f0-9]{6,32}$"},
        ),
    ] = None,
) -> list[RunSummary]:
    """Runs by status (and agent), newest first, as projected, a page at a time.

    When more may follow, the answer has an `X-Next-Cursor` header (and a
    `Link: <…>; rel="next"`); a page filtered by agent may be short and still
    have one.
    """
    try:
        before = Cursor.parse(cursor) if cursor is not None else None
    except ValueError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    rt = runtime(request)
    page = await rt.views.runs(status=status_, agent=agent, limit=limit, before=before)
    mine = await access.visible_threads(rt, caller(request))
    # Only the caller's: a page of others' runs comes back short, or empty, with its cursor.
    shown = page.runs if mine is None else [r for r in page.runs if r.thread_id in mine]
    if page.next is not None:
        following = request.url.include_query_params(cursor=str(page.next))
        response.headers["X-Next-Cursor"] = str(page.next)
        response.headers["Link"] = f'<{following.path}?{following.query}>; rel="next"'
    return shown


@router.get("/api/runs/{run_id}", response_model=RunView, responses={404: {}})
async def get_run(request: Request, run_id: RunId) -> RunView:
    """One run with its steps: status, attempts, durations, errors and results."""
    await access.authorize_run(runtime(request), caller(request), run_id)
    thread_id = thread_of_run(run_id) or ""
    view = await runtime(request).views.current(thread_id)
    run = view.runs.get(run_id)
    if run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"run {run_id!r} does not exist")
    return run


@router.get("/api/usage", response_model=ThreadUsage, responses={404: {}, 422: {}})
async def usage(
    request: Request,
    thread_id: Annotated[
        str,
        Query(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="the thread (required for now)"),
    ],
    agent: Annotated[str | None, Query(description="only this agent's model calls")] = None,
) -> ThreadUsage:
    """Tokens a thread's model calls spent: in total, by agent and by model.

    Every call counts, a failed attempt's and a hand-off's too. With `agent`,
    only that agent's calls count (read from the thread's events).
    """
    rt = runtime(request)
    await access.authorize(rt, caller(request), thread_id)
    view = await existing_view(rt, thread_id)
    if agent is None:
        return ThreadUsage(thread_id=thread_id, **view.usage.model_dump())
    # The view keeps agents and models apart; one agent's models need the events.
    # The same events as the view: none appended since it was read.
    last = stream_id_tuple(view.last_event_id or "0-0")
    stored = await rt.store.read(thread_id)
    own = tally((s.event for s in stored if stream_id_tuple(s.id) <= last), agent=agent)
    return ThreadUsage(thread_id=thread_id, agent=agent, **own.model_dump())


def answering_model(settings: Settings, own: str | None = None) -> str:
    """The model answers come from: an agent's own `model` (agents file) with a real
    provider, else the provider's; the offline model ignores what an agent asks for."""
    if settings.llm != "anthropic":
        return SCRIPTED_MODEL
    return own or settings.anthropic_model


@router.get("/api/agents", response_model=list[AgentInfo])
async def list_agents(request: Request) -> list[AgentInfo]:
    """Who a message can be addressed to: chat agents (with their tools) and workflows."""
    model = answering_model(runtime(request).settings)
    chat = [
        AgentInfo(
            name=a.name,
            kind="chat",
            description=a.description,
            tools=list(a.tools),
            approve=list(a.approve),
            handoffs=list(a.handoffs),
            default=a.name == default_agent(),
            model=answering_model(runtime(request).settings, a.model),
            examples=list(a.examples),
        )
        for a in AGENTS.values()
    ]
    flows = [
        AgentInfo(
            name=d.name,
            kind="workflow",
            description=d.description,
            signals=sorted(d.signals),
            model=model,
            examples=list(d.examples),
        )
        for d in (workflows.get(name) for name in workflows.names())
        if d is not None
    ]
    return chat + flows


@router.get("/api/about", response_model=About)
async def about(request: Request) -> About:
    """Which model answers: `demo` is true for the offline one, which makes answers up."""
    settings = runtime(request).settings
    return About(llm=settings.llm, demo=settings.llm == "scripted", model=answering_model(settings))


def schedules(request: Request) -> Schedules:
    return Schedules(runtime(request).store)  # fire times by the Redis server's clock


CRON_FIRES_CHECKED = 60
"""Fires of a cron schedule looked at for its shortest gap (a day of hourly ones, a
minute-by-minute hour): enough for the patterns people write."""


def _shortest_gap_s(definition: Schedule) -> int:
    """The shortest time between two fires: the interval, or for cron the least gap
    among its next fires from now (cron's shortest is a minute; CronError if it
    never fires)."""
    if definition.every_s is not None:
        return definition.every_s
    fires = [definition.next_after(int(time.time() * 1000))]
    for _ in range(CRON_FIRES_CHECKED):
        fires.append(definition.next_after(fires[-1]))
    return min(b - a for a, b in itertools.pairwise(fires)) // 1000


def schedule_owner(request: Request) -> str:
    """Whose schedules a caller sees and changes: their own ('' without identity: all)."""
    return "" if runtime(request).auth.mode == "none" else caller(request).user


@router.get("/api/schedules", response_model=list[ScheduleState])
async def list_schedules(request: Request) -> list[ScheduleState]:
    """Your recurring workflow runs, with when each fires next (ms since the epoch)."""
    owner = schedule_owner(request)
    return [
        state
        for state in await schedules(request).all()
        if not owner or state.schedule.owner == owner
    ]


@router.put("/api/schedules/{name}", response_model=ScheduleState)
async def put_schedule(request: Request, name: str, body: Schedule) -> ScheduleState:
    """Create or replace a schedule of yours: a cron expression (UTC) or an interval in
    seconds. Its runs go to a thread of yours; names are each user's own."""
    if body.name != name:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"name in the body ({body.name!r}) differs from the path ({name!r})",
        )
    rt = runtime(request)
    definition = body.model_copy(update={"owner": schedule_owner(request)})
    shortest = rt.settings.min_schedule_interval_s
    try:
        gap_s = _shortest_gap_s(definition)
        if gap_s < shortest:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"the schedule would fire every {gap_s} s; the shortest interval allowed is "
                f"{shortest} s (SLIPSTREAM_MIN_SCHEDULE_INTERVAL_S)",
            )
        kept = [s for s in await schedules(request).all() if s.schedule.owner == definition.owner]
        limit = rt.settings.schedules_per_user
        if len(kept) >= limit and definition.key not in {s.schedule.key for s in kept}:
            raise rt.limits.refuse(
                "schedules",
                f"{definition.owner or 'you'} keep {len(kept)} schedules, the limit; "
                "delete one first",
                60,
            )
        return await schedules(request).put(definition)
    except CronError as exc:  # fires in principle, but not from now on: nothing written
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None


@router.delete("/api/schedules/{name}", status_code=status.HTTP_204_NO_CONTENT, responses={404: {}})
async def delete_schedule(request: Request, name: str) -> None:
    owner = schedule_owner(request)
    if not await schedules(request).delete(schedule_key(owner, name)):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no schedule named {name!r}")


@public.get("/api/schema/events")
async def event_schema() -> dict[str, object]:
    """JSON Schema of every event, as it appears in API and websocket frames."""
    return events.json_schema()


def _replica_waits(wait: ReplicaWait) -> ReplicaWaits | None:
    if not wait.replicas:
        return None
    return ReplicaWaits(
        replicas=wait.replicas,
        unconfirmed=wait.short,
        timed_out=wait.timed_out,
        unwaited=wait.unwaited,
        outages=wait.outages,
    )


@public.get("/healthz", response_model=Health, responses={503: {"model": Health}})
async def healthz(request: Request, response: Response) -> Health:
    """ok (200), or degraded (503) with what is wrong: Redis, or a loop that is stuck."""
    rt = runtime(request)
    try:
        await rt.backend.client.ping()
        redis = "ok"
    except Exception as exc:
        redis = f"unreachable: {type(exc).__name__}: {str(exc)[:200]}"
    down = rt.liveness.down()
    healthy = redis == "ok" and not down
    if not healthy:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Health(
        status="ok" if healthy else "degraded",
        redis=redis,
        roles=rt.roles,
        partitions=rt.settings.partitions,
        llm=rt.settings.llm,
        down=down,
        refused=dict(rt.limits.refused),
        replica_wait=_replica_waits(rt.store.replica_wait),
    )
