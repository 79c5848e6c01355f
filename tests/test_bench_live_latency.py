"""`python -m bench.live_latency --quick --json`: every row is produced (not how fast)."""

from __future__ import annotations

import subprocess
import sys

import orjson

from tests.conftest import subprocess_env
from tests.processes import ROOT


def test_quick_live_latency_bench_prints_every_row_as_json() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.live_latency", "--quick", "--json"],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    rows = orjson.loads(result.stdout)["rows"]  # stdout holds the JSON and nothing else
    names = [row["name"] for row in rows]
    assert names == [
        "live: delta → websocket, 1 answer \N{MULTIPLICATION SIGN} 2 watchers",
        "live: delta → websocket, 4 answers \N{MULTIPLICATION SIGN} 2 watchers",
        "live: delta → websocket, 1 thread \N{MULTIPLICATION SIGN} 20 watchers",
        "live: watcher bytes ÷ delta text (permessage-deflate, as browsers)",
        "live: watcher bytes ÷ delta text (uncompressed)",
        "entries per 100 words, model at 0 ms/word",
        "entries per 100 words, model at 10 ms/word",
    ], result.stderr[-4000:]
    for row in rows:
        assert set(row) == {"name", "unit", "median", "p99", "command"}
        assert row["command"] == "python -m bench.live_latency --quick --json"
        assert row["median"] > 0 and row["p99"] >= row["median"], row
    units = {row["unit"] for row in rows}
    assert units == {"ms", "\N{MULTIPLICATION SIGN} text", "entries/100 words"}
