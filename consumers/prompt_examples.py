"""Example prompts an agent or a workflow offers: the chat shows them in an empty thread.

One rule for both places they are written (the agents file's `examples`, and
`@workflow(examples=...)`): a few short, non-blank texts. They are shown as
buttons, so a long list or a long text is a mistake, refused where it is made.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints, TypeAdapter, ValidationError

MAX_EXAMPLES = 6
"""Examples per agent or workflow: an empty thread shows every agent's."""
MAX_EXAMPLE_CHARS = 300
"""Characters in one example: a button's worth, with room for a scripted-model directive."""


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("an example must not be blank")
    return text


Example = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_EXAMPLE_CHARS), AfterValidator(_not_blank)
]
Examples = Annotated[tuple[Example, ...], Field(max_length=MAX_EXAMPLES)]

_EXAMPLES: TypeAdapter[tuple[str, ...]] = TypeAdapter(Examples)


def checked_examples(examples: object, owner: str) -> tuple[str, ...]:
    """`examples` as a tuple, or a ValueError naming `owner` and what is wrong."""
    if isinstance(examples, str):
        raise ValueError(f"{owner}: examples: give a list of texts, not one text")
    try:
        return _EXAMPLES.validate_python(examples)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = "".join(f"[{part}]" for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        raise ValueError(f"{owner}: examples{where}: {message}") from None
