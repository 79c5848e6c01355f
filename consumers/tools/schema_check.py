"""Checking a call's input against a JSON Schema given by someone else (an MCP server).

`jsonschema` (a dependency of the `mcp` package, and listed in ours) does the work:
the schema's own `$schema` picks the draft, else 2020-12 (the MCP spec's default).
A Python tool's input is checked by pydantic instead (consumers/tools/definition.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# jsonschema is imported where it is used: it takes about 90 ms to import, and a
# worker without MCP tools never needs it (a worker's start is on the first run's path).

_SHOWN = 5  # problems listed in one error; the rest are counted


def _validator(schema: Mapping[str, Any]) -> Any:
    from jsonschema import Draft202012Validator, validators

    return validators.validator_for(schema, default=Draft202012Validator)(schema)


def schema_problem(schema: Mapping[str, Any]) -> str | None:
    """Why `schema` is not a valid JSON Schema, or None."""
    from jsonschema import Draft202012Validator, validators
    from jsonschema.exceptions import SchemaError

    try:
        validators.validator_for(schema, default=Draft202012Validator).check_schema(schema)
    except SchemaError as exc:
        return str(exc.message)
    return None


def input_problems(schema: Mapping[str, Any], arguments: Mapping[str, Any]) -> list[str]:
    """What is wrong with `arguments` for `schema`, as `where: what` lines (none: valid)."""
    errors = sorted(_validator(schema).iter_errors(dict(arguments)), key=lambda e: list(e.path))
    problems = [
        f"{'.'.join(str(p) for p in error.path) or 'arguments'}: {error.message}"
        for error in errors[:_SHOWN]
    ]
    if len(errors) > _SHOWN:
        problems.append(f"and {len(errors) - _SHOWN} more")
    return problems
