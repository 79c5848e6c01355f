"""`python -m bench.cluster --quick`: every row of `make bench`'s cluster table is produced.

Tiny sizes, one round; it asserts nothing about speed, only that each figure
was measured on both the single Redis and the 3-master cluster (a run that did
not finish would show as "unfinished" instead of a figure).
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import subprocess_env
from tests.processes import ROOT

ROWS = (
    "no-op runs/s, 1 worker process",
    "no-op runs/s, 2 worker processes",
    "appended events/s",
    "Redis commands per run",
    "Redis server µs per run",
)


@pytest.mark.slow
def test_quick_bench_prints_every_row_for_both_columns() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.cluster", "--quick"],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert lines, result.stdout
    assert [cell.strip() for cell in lines[0].strip("|").split("|")] == [
        "",
        "single node",
        "3-master cluster",
        "command",
    ]
    for label in ROWS:
        row = next((line for line in lines if line.startswith(f"| {label}")), None)
        assert row is not None, f"no row {label!r} in:\n{result.stdout}"
        _, single, cluster, command = (cell.strip() for cell in row.strip("|").split("|"))
        for cell in (single, cluster):
            assert re.fullmatch(r"[\d,.]+", cell), f"{label}: {cell!r} is not a figure"
        assert command.startswith("`python -m bench.cluster --quick"), command
