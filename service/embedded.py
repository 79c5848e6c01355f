"""The embedded default: a private redis-server under the project folder.

Its data (AOF) lives in the data directory, so stopping and starting the
system resumes unfinished runs. A server left running by a process that was
killed is adopted rather than started twice on the same files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

log = logging.getLogger("slipstream.embedded")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _alive(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=1).ping())
    except redis.RedisError:
        return False


class EmbeddedRedis:
    def __init__(self, data_dir: Path, executable: str = "redis-server") -> None:
        self.dir = data_dir / "redis"
        self.executable = executable
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._adopted_pid: int | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        port_file, pid_file = self.dir / "port", self.dir / "redis.pid"
        if port_file.exists() and pid_file.exists():
            port, pid = int(port_file.read_text()), int(pid_file.read_text())
            if _alive(port):
                log.info("adopting the embedded redis-server left running on port %d", port)
                self.port, self._adopted_pid = port, pid
                return self.url
        self.port = free_port()
        self._process = subprocess.Popen(
            [
                self.executable,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--pidfile",
                str(pid_file),
                "--logfile",
                str(self.dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
        )
        port_file.write_text(str(self.port))
        deadline = time.monotonic() + timeout
        while not _alive(self.port):
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self._process.returncode}; see {self.dir}/redis.log"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer on port {self.port}")
            time.sleep(0.05)
        log.info("embedded redis-server on port %d, data in %s", self.port, self.dir)
        return self.url

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()  # SIGTERM: redis flushes the AOF and exits
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        elif self._adopted_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._adopted_pid, signal.SIGTERM)
            self._adopted_pid = None
