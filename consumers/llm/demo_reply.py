"""What the offline model says: that it is a demo, what it was asked, and some markdown.

A new user who has not set ANTHROPIC_API_KEY meets this model first, so its reply
says plainly what it is and how to get a real one, quotes the message so it
visibly answers *this* message, and shows what the chat does with a streamed
answer: paragraphs, a list, and a fenced code block when code was asked for.

The reply is a pure function of the message: every choice (which of several
sentences, which points, their order) comes from a hash of it. It has exactly the
number of words asked for: cut after the last one (marked with an ellipsis when
that is mid-sentence), or filled with more sentences from a fixed set. A code block
is kept whole or left out, never cut: a reply too short to hold it goes on
without it, so its markdown never has an unclosed fence.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

# Unicode punctuation by name: ruff flags the characters themselves as confusable.
OPEN_QUOTE = "\u201c"
CLOSE_QUOTE = "\u201d"
ELLIPSIS = "\u2026"

QUOTE_WORDS = 12
"""The most words of the message it quotes."""
QUOTE_CHARS = 80
"""The most characters of the message it quotes."""

_INTROS = (
    "This is Slipstream's offline demo model, not a real LLM.",
    "You are talking to Slipstream's offline demo model, not a real LLM.",
    "Slipstream's offline demo model here: I am not a real LLM.",
    "I am Slipstream's offline demo model, not a real LLM.",
)
_ECHOES = (
    "I cannot answer {quote} for real, but I can show how an answer streams.",
    "You asked {quote} and I can only show how an answer to it would stream.",
    "A real model would answer {quote}; I only show how it would look.",
    "I read {quote} but can only show how a reply to it streams.",
)
_NO_QUESTION = "Your message had no words of its own to quote, and that is fine."
_HINTS = (
    "Set ANTHROPIC_API_KEY and restart to get answers from a real model.",
    "To use a real model, set ANTHROPIC_API_KEY (or SLIPSTREAM_LLM=anthropic) and restart.",
    "For real answers, start Slipstream with ANTHROPIC_API_KEY set.",
)
_LIST_LEADS = (
    "What this reply does show:",
    "Meanwhile, here is what the chat does with a streamed answer:",
    "A few things to notice while it streams:",
)
_POINTS = (
    "Words arrive one at a time, as they would from a real model.",
    "Markdown such as this list is rendered while it streams.",
    "The same message always gets the same reply, word for word.",
    "Stop, Retry and Regenerate work on this reply as on any other.",
    "A second tab on this thread shows the same reply growing.",
    "Closing the tab does not stop the reply: it finishes without you.",
    "Every chunk is an event on a Redis stream, listed under Events.",
)
_POINTS_SHOWN = 3
_CODE_LEAD = "You asked for code, so here is placeholder {language}:"
# Paragraphs that each read on their own, so any order of them reads well.
FILLER = (
    "Nothing in this reply was written by a language model. Its sentences come from a"
    " fixed set, chosen and ordered by a hash of your message, so asking again gets"
    " exactly this reply.",
    "A different message gets a different choice of sentences, in a different order."
    " That is all the variety this model has.",
    "SLIPSTREAM_SCRIPTED_WORDS sets how long a reply is, and SLIPSTREAM_SCRIPTED_DELAY_MS"
    " sets the pause between its words.",
    "A message that starts with echo: is answered with the rest of it, verbatim. That is"
    " handy for trying out how markdown renders.",
    "The Events button lists each chunk of this reply as it was appended to the thread's"
    " stream. A tab that reconnects resumes from the last event it saw.",
    "Workers in a consumer group write these replies, and any of them can take one on."
    " The page only ever reads the events they append.",
    "With ANTHROPIC_API_KEY set, the same page streams answers from Claude instead. Until"
    " then, these sentences are all this model has to say.",
    "This demo goes on only until it reaches the length it was given. It is grammatical"
    " and deterministic, if a little repetitive.",
)

_SNIPPETS = {
    "python": (
        "# Offline demo placeholder, not an answer.\n"
        "def reply(question: str) -> str:\n"
        '    return f"A real model would answer {question!r}."'
    ),
    "javascript": (
        "// Offline demo placeholder, not an answer.\n"
        "function reply(question) {\n"
        "  return `A real model would answer ${question}.`;\n"
        "}"
    ),
    "typescript": (
        "// Offline demo placeholder, not an answer.\n"
        "function reply(question: string): string {\n"
        "  return `A real model would answer ${question}.`;\n"
        "}"
    ),
    "sql": (
        "-- Offline demo placeholder, not an answer.\n"
        "SELECT 'A real model would answer here.' AS reply;"
    ),
    "bash": ('# Offline demo placeholder, not an answer.\necho "A real model would answer here."'),
    "rust": (
        "// Offline demo placeholder, not an answer.\n"
        "fn reply(question: &str) -> String {\n"
        '    format!("A real model would answer {question}.")\n'
        "}"
    ),
    "go": (
        "// Offline demo placeholder, not an answer.\n"
        "func reply() string {\n"
        '\treturn "A real model would write this."\n'
        "}"
    ),
    "java": (
        "// Offline demo placeholder, not an answer.\n"
        "static String reply() {\n"
        '    return "A real model would write this.";\n'
        "}"
    ),
}
# The words that name a language (any case, as a whole word), and the tag they get.
_LANGUAGES = {
    "python": "python",
    "py": "python",
    "javascript": "javascript",
    "js": "javascript",
    "typescript": "typescript",
    "ts": "typescript",
    "sql": "sql",
    "postgres": "sql",
    "sqlite": "sql",
    "bash": "bash",
    "shell": "bash",
    "rust": "rust",
    "golang": "go",
    "java": "java",
}
# Words that ask for code in any language (python unless one is named).
_CODE_WORDS = ("code", "function", "script", "program", "snippet", "implement", "regex")
_WORD = re.compile(r"[a-z]+")
# Backslash-escaped in the quote: everything that could open inline markdown (code,
# emphasis, links, HTML, entities, strike-through, tables) and the escape itself.
_MARKDOWN = re.compile(r"([\\`*_\[\]<>~&|!])")
_COMPLETE = re.compile(r"[.!?][\u201d)\"']*$")


@dataclass(frozen=True)
class _Block:
    """One markdown block of the reply. A `whole` one is kept whole or left out."""

    text: str
    whole: bool = False

    @property
    def words(self) -> int:
        return len(self.text.split())


def demo_reply(text: str, words: int) -> str:
    """The offline model's reply to `text`: exactly `words` words of markdown."""
    if words < 1:
        return ""
    kept: list[_Block] = []
    count = 0
    for block in _blocks(text):
        if count >= words:
            break
        if block.whole and count + block.words > words:
            continue  # a code block that does not fit is left out, never cut open
        kept.append(block)
        count += block.words
    return _cut("\n\n".join(b.text for b in kept), words)


