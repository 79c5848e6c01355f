"""Searching threads by their words, with the index the projector keeps
(projections/search_index.py).

A query is its words (tokenized as the index tokenizes text); a thread matches
when it holds every one of them. Three pipelined round trips, whatever the
number of threads:

1. per partition, ZCARD of its threads and of each word's posting set: how
   many threads hold each word, for its weight (a rarer word counts more:
   1 + ln(threads / threads with the word)), and which partitions can match
   at all (a partition where a word has no posting set is skipped);
2. per partition that can match, `search.lua`: ZINTER of the word's posting
   sets and the caller's own threads (weight 0: only a filter), the best
   `limit` by points, ties by the most recent activity;
3. for the best `limit` overall, the thread's summary and where the words are
   (its search doc), then the matching message's text, for a snippet.

Redis Cluster: every key one script reads is its partition's (one hash tag,
one slot); nothing reads keys of two partitions in one command, the
partitions' answers are merged here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError
from redis.asyncio import Redis

from projections import search_index
from projections.thread_view import MessageView, ThreadSummary
from slipstream.keys import Keyspace, Partition

MAX_QUERY_CHARS = 200
MAX_QUERY_WORDS = 8
SNIPPET_CHARS = 160

_SEARCH_LUA = (Path(__file__).parent / "search.lua").read_text()


class BadQuery(ValueError):
    """A query that cannot be searched as it is (too long, too many words): a 422."""


class SearchHit(ThreadSummary):
    """A thread in a list; from a search (`q`), also where it matched."""

    snippet: str | None = Field(
        None, description="on a search: a short excerpt of the matching message (or the title)"
    )
    message_id: str | None = Field(
        None, description="on a search: the message the snippet is from (none: the title)"
    )


@dataclass(frozen=True)
class Match:
    thread_id: str
    points: float
    activity: int  # ms of the thread's last event


def query_words(q: str) -> list[str]:
    """The distinct words to search for, in order; BadQuery past the bounds."""
    if len(q) > MAX_QUERY_CHARS:
        raise BadQuery(f"q is {len(q)} characters; a search takes at most {MAX_QUERY_CHARS}")
    found = list(dict.fromkeys(search_index.words(q)))
    if len(found) > MAX_QUERY_WORDS:
        raise BadQuery(f"q has {len(found)} words; a search takes at most {MAX_QUERY_WORDS}")
    return found


class Search:
    def __init__(self, redis: Redis, keys: Keyspace) -> None:
        self.redis = redis
        self.keys = keys
        self._script = redis.register_script(_SEARCH_LUA)

    async def matches(self, words: list[str], *, user: str | None, limit: int) -> list[Match]:
        """The `limit` best threads holding all `words`, among `user`'s (None: all threads)."""
        if not words:
            return []
        partitions = self.keys.all()

        def visible(part: Partition) -> str:
            return part.users_threads(user) if user is not None else part.threads

        async with self.redis.pipeline(transaction=False) as pipe:
            for part in partitions:
                pipe.zcard(part.threads)
                pipe.zcard(visible(part))
                for word in words:
                    pipe.zcard(part.search_word(word))
            sizes = [int(c) for c in await pipe.execute()]
        per = len(words) + 2
        counts = [sizes[i * per : (i + 1) * per] for i in range(len(partitions))]
        threads = sum(c[0] for c in counts)
        holding = [sum(c[2 + w] for c in counts) for w in range(len(words))]
        if not all(holding):
            return []
        weights = [f"{1 + math.log(max(threads, n) / n):.6f}" for n in holding]
        # A partition where the caller has no thread, or a word is in none, has no match.
        able = [part for part, c in zip(partitions, counts, strict=True) if all(c[1:])]
        async with self.redis.pipeline(transaction=False) as pipe:
            for part in able:
                await self._script(
                    keys=[part.threads, visible(part), *(part.search_word(w) for w in words)],
                    args=[str(limit), *weights],
                    client=pipe,
                )
            replies: list[list[Any]] = await pipe.execute()
        found = [
            Match(str(reply[i]), float(reply[i + 1]), int(reply[i + 2]))
            for reply in replies
            for i in range(0, len(reply), 3)
        ]
        found.sort(key=lambda m: (-m.points, -m.activity, m.thread_id))
        return found[:limit]

    async def hits(self, matches: list[Match], words: list[str]) -> list[SearchHit]:
        """Each match's summary with a snippet of where the words are; a match whose
        summary is gone (deleted meanwhile) is left out."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for match in matches:
                part = self.keys.partition(match.thread_id)
                pipe.hget(part.summaries, match.thread_id)
                pipe.hmget(part.search_doc(match.thread_id), [f"w:{word}" for word in words])
            replies = await pipe.execute()
        found: list[tuple[Match, SearchHit, str | None]] = []
        for n, match in enumerate(matches):
            raw, held = replies[2 * n], replies[2 * n + 1]
            if not raw:
                continue
            try:
                summary = SearchHit.model_validate_json(str(raw))
            except ValidationError:
                continue
            summary.updated_at = max(summary.updated_at, match.activity)
            found.append((match, summary, place_of([None if h is None else str(h) for h in held])))
        async with self.redis.pipeline(transaction=False) as pipe:
            for match, _, place in found:
                if place is not None and place != search_index.TITLE:
                    part = self.keys.partition(match.thread_id)
                    pipe.hget(part.view(match.thread_id), f"m:{place}")
            texts = iter(await pipe.execute())
        result: list[SearchHit] = []
        for _, hit, place in found:
            message = None
            if place is not None and place != search_index.TITLE:
                message = _message(next(texts))
            if message is not None:
                hit.snippet, hit.message_id = snippet(message.content, words), message.id
            else:
                hit.snippet = snippet(hit.title, words)
            result.append(hit)
        return result


def _message(raw: object) -> MessageView | None:
    if not raw:
        return None
    try:
        return MessageView.model_validate_json(str(raw))
    except ValidationError:
        return None


def _places(held: str | None) -> tuple[bool, list[int]]:
    title, numbers = False, []
    for item in (held or "").split():
        if item == search_index.TITLE:
            title = True
        elif item.isdigit():
            numbers.append(int(item))
    return title, numbers


def place_of(held: list[str | None]) -> str | None:
    """Where to show the match, from each word's places (`w:<word>` of the doc): the
    newest message holding every word, else the title if it holds them all, else the
    newest message holding the first word that is in one, else the title."""
    places = [_places(h) for h in held]
    if not places:
        return None
    common = set(places[0][1]).intersection(*(set(numbers) for _, numbers in places[1:]))
    if common:
        return str(max(common))
    if all(title for title, _ in places):
        return search_index.TITLE
    for _, numbers in places:
        if numbers:
            return str(max(numbers))
    return search_index.TITLE if any(title for title, _ in places) else None


def snippet(text: str, words: list[str], width: int = SNIPPET_CHARS) -> str:
    """About `width` characters of `text` around the first of `words` in it, on word
    boundaries, with "…" where it is cut."""
    wanted = set(words)
    at = next(
        ((start, end) for word, start, end in search_index.tokens(text) if word in wanted), None
    )
    start, end = at or (0, 0)
    begin = max(0, start - width // 3)
    if begin > 0:
        space = text.rfind(" ", 0, begin + 1)
        begin = space + 1 if space >= 0 and start - space < width // 2 else begin
    stop = min(len(text), max(end, begin + width))
    if stop < len(text):
        space = text.find(" ", stop)
        stop = space if 0 <= space - stop < 20 else stop
    excerpt = " ".join(text[begin:stop].split())
    return ("…" if begin > 0 else "") + excerpt + ("…" if stop < len(text) else "")
