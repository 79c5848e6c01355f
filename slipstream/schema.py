"""`python -m slipstream.schema`: print the events' JSON Schema for the web client."""

from __future__ import annotations

import sys

import orjson

from slipstream.events import json_schema

if __name__ == "__main__":
    sys.stdout.write(orjson.dumps(json_schema(), option=orjson.OPT_INDENT_2).decode() + "\n")
