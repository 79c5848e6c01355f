"""The search index's words: how text becomes words, and what each thread contributes.

The projector keeps an inverted index per partition beside the views it folds
(written by `store_view.lua`, in the same call as the view, so the index moves
with the view's checkpoint and a fold repeated after a crash changes nothing):

    ss:{pNN}:search:w:<word>      sorted set: thread id -> points of <word> in it
    ss:{pNN}:search:doc:<thread>  hash: what the index holds for the thread
        v          INDEX_VERSION it was written with
        s:t        the title's words and points ("word:points word:points ...")
        s:<n>      message n's words and points (n: its position in the view)

A source (the title, or one message) is written whole: its new words replace
what `s:<source>` held, and each posting set moves by the difference. So
writing a source twice, or rewriting a view from its stream, changes nothing;
a rename replaces the title's words; a thread's words are all named in its
doc, so a delete removes every posting entry of the thread; and a search finds
which message of a hit holds its words there (search_places.lua), for the
snippet. Nothing is kept per word of a thread but its posting entry: a doc is
about the size of the thread's text.

What is indexed: the title, every user message and every answer once it has
ended (completed, cancelled or failed: the text is final), not each delta.
Words are lowercase (Unicode case folding), accents on Latin, Greek and Cyrillic
letters are dropped (café finds cafe), combining marks of other scripts are
kept inside their words, and each Han or kana character is a word of its own
(those scripts have no spaces). A word is at most MAX_WORD_CHARS characters
(longer ones are cut, the same way for a query), and a source contributes at
most MAX_WORDS_PER_SOURCE distinct words (the first ones), so what one message
writes is bounded.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from projections.thread_view import MessageView, ThreadView

INDEX_VERSION = 1
MAX_WORD_CHARS = 40
MAX_WORDS_PER_SOURCE = 1000
MAX_TOKENS_READ = 20_000  # a message is at most 32 KiB: this is a bound, not a cut
TITLE_WEIGHT = 5  # a word of the title counts as five in a message
COUNT_CAP = 8  # a word said twenty times in one message counts as eight
TITLE = "t"
ENDED = frozenset({"completed", "cancelled", "failed"})

# Han ideographs (with extensions and compatibility forms), hiragana and katakana.
_CJK = re.compile(
    "[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
    "\U00020000-\U0002ebef\U00030000-\U0003134f]"
)
_LATIN_ACCENT = re.compile("[\u0300-\u036f]")


@functools.cache
def _token_pattern() -> re.Pattern[str]:
    """A letter or digit, then letters, digits and combining marks (kept inside a word,
    as Devanagari's vowel signs are). The marks' ranges come from the Unicode
    database once, on first use (~40 ms)."""
    ranges: list[str] = []
    start: int | None = None
    for code in range(0x300, 0x20000):
        mark = unicodedata.category(chr(code)).startswith("M")
        if mark and start is None:
            start = code
        elif not mark and start is not None:
            ranges.append(f"\\U{start:08x}-\\U{code - 1:08x}")
            start = None
    return re.compile(f"[^\\W_](?:[^\\W_]|[{''.join(ranges)}])*")


def normalized(token: str) -> str:
    """A token as the index keeps it: case folded, Latin/Greek/Cyrillic accents dropped."""
    if token.isascii():
        return token.lower()[:MAX_WORD_CHARS]
    folded = _LATIN_ACCENT.sub("", unicodedata.normalize("NFKD", token))
    word = unicodedata.normalize("NFC", folded).casefold()
    return "".join(c for c in word if c.isalnum() or unicodedata.category(c)[0] == "M")[
        :MAX_WORD_CHARS
    ]


def tokens(text: str) -> Iterator[tuple[str, int, int]]:
    """Each word of `text` with where it is (start, end) in `text`."""
    for found in _token_pattern().finditer(text):
        raw, start = found.group(), found.start()
        if _CJK.search(raw) is None:
            word = normalized(raw)
            if word:
                yield word, start, found.end()
            continue
        # Han and kana: each character a word; what lies between them, words as usual.
        rest = 0
        for char in _CJK.finditer(raw):
            if char.start() > rest:
                word = normalized(raw[rest : char.start()])
                if word:
                    yield word, start + rest, start + char.start()
            yield char.group(), start + char.start(), start + char.end()
            rest = char.end()
        if rest < len(raw):
            word = normalized(raw[rest:])
            if word:
                yield word, start + rest, found.end()


def words(text: str) -> list[str]:
    """The words of `text`, in order (a query's, say)."""
    return [word for word, _, _ in tokens(text)]


def points_of(text: str, weight: int = 1) -> dict[str, int]:
    """Each distinct word's points in one source: its count (at most COUNT_CAP) times weight."""
    counts: dict[str, int] = {}
    for read, (word, _, _) in enumerate(tokens(text)):
        if read >= MAX_TOKENS_READ:
            break
        if word in counts:
            counts[word] += 1
        elif len(counts) < MAX_WORDS_PER_SOURCE:
            counts[word] = 1
    return {word: min(count, COUNT_CAP) * weight for word, count in counts.items()}


def encode(points: dict[str, int]) -> str:
    """`s:<source>`'s value: "word:points ..." in word order (the same words, the same
    text). A word has no ':' or space, so " word:" finds it and nothing else."""
    return " ".join(f"{word}:{points[word]}" for word in sorted(points))


def decode(encoded: str | None) -> dict[str, int]:
    if not encoded:
        return {}
    pairs = (item.rpartition(":") for item in encoded.split(" "))
    return {word: int(points) for word, _, points in pairs}


def indexed(message: MessageView) -> bool:
    """Whether a message's text is final: a user's at once, an answer once it ended."""
    return message.role == "user" or message.status in ENDED


@dataclass(frozen=True)
class Source:
    name: str  # TITLE, or a message's position in the view
    encoded: str  # its words and points, as `s:<name>` holds them


def title_source(view: ThreadView) -> Source:
    return Source(TITLE, encode(points_of(view.title, TITLE_WEIGHT)))


def message_sources(view: ThreadView, positions: Iterable[int]) -> list[Source]:
    """The sources of the messages at `positions` whose text is final."""
    return [
        Source(str(n), encode(points_of(view.messages[n].content)))
        for n in sorted(positions)
        if n < len(view.messages) and indexed(view.messages[n])
    ]


def touched_words(sources: Sequence[Source], stored: Sequence[str | None]) -> list[str]:
    """Every word whose posting set writing `sources` may change: theirs and what
    `stored` (each source's `s:` value now) held."""
    found: set[str] = set()
    for source, before in zip(sources, stored, strict=True):
        found.update(decode(source.encoded))
        found.update(decode(before))
    return sorted(found)
