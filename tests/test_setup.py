"""The README's set-up commands are the ones CI and the Makefile run."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("slipstream", "service", "consumers", "projections")


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
    installed = " ".join(project["dependencies"] + project["optional-dependencies"]["dev"])
    for name in ("pytest", "fakeredis[lua]", "httpx", "ruff", "mypy"):
        assert name in installed


def test_every_imported_package_is_declared_with_a_lower_bound() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared: dict[str, str] = {}
    for requirement in project["dependencies"]:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement)
        assert name is not None
        declared[_normal(name.group(0))] = requirement
    distributions = importlib.metadata.packages_distributions()
    imported: set[str] = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    imported |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - set(PACKAGES) - {"__future__"}
    assert third_party, "the scan found no imports at all"
    for module in sorted(third_party):
        names = [_normal(d) for d in distributions.get(module, [module])]
        found = [declared[n] for n in names if n in declared]
        assert found, f"{module} is imported but no distribution of it is declared: {names}"
        assert ">=" in found[0], f"{found[0]} has no lower bound"


def test_every_package_folder_is_in_the_wheel() -> None:
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    for package in PACKAGES:
        for init in (ROOT / package).rglob("__init__.py"):
            name = ".".join(init.parent.relative_to(ROOT).parts)
            assert name in listed, f"{name} has an __init__.py but is not in pyproject's packages"


def _normal(name: str) -> str:
    """A distribution's name as PEP 503 compares them: prometheus_client is prometheus-client."""
    return re.sub(r"[-_.]+", "-", name).lower()
