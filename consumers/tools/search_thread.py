"""The `search_thread` tool: the thread's messages that match a query, newest first.

The messages come from the call (`ToolCall.messages`, given by the agent loop),
so the tool reads the thread the run is in and nothing else.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from consumers.tools.context import current_tool
from consumers.tools.errors import ToolError
from consumers.tools.registry import tool

EXCERPT_CHARS = 300


def _excerpt(content: str, first_hit: int) -> str:
    if len(content) <= EXCERPT_CHARS:
        return content
    start = max(0, min(first_hit - EXCERPT_CHARS // 3, len(content) - EXCERPT_CHARS))
    text = content[start : start + EXCERPT_CHARS]
    return ("..." if start else "") + text + ("..." if start + EXCERPT_CHARS < len(content) else "")


@tool
async def search_thread(
    query: Annotated[str, Field(description="words that must all appear", min_length=1)],
    limit: Annotated[int, Field(description="most messages returned", ge=1, le=50)] = 5,
) -> list[dict[str, Any]]:
    """Search this conversation's earlier messages for all the words of a query
    (case-insensitive); the matches come newest first, each with an excerpt."""
    words = query.lower().split()
    if not words:
        raise ToolError("the query has no words to search for")
    call = current_tool()
    found: list[dict[str, Any]] = []
    for message in reversed(await call.thread_messages()):
        if message.run_id == call.run_id and message.role == "assistant":
            continue  # the answer being written now
        text = message.content.lower()
        hits = [text.find(word) for word in words]
        if min(hits) < 0:
            continue
        found.append(
            {
                "id": message.id,
                "role": message.role,
                "agent": message.agent,
                "created_at": message.created_at,
                "excerpt": _excerpt(message.content, min(hits)),
            }
        )
        if len(found) == limit:
            break
    return found
