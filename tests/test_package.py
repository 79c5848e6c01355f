"""The wheel, installed into a fresh venv, runs the whole system from elsewhere.

Building and installing takes ~10 s with pip's cache warm (the first run on a
machine downloads the dependencies from the index).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from consumers.llm.scripted import scripted_reply
from tests.ports import free_port
from tests.processes import (
    ROOT,
    chat,
    env_for,
    exits_within,
    gone_within,
    kill_pidfile,
    processes,
    spawn,
    wait_for_status,
    wait_healthy,
)

pytestmark = pytest.mark.slow

SOURCES = ("pyproject.toml", "README.md", "slipstream", "service", "consumers", "projections")
STATIC = "static"


def _run(*command: str | Path, cwd: Path) -> str:
    done = subprocess.run(
        [str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding the wheel built from a copy of the sources, and nothing else of ours."""
    work = tmp_path_factory.mktemp("package")
    source = work / "source"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
    for name in (*SOURCES, STATIC):
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=ignore)
        else:
            shutil.copy(path, source / name)
    built = _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-v",
        "--no-deps",
        "-w",
        work / "dist",
        ".",
        cwd=source,
    )
    warnings = [
        line
        for line in built.splitlines()
        if "Deprecat" in line or "deprecated" in line or "absent from" in line
    ]
    assert warnings == [], "the build warns:\n" + "\n".join(warnings)
    (wheel,) = (work / "dist").glob("slipstream-*.whl")
    _run(sys.executable, "-m", "venv", "--without-pip", work / "venv", cwd=work)
    python = work / "venv" / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", wheel, cwd=work)
    return python


def test_the_wheel_serves_the_chat_and_answers_from_another_directory(
    venv_python: Path, tmp_path: Path
) -> None:
    here = tmp_path / "elsewhere"
    here.mkdir()
    env = env_for(SLIPSTREAM_SCRIPTED_DELAY_MS="0", SLIPSTREAM_SCRIPTED_WORDS="12")
    env.pop("PYTHONPATH", None)  # only the installed package may be found
    located = subprocess.run(
        [venv_python, "-c", "import service, slipstream; print(service.__file__)"],
        cwd=here,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(located.stdout.strip()).is_relative_to(venv_python.parent.parent)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    pid_file = here / ".slipstream" / "redis" / "redis.pid"
    try:
        with processes() as running:
            service = spawn(
                "service",
                env,
                tmp_path / "service.log",
                "--port",
                str(port),
                python=str(venv_python),
                cwd=here,
            )
            running.append(service)
            assert wait_healthy(port, service)["redis"] == "ok"
            page = httpx.get(f"{base}/")
            assert page.status_code == 200 and "<script" in page.text
            script = httpx.get(f"{base}/static/js/main.js")
            assert script.status_code == 200 and "javascript" in script.headers["content-type"]
            vendor = httpx.get(f"{base}/static/vendor/marked.esm.js")
            assert vendor.status_code == 200

            thread_id, run_id = chat(base, "from a wheel")
            view = wait_for_status(base, thread_id, run_id, {"completed", "failed"})
            assert view["messages"][-1]["content"] == scripted_reply("from a wheel", 12)
            assert (here / ".slipstream" / "redis" / "appendonlydir").is_dir()
            redis_pid = int(pid_file.read_text())

            started = time.monotonic()
            service.send_signal(signal.SIGTERM)
            assert exits_within(service, 5) == 0
            assert time.monotonic() - started < 5
        gone_within(redis_pid, 5)
        assert not list(venv_python.parent.parent.rglob(".slipstream"))
    finally:
        kill_pidfile(pid_file)


def test_the_console_scripts_start_each_role(venv_python: Path, tmp_path: Path) -> None:
    bin_dir = venv_python.parent
    env = env_for()
    env.pop("PYTHONPATH", None)
    web = subprocess.run(
        [bin_dir / "slipstream-web", "--help"], env=env, capture_output=True, text=True, timeout=30
    )
    assert web.returncode == 0 and "--port" in web.stdout
    for script, role in (("slipstream-worker", "worker"), ("slipstream-projector", "projector")):
        done = subprocess.run(
            [bin_dir / script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30
        )
        # Without REDIS_URL each refuses, which it can only say once it has loaded.
        assert done.returncode == 1
        assert done.stderr.startswith(f"{role}: REDIS_URL is not set"), done.stderr
