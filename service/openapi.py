"""The published OpenAPI, made to say what the API answers (schemathesis checks it).

FastAPI's document is the starting point; this fills in what it cannot know:
- Every error body is ours, `{"detail": str, "errors"?: [...]}` (service/app.py),
  not FastAPI's `HTTPValidationError`: one `Problem` schema for every 4xx and 5xx.
- Answers any operation may give, whatever its route says: 400 for a Host that is
  not allowed, 503 while Redis is unavailable (service/security.py, app.py), 413
  for a body over the limit and 403 for a browser write from another origin on
  every operation that takes a body or changes state, 401 on every one that needs
  a caller, 405 (with `Allow`) for a method the path does not take.
- The agents a message may name, from the agents file and the workflows loaded
  at start.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from consumers.agents import known_agents
from service.models import MAX_AGENTS_PER_MESSAGE

PROBLEM: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {"type": "string", "description": "what is wrong, for a person"},
        "errors": {
            "type": "array",
            "items": {"type": "object"},
            "description": "with a 422 for a malformed request: each problem found",
        },
    },
}
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_EVERYWHERE = {"400": "the Host header is not allowed", "503": "Redis is unavailable; try again"}
_WITH_BODY = {
    "403": "a browser request from another origin, or a cookie request that does not say "
    "where it comes from",
    "413": "the request body is over the limit",
}
_PUBLIC = {"/healthz", "/api/schema/events", "/api/session"}
# OpenAPI links: where an answer's ids lead (for clients, and schemathesis's stateful
# phase, which follows them from a new thread to its messages and runs).
_THREAD_OPS = [
    ("get", "/api/threads/{thread_id}"),
    ("patch", "/api/threads/{thread_id}"),
    ("post", "/api/threads/{thread_id}/messages"),
    ("get", "/api/threads/{thread_id}/events"),
    ("get", "/api/threads/{thread_id}/members"),
    ("delete", "/api/threads/{thread_id}"),
]
_RUN_OPS = [
    ("get", "/api/runs/{run_id}"),
    ("post", "/api/runs/{run_id}/cancel"),
    ("post", "/api/runs/{run_id}/regenerate"),
    ("post", "/api/runs/{run_id}/retry"),
    ("post", "/api/runs/{run_id}/signal"),
]
_LINKS = [
    ("post", "/api/threads", "201", _THREAD_OPS, {"thread_id": "$response.body#/id"}),
    (
        "post",
        "/api/threads/{thread_id}/messages",
        "202",
        _RUN_OPS,
        {"run_id": "$response.body#/run_id"},
    ),
]
_UNSAFE = {"post", "put", "patch", "delete"}


def publish(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document (made once, then kept)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, summary=app.summary, routes=app.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components["Problem"] = PROBLEM
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            extra = dict(_EVERYWHERE)
            if method in _UNSAFE:
                extra.update(_WITH_BODY)
            if path not in _PUBLIC:
                extra["401"] = "no caller, or a refused one (see WWW-Authenticate)"
            for status, description in extra.items():
                responses.setdefault(status, {"description": description})
            for status, response in responses.items():
                if status.startswith(("4", "5")) and not _has_own_model(response):
                    response["content"] = {"application/json": {"schema": _PROBLEM_REF}}
    _name_the_agents(components)
    _link(schema["paths"])
    app.openapi_schema = schema
    return schema


def _link(paths: dict[str, Any]) -> None:
    for method, path, status, targets, parameters in _LINKS:
        response = paths.get(path, {}).get(method, {}).get("responses", {}).get(status)
        if response is None:
            continue
        links = response.setdefault("links", {})
        for target_method, target_path in targets:
            operation = paths.get(target_path, {}).get(target_method)
            if operation is not None and "operationId" in operation:
                links[operation["operationId"]] = {
                    "operationId": operation["operationId"],
                    "parameters": parameters,
                }


def _has_own_model(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    ref = schema.get("$ref", "")
    return bool(ref) and not ref.endswith(("/HTTPValidationError", "/Problem"))


def _name_the_agents(components: dict[str, Any]) -> None:
    agents = known_agents()
    message = components.get("NewMessage", {}).get("properties", {})
    if "agent" in message:
        message["agent"] = {
            "anyOf": [{"type": "string", "enum": agents}, {"type": "null"}],
            "description": message["agent"].get("description", ""),
        }
    if "agents" in message:
        described = message["agents"].get("description", "")
        message["agents"] = {
            "anyOf": [
                {
                    "type": "array",
                    "items": {"type": "string", "enum": agents},
                    "minItems": 1,
                    "maxItems": MAX_AGENTS_PER_MESSAGE,
                    "uniqueItems": True,
                },
                {"type": "null"},
            ],
            "description": described,
        }
