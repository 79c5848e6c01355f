"""The search index: words, points, AND, renames, and writes that a second fold
does not repeat (projections/search_index.py, search.py, store_view.lua)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from projections import search_index
from projections.projector import Projector
from projections.reindex import reindex
from projections.search import BadQuery, Search, query_words, snippet
from service import commands
from slipstream import events as ev
from slipstream.config import Settings
from slipstream.keys import new_id, new_run_id
from slipstream.store import Append, EventStore
from tests.waits import next_millisecond

# -- words ---------------------------------------------------------------------


def test_words_are_case_folded_and_latin_accents_dropped() -> None:
    assert search_index.words("Café RÉSUMÉ naïve Straße ÆON") == [
        "cafe",
        "resume",
        "naive",
        "strasse",
        "æon",
    ]
    # Decomposed accents fold the same as composed ones.
    assert search_index.words("Cafe\u0301") == ["cafe"]
    # Greek and Cyrillic are case folded and lose their accents too.
    assert search_index.words("ΆΘΗΝΑ Москва́") == ["αθηνα", "москва"]


def test_words_split_on_punctuation_and_underscores_but_keep_marks_inside() -> None:
    assert search_index.words("redis-py's stream_id: 42, v2.1!") == [
        "redis",
        "py",
        "s",
        "stream",
        "id",
        "42",
        "v2",
        "1",
    ]
    # Devanagari vowel signs are combining marks: they stay in their word.
    assert search_index.words("नमस्ते दुनिया") == ["नमस्ते", "दुनिया"]


def test_han_and_kana_are_a_word_a_character() -> None:
    assert search_index.words("東京タワーabc") == ["東", "京", "タ", "ワ", "ー", "abc"]
    spans = [(w, s, e) for w, s, e in search_index.tokens("x 東京")]
    assert spans == [("x", 0, 1), ("東", 2, 3), ("京", 3, 4)]


def test_a_word_is_cut_at_its_bound_the_same_way_in_a_query() -> None:
    long = "a" * 100
    assert search_index.words(long) == ["a" * search_index.MAX_WORD_CHARS]
    assert query_words(long) == search_index.words(long)


def test_points_cap_repeats_and_weigh_the_title() -> None:
    assert search_index.points_of("echo " * 30 + "once") == {
        "echo": search_index.COUNT_CAP,
        "once": 1,
    }
    assert search_index.points_of("Echo", search_index.TITLE_WEIGHT) == {
        "echo": search_index.TITLE_WEIGHT
    }


def test_a_source_holds_a_bounded_number_of_words() -> None:
    text = " ".join(f"w{i}" for i in range(search_index.MAX_WORDS_PER_SOURCE + 50))
    points = search_index.points_of(text)
    assert len(points) == search_index.MAX_WORDS_PER_SOURCE
    assert "w0" in points and f"w{search_index.MAX_WORDS_PER_SOURCE}" not in points


def test_encoding_round_trips_in_a_fixed_order() -> None:
    points = {"zeta": 2, "alpha": 5}
    assert search_index.encode(points) == "alpha:5 zeta:2"
    assert search_index.decode(search_index.encode(points)) == points
    assert search_index.decode(None) == {} and search_index.decode("") == {}


def test_queries_are_bounded() -> None:
    assert query_words("  Redis   redis STREAMS ") == ["redis", "streams"]
    with pytest.raises(BadQuery, match="at most 200"):
        query_words("x" * 201)
    with pytest.raises(BadQuery, match="at most 8"):
        query_words("a b c d e f g h i")


def test_a_snippet_shows_the_first_match_cut_on_words() -> None:
    text = "Lorem ipsum dolor sit amet. " * 20 + "The needle is here. " + "More text follows. " * 20
    shown = snippet(text, ["needle"])
    assert "The needle is here." in shown
    assert shown.startswith("…") and shown.endswith("…")
    assert len(shown) <= 200
    assert snippet("short title", ["nothing"]) == "short title"


# -- the index in Redis --------------------------------------------------------


def exchange(run_id: str, question: str, answer: str) -> list[ev.Event]:
    message_id, reply_id = new_id("m"), new_id("m")
    return [
        ev.MessageSent(message_id=message_id, content=question, agent="assistant", run_id=run_id),
        ev.RunRequested(run_id=run_id, message_id=message_id, reply_id=reply_id, agent="assistant"),
        ev.RunStarted(run_id=run_id, attempt=1, worker="w:1:a", token=1),
        ev.MessageDelta(run_id=run_id, message_id=reply_id, seq=1, text=answer),
        ev.MessageCompleted(run_id=run_id, message_id=reply_id, text=answer),
        ev.RunCompleted(run_id=run_id),
    ]


async def thread_with(store: EventStore, title: str, *talk: tuple[str, str]) -> str:
    thread_id, _ = await commands.create_thread(store, title)
    for question, answer in talk:
        await store.append(Append(thread_id, exchange(new_run_id(thread_id), question, answer)))
    await Projector(store.backend, store, "p").project_thread(thread_id)
    return thread_id


async def found(store: EventStore, q: str, limit: int = 10) -> list[str]:
    search = Search(store.redis, store.keys)
    return [m.thread_id for m in await search.matches(query_words(q), user=None, limit=limit)]


async def index_dump(store: EventStore) -> dict[str, Any]:
    """Every search key and what it holds."""
    dump: dict[str, Any] = {}
    async for key in store.redis.scan_iter(match="ss:*:search:*"):
        if str(key).split(":")[3] == "w":
            dump[str(key)] = await store.redis.zrange(key, 0, -1, withscores=True)
        else:
            dump[str(key)] = await store.redis.hgetall(key)
    return dump


async def test_all_the_words_must_match(store: EventStore) -> None:
    both = await thread_with(store, "", ("Tell me about lighthouses", "Keepers trimmed the wicks."))
    one = await thread_with(store, "", ("Lighthouses at night", "They blink."))
    assert set(await found(store, "lighthouses")) == {both, one}
    assert await found(store, "lighthouses keepers") == [both]
    assert await found(store, "keepers nowhere") == []


async def test_title_words_and_repeats_rank_higher(store: EventStore) -> None:
    mentioned = await thread_with(store, "Cooking", ("What about saffron?", "It is costly."))
    titled = await thread_with(store, "Saffron harvest", ("When?", "In autumn."))
    repeated = await thread_with(
        store, "Spices", ("Saffron saffron saffron!", "Saffron, saffron and saffron again.")
    )
    # The title counts 5; six mentions in messages count 6; one mention counts 1.
    assert await found(store, "saffron") == [repeated, titled, mentioned]


async def test_a_rarer_word_weighs_more(store: EventStore) -> None:
    common = [await thread_with(store, "", (f"common words {i}", "ok")) for i in range(4)]
    rare_once = await thread_with(store, "", ("common common rare", "ok"))
    common_twice = await thread_with(store, "", ("common common common common rare", "ok"))
    # Both hold "rare" once; more of the common word lifts only a little.
    ranked = await found(store, "common rare")
    assert ranked == [common_twice, rare_once]
    assert set(await found(store, "common")) >= set(common)


async def test_ties_go_to_the_most_recently_active(store: EventStore) -> None:
    older = await thread_with(store, "", ("kestrel", "bird"))
    await next_millisecond(store, older)
    newer = await thread_with(store, "", ("kestrel", "bird"))
    assert await found(store, "kestrel") == [newer, older]
    await next_millisecond(store, newer)
    await store.append(Append(older, [ev.ThreadArchived(archived=False)]))
    await Projector(store.backend, store, "p").project_thread(older)
    assert await found(store, "kestrel") == [older, newer]


async def test_an_answer_is_indexed_once_it_has_ended(store: EventStore) -> None:
    thread_id, _ = await commands.create_thread(store, "")
    run_id = new_run_id(thread_id)
    talk = exchange(run_id, "question", "an answer about marmots")
    projector = Projector(store.backend, store, "p")
    await store.append(Append(thread_id, talk[:4]))  # streaming: its text may still change
    await projector.project_thread(thread_id)
    assert await found(store, "question") == [thread_id]
    assert await found(store, "marmots") == []
    await store.append(Append(thread_id, talk[4:]))
    await projector.project_thread(thread_id)
    assert await found(store, "marmots") == [thread_id]


async def test_a_rename_replaces_the_title_words(store: EventStore) -> None:
    thread_id = await thread_with(store, "Old heading", ("body text", "reply text"))
    assert await found(store, "heading") == [thread_id]
    await store.append(Append(thread_id, [ev.ThreadRenamed(title="Fresh caption")]))
    await Projector(store.backend, store, "p").project_thread(thread_id)
    assert await found(store, "heading") == []
    assert await found(store, "caption") == [thread_id]
    part = store.keys.partition(thread_id)
    assert not await store.redis.exists(part.search_word("heading"))  # no empty sets left
    assert await store.redis.zscore(part.search_word("text"), thread_id) == 2  # untouched


async def test_folding_again_changes_nothing(store: EventStore) -> None:
    thread_id = await thread_with(
        store, "Repeat", ("first question", "first answer"), ("second question", "answer two")
    )
    before = await index_dump(store)
    assert before
    # A fresh projector (a restart: no cache) reads the feed again: nothing to write.
    await Projector(store.backend, store, "other").project_thread(thread_id)
    assert await index_dump(store) == before
    # The view lost (rebuilt from the whole stream, every source written again).
    part = store.keys.partition(thread_id)
    await store.redis.delete(part.view(thread_id))
    await Projector(store.backend, store, "third").project_thread(thread_id)
    assert await index_dump(store) == before
    # An index of another version: the next save writes every source again.
    await store.redis.hset(part.search_doc(thread_id), "v", "0")
    await store.append(Append(thread_id, [ev.ThreadArchived(archived=False)]))
    await Projector(store.backend, store, "fourth").project_thread(thread_id)
    assert await index_dump(store) == before


async def test_a_hit_shows_the_newest_message_that_holds_its_words(store: EventStore) -> None:
    thread_id = await thread_with(
        store,
        "Walrus notes",
        ("tusks?", "walrus tusks are teeth"),
        ("diet", "clams mostly"),
        ("and tusks again?", "tusks grow all life"),
    )
    part = store.keys.partition(thread_id)
    doc = await store.redis.hgetall(part.search_doc(thread_id))
    assert doc["v"] == str(search_index.INDEX_VERSION)
    assert doc["s:t"] == "notes:5 walrus:5"
    assert doc["s:1"] == "are:1 teeth:1 tusks:1 walrus:1"
    assert set(doc) == {"v", "s:t", *(f"s:{n}" for n in range(6))}  # nothing per word
    search = Search(store.redis, store.keys)

    async def shown(q: str) -> tuple[str | None, str | None]:
        words = query_words(q)
        (hit,) = await search.hits(await search.matches(words, user=None, limit=5), words)
        return hit.snippet, hit.message_id

    async def message_id(n: int) -> str:
        return str(orjson.loads(await store.redis.hget(part.view(thread_id), f"m:{n}"))["id"])

    assert await shown("walrus tusks") == ("walrus tusks are teeth", await message_id(1))
    assert await shown("tusks") == ("tusks grow all life", await message_id(5))  # the newest
    assert await shown("notes") == ("Walrus notes", None)  # the title alone has it
    assert await shown("notes clams") == ("clams mostly", await message_id(3))  # the most


async def test_the_best_few_of_many_ties_to_the_most_recent(store: EventStore) -> None:
    strong = []
    for _ in range(2):
        strong.append(await thread_with(store, "", ("heron heron heron", "ok")))
        await next_millisecond(store, strong[-1])
    weak = []
    for _ in range(6):
        weak.append(await thread_with(store, "", ("a heron", "ok")))
        await next_millisecond(store, weak[-1])
    # Each partition sends its best few and those tied with the last of them; the
    # most recent of the tied come first.
    assert await found(store, "heron", limit=4) == [strong[1], strong[0], weak[5], weak[4]]
    assert await found(store, "heron", limit=20) == [*strong[::-1], *weak[::-1]]


async def test_reindex_writes_what_the_index_lacks(store: EventStore, settings: Settings) -> None:
    first = await thread_with(store, "Lanterns", ("paper lanterns?", "They float."))
    second = await thread_with(store, "Kites", ("box kites?", "They fly."))
    before = await index_dump(store)
    # Threads from before the index, say: no doc, no posting entries.
    async for key in store.redis.scan_iter(match="ss:*:search:*"):
        await store.redis.delete(key)
    assert await found(store, "lanterns") == []

    done = await reindex(store.backend, settings)
    assert done == {"indexed": 2}
    assert await index_dump(store) == before
    assert await found(store, "lanterns") == [first] and await found(store, "kites") == [second]
    assert await reindex(store.backend, settings) == {"already indexed": 2}
