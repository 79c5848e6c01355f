"""Searching threads by their words, with the index the projector keeps
(projections/search_index.py).

A query is its words (tokenized as the index tokenizes text); a thread matches
when it holds every one of them. Four pipelined round trips, whatever the
number of threads:

1. per partition, ZCARD of its threads and of each word's posting set: how
   many threads hold each word, for its weight (a rarer word counts more:
   1 + ln(threads / threads with the word)), and which partitions can match
   at all (a partition where a word has no posting set is skipped);
2. per partition that can match, `search.lua`: ZINTER of the word's posting
   sets and the caller's own threads (weight 0: only a filter), the best
   `limit` by points, ties by the most recent activity;
3. for the best `limit` overall, the thread's summary and, per partition,
   `search_places.lua`: which message holds the words (read from each hit's
   search doc in Redis, so only a position comes back);
4. the text of each matching message, for a snippet.

Redis Cluster: every key one script reads is its partition's (one hash tag,
one slot); nothing reads keys of two partitions in one command, the
partitions' answers are merged here. The scripts are only ever called in
pipelines, which on a cluster do not load them: slipstream/scripts.py does.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError
from redis.asyncio import Redis

from projections import search_index
from projections.thread_view import MessageView, ThreadSummary
from slipstream.keys import Keyspace, Partition
from slipstream.scripts import ScriptCalls

MAX_QUERY_CHARS = 200
MAX_QUERY_WORDS = 8
SNIPPET_CHARS = 160

_SEARCH_LUA = (Path(__file__).parent / "search.lua").read_text()
_PLACES_LUA = (Path(__file__).parent / "search_places.lua").read_text()


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
        self._places = redis.register_script(_PLACES_LUA)

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
        calls = ScriptCalls(self.redis)
        async with self.redis.pipeline(transaction=False) as pipe:
            for part in able:
                await calls.queue(
                    pipe,
                    self._script,
                    keys=[part.threads, visible(part), *(part.search_word(w) for w in words)],
                    args=[str(limit), *weights],
                )
            replies: list[Any] = await calls.execute(pipe)
        found: list[Match] = []
        for reply in replies:
            for line in str(reply or "").splitlines():
                thread_id, points, activity = line.split(" ")
                found.append(Match(thread_id, float(points), int(activity)))
        found.sort(key=lambda m: (-m.points, -m.activity, m.thread_id))
        return found[:limit]

    async def hits(self, matches: list[Match], words: list[str]) -> list[SearchHit]:
        """Each match's summary with a snippet of where the words are; a match whose
        summary is gone (deleted meanwhile) is left out."""
        by_partition: dict[int, list[str]] = {}
        for match in matches:
            by_partition.setdefault(self.keys.partition(match.thread_id).number, []).append(
                match.thread_id
            )
        calls = ScriptCalls(self.redis)
        async with self.redis.pipeline(transaction=False) as pipe:
            for match in matches:
                pipe.hget(self.keys.partition(match.thread_id).summaries, match.thread_id)
            for number, thread_ids in by_partition.items():
                part = Partition(number)
                await calls.queue(
                    pipe, self._places, keys=[part.search_doc(t) for t in thread_ids], args=words
                )
            replies = await calls.execute(pipe)
        places: dict[str, str] = {}
        for thread_ids, found_places in zip(
            by_partition.values(), replies[len(matches) :], strict=True
        ):
            places.update(zip(thread_ids, (str(p) for p in found_places), strict=True))
        found: list[tuple[SearchHit, str]] = []
        for match, raw in zip(matches, replies[: len(matches)], strict=True):
            if not raw:
                continue
            try:
                hit = SearchHit.model_validate_json(str(raw))
            except ValidationError:
                continue
            hit.updated_at = max(hit.updated_at, match.activity)
            found.append((hit, places.get(match.thread_id, "")))
        async with self.redis.pipeline(transaction=False) as pipe:
            for hit, place in found:
                if place.isdigit():
                    pipe.hget(self.keys.partition(hit.id).view(hit.id), f"m:{place}")
            texts = iter(await pipe.execute())
        for hit, place in found:
            message = _message(next(texts)) if place.isdigit() else None
            if message is not None:
                hit.snippet, hit.message_id = snippet(message.content, words), message.id
            else:
                hit.snippet = snippet(hit.title, words)
        return [hit for hit, _ in found]


def _message(raw: object) -> MessageView | None:
    if not raw:
        return None
    try:
        return MessageView.model_validate_json(str(raw))
    except ValidationError:
        return None


def _first(text: str, words: list[str]) -> tuple[int, int] | None:
    """Where the first of `words` is in `text`. A plain ASCII word is looked for with one
    regular expression (C speed, on long answers); failing that, word by word."""
    plain = [word for word in words if word.isascii()]
    if plain:
        pattern = "|".join(re.escape(word) for word in plain)
        found = re.search(f"(?<![^\\W_])(?:{pattern})(?![^\\W_])", text, re.IGNORECASE)
        if found is not None:
            return found.start(), found.end()
    wanted = set(words)
    return next(
        ((start, end) for word, start, end in search_index.tokens(text) if word in wanted), None
    )


def snippet(text: str, words: list[str], width: int = SNIPPET_CHARS) -> str:
    """About `width` characters of `text` around the first of `words` in it, on word
    boundaries, with "…" where it is cut."""
    start, end = _first(text, words) or (0, 0)
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