def quote(text: str) -> str:
    """`text` quoted inline: whitespace collapsed, cut short, its markdown made inert."""
    said = text.split()
    shown: list[str] = []
    for word in said[:QUOTE_WORDS]:
        if shown and len(" ".join([*shown, word])) > QUOTE_CHARS:
            break
        shown.append(word[:QUOTE_CHARS])
    cut = " ".join(shown) + (ELLIPSIS if shown != said else "")
    return OPEN_QUOTE + _MARKDOWN.sub(r"\\\1", cut) + CLOSE_QUOTE


def code_language(text: str) -> str | None:
    """The language of the code `text` asks for, or None when it asks for none."""
    words = _WORD.findall(text.lower())
    for word in words:
        if word in _LANGUAGES:
            return _LANGUAGES[word]
    if any(word in _CODE_WORDS or word.rstrip("s") in _CODE_WORDS for word in words):
        return "python"
    return None


def _blocks(text: str) -> Iterator[_Block]:
    """The reply's blocks in order, then filler paragraphs without end."""
    seed = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()

    def pick(options: tuple[str, ...], slot: int) -> str:
        return options[seed[slot] % len(options)]

    echo = pick(_ECHOES, 1).format(quote=quote(text)) if text.split() else _NO_QUESTION
    yield _Block(f"{pick(_INTROS, 0)} {echo}")
    yield _Block(pick(_HINTS, 2))
    language = code_language(text)
    if language is not None:
        fence = f"```{language}\n{_SNIPPETS[language]}\n```"
        yield _Block(f"{_CODE_LEAD.format(language=language)}\n\n{fence}", whole=True)
    points = _ordered(_POINTS, seed, b"points")[:_POINTS_SHOWN]
    yield _Block(pick(_LIST_LEADS, 3) + "\n\n" + "\n".join(f"- {p}" for p in points))
    # Then the filler, round after round in the same order: a paragraph comes back
    # only after all the others.
    filler = _ordered(FILLER, seed, b"filler")
    while True:
        yield from (_Block(paragraph) for paragraph in filler)


def _ordered(options: tuple[str, ...], seed: bytes, salt: bytes) -> list[str]:
    """`options` in an order that depends on the seed alone (the same in every Python)."""
    return sorted(options, key=lambda o: hashlib.sha256(seed + salt + o.encode()).digest())


def _cut(reply: str, words: int) -> str:
    """The first `words` words of `reply`, its layout kept; a sentence cut short says so."""
    found = list(re.finditer(r"\S+", reply))
    if len(found) <= words:
        return reply
    last = found[words - 1]
    head = reply[: last.start()]
    if last.group() == "-":  # a list item's marker with nothing after it
        return head + ELLIPSIS
    if _COMPLETE.search(last.group()):
        return head + last.group()
    return head + last.group().rstrip(",;:") + ELLIPSIS
