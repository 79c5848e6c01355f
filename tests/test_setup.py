"""The README's set-up commands are the ones CI and the Makefile run."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_opens_with_make_run_and_make_test() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```sh\n(.*?)```", readme, re.S)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["make run", "make test"]
    assert readme.index("make run") < readme.index("## ")


def test_ci_runs_make_test() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M)
    assert "apt-get install" in ci and "redis-server" in ci and "chromium" in ci


def test_makefile_targets_do_what_the_readme_says() -> None:
    makefile = (ROOT / "Makefile").read_text()
    run = re.search(r"^run:.*\n((?:\t.*\n)+)", makefile, re.M)
    test = re.search(r"^test:(.*)\n((?:\t.*\n)+)", makefile, re.M)
    assert run and "-m service" in run.group(1)
    assert test and "pytest" in test.group(2)
    assert "lint" in test.group(1) and "typecheck" in test.group(1)
    lint = re.search(r"^lint:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert lint and "ruff format --check" in lint.group(1) and "ruff check" in lint.group(1)


def test_procfile_names_the_three_roles() -> None:
    lines = (ROOT / "Procfile").read_text().splitlines()
    assert lines == [
        "web: python -m service",
        "worker: python -m consumers",
        "projector: python -m projections",
    ]


def test_dev_extra_holds_what_the_tests_need() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = " ".join(project["dependencies"])
    for name in ("redis", "fastapi", "uvicorn[standard]", "pydantic", "anthropic", "orjson"):
        assert name in runtime
    dev = " ".join(project["optional-dependencies"]["dev"])
    for name in ("pytest", "fakeredis[lua]", "httpx", "ruff", "mypy"):
        assert name in dev
