"""`python -m bench.versus --quick`: every row of make bench's side-by-side table is produced.

Tiny sizes, one round; it asserts nothing about speed. Slipstream's cells are
figures; a peer's are figures where its tool is installed here (make test
installs arq in .venv/peers and BullMQ in bench/peers/bullmq) and otherwise
say it was skipped and why. DBOS needs SLIPSTREAM_BENCH_PG, which the tests
never pass on: its row says so.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import subprocess_env
from tests.processes import ROOT

FIGURE = re.compile(r"[\d,.]+")
COMMAND = re.compile(r"`(SLIPSTREAM_BENCH_PG=<url> )?python -m bench\.")
NOOP_SYSTEMS = (
    "Slipstream",
    "arq, defaults",
    "arq, max_jobs=50, poll_delay=0.01",
    "BullMQ, concurrency 50",
)
NOOP_MEASURES = (
    "no-op items/s, 1 worker process",
    "no-op items/s, 2 worker processes",
    "2 workers \N{DIVISION SIGN} 1 worker",
    "first item done after the worker process starts, ms (1 worker)",
    "Redis commands per item (1 worker)",
    "script calls per item: EVALSHA, EVAL, FCALL (1 worker)",
    "Redis µs per item in INFO commandstats, summed (1 worker)",
    "Redis server CPU µs per item, INFO cpu main thread (1 worker)",
)


def table(stdout: str) -> dict[tuple[str, str], list[str]]:
    """(measure, system) -> the row's other cells; a blank measure is the one above."""
    rows: dict[tuple[str, str], list[str]] = {}
    measure = ""
    for line in stdout.splitlines():
        if not line.startswith("| ") or line.startswith("| measure |"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        measure = cells[0] or measure
        rows[(measure, cells[1])] = cells[2:]
    return rows


def installed(system: str) -> bool:
    """Whether `system` can run here, as bench.versus finds it."""
    if system.startswith("arq"):
        return (Path(sys.prefix) / "peers" / "bin" / "python").exists()
    if system.startswith("BullMQ"):
        modules = ROOT / "bench" / "peers" / "bullmq" / "node_modules" / "bullmq"
        return shutil.which("node") is not None and modules.is_dir()
    return True


@pytest.mark.slow
def test_quick_versus_prints_every_row_with_figures_or_a_reason() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.versus", "--quick"],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    rows = table(result.stdout)
    assert rows, result.stdout

    def value(measure: str, system: str) -> str:
        found = next(
            (cells for (m, s), cells in rows.items() if m.startswith(measure) and s == system), None
        )
        assert found is not None, f"no row {measure!r} for {system!r} in:\n{result.stdout}"
        command = found[-1]
        assert COMMAND.match(command), f"{measure}, {system}: {command!r}"
        return found[0]

    for measure in NOOP_MEASURES:
        for system in NOOP_SYSTEMS:
            cell = value(measure, system)
            if installed(system):
                assert FIGURE.fullmatch(cell), f"{measure}, {system}: {cell!r} is not a figure"
            else:
                assert cell.startswith("skipped ("), f"{measure}, {system}: {cell!r}"
    trips = value("client round trips per run", "Slipstream")
    # A figure once the worker writes SLIPSTREAM_ROUNDTRIPS_FILE at exit.
    assert FIGURE.fullmatch(trips) or trips.startswith("not measured: "), trips
    assert FIGURE.fullmatch(value("workflow steps/s", "Slipstream"))
    assert value("workflow steps/s", "DBOS, default queue") == "skipped (SLIPSTREAM_BENCH_PG unset)"
    assert FIGURE.fullmatch(value("appended events/s", "Slipstream's append script"))
    assert FIGURE.fullmatch(value("appended events/s", "plain XADD, 16 to a pipeline"))
    assert FIGURE.fullmatch(value("append script \N{DIVISION SIGN} plain XADD", "Slipstream"))
    live = [cells[0] for (measure, _), cells in rows.items() if measure.startswith("live")]
    assert live, f"no live rows in:\n{result.stdout}"
    if live != ["unavailable (bench.live_latency --json missing)"]:
        for cell in live:
            assert re.search(r"\d", cell), f"a live row without a figure: {cell!r}"
