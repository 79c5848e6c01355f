"""`python -m bench.wake --quick`: both rows of the wake table are produced (not how fast)."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import subprocess_env
from tests.processes import ROOT


def test_quick_wake_bench_prints_a_row_for_one_redis_and_for_the_cluster() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.wake", "--quick"],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    figures = re.findall(
        r"^\| (one Redis|3-master cluster)[^|]*\| ([\d.]+) \| ([\d.]+) \| 5 \|$",
        result.stdout,
        re.M,
    )
    assert [name for name, _, _ in figures] == ["one Redis", "3-master cluster"], result.stdout
