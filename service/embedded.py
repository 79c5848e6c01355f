"""The embedded default: a private redis-server under the data directory.

Its data (AOF) lives in the data directory, so stopping and starting the
system resumes unfinished runs. The process using the server holds an
exclusive `flock` on `redis/owner.lock` for as long as it lives (the kernel
drops it when the process dies, however it dies). A second start on the same
directory finds the lock taken and refuses; a start after the owner was
killed gets the lock and adopts the server it left running, rather than
starting a second one on the same files.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Literal

import redis
from redis.backoff import NoBackoff
from redis.exceptions import BusyLoadingError, RedisError
from redis.retry import Retry

from slipstream.process import StartupError

log = logging.getLogger("slipstream.embedded")

START_TIMEOUT_S = 10.0
"""How long a redis-server has to answer (LOADING counts) once started or adopted."""

STOP_TIMEOUT_S = 10.0
"""How long a redis-server has to flush its AOF and exit before it is killed."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _probe(port: int) -> redis.Redis:
    """A client that asks once: redis-py's own retries take seconds on a closed port."""
    return redis.Redis(port=port, socket_timeout=1, retry=Retry(NoBackoff(), 0))


def _state(port: int) -> Literal["ready", "loading", "down"]:
    try:
        with _probe(port) as client:
            client.ping()
    except BusyLoadingError:
        return "loading"
    except RedisError:
        return "down"
    return "ready"


def _server_pid(port: int) -> int | None:
    try:
        with _probe(port) as client:
            info = client.info("server")
    except RedisError:
        return None
    pid = info.get("process_id")
    return pid if isinstance(pid, int) else None


def _serves(pid: int, directory: Path) -> bool:
    """Whether `pid` is a live redis-server on `directory` (redis-server makes its --dir
    its working directory), not a pid reused by something else since."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # ours runs as we do
        return False
    proc = Path(f"/proc/{pid}")
    if not proc.exists():  # no procfs: trust the pid
        return True
    try:
        return Path(os.readlink(proc / "cwd")) == directory.resolve()
    except OSError:  # gone, or a zombie
        return False


def _last_line(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
        for line in reversed(lines):
            if line:
                return line
    return "(nothing logged)"


class EmbeddedRedis:
    def __init__(self, data_dir: Path, executable: str = "redis-server") -> None:
        self.dir = data_dir / "redis"
        self.executable = executable
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._adopted_pid: int | None = None
        self._lock_fd: int | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else self._adopted_pid

    def running_url(self) -> str | None:
        """The URL of the server a running Slipstream holds on this data dir, if any
        (for commands such as `users add` beside a running service)."""
        try:
            port, pid = (
                int((self.dir / "port").read_text()),
                int((self.dir / "redis.pid").read_text()),
            )
        except (OSError, ValueError):
            return None
        if not _serves(pid, self.dir) or _state(port) != "ready" or _server_pid(port) != pid:
            return None
        return f"redis://127.0.0.1:{port}/0"

    def start(self) -> str:
        """Take the data dir, then adopt the server a killed owner left or start one.

        Raises StartupError saying why not; on the way out it stops what it started.
        """
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError(f"cannot create the data dir {self.dir}: {exc.strerror}") from None
        self._lock()
        try:
            if not self._adopt():
                self._spawn()
        except BaseException:
            self.stop()
            raise
        return self.url

    def _lock(self) -> None:
        lock_path = self.dir / "owner.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by children
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StartupError(
                f"the data dir {self.dir.parent} is in use by another Slipstream (pid {owner}); "
                "stop that one, or give this one its own SLIPSTREAM_DATA_DIR"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _adopt(self) -> bool:
        port_file, pid_file = self.dir / "port", self.dir / "redis.pid"
        try:
            port, pid = int(port_file.read_text()), int(pid_file.read_text())
        except (OSError, ValueError):
            return False
        if not _serves(pid, self.dir):
            return False
        # The server its killed owner left: it may still be loading or shutting down.
        deadline = time.monotonic() + START_TIMEOUT_S
        while (state := _state(port)) != "ready":
            if not _serves(pid, self.dir):
                return False  # it was on its way out
            if state != "loading" and time.monotonic() > deadline:
                raise StartupError(
                    f"the redis-server left running on {self.dir} (pid {pid}) does not answer "
                    f"on port {port}; stop it (kill {pid}) and start again"
                )
            time.sleep(0.05)
        if _server_pid(port) != pid:
            return False  # another server took the port since; ours is not there
        log.info("adopting the embedded redis-server left running on port %d", port)
        self.port, self._adopted_pid = port, pid
        return True

    def _spawn(self) -> None:
        for _ in range(3):  # the free port can be taken before redis-server binds it
            self.port = free_port()
            if self._spawn_on(self.port):
                log.info("embedded redis-server on port %d, data in %s", self.port, self.dir)
                return
        raise StartupError(f"redis-server found no free port; see {self.dir / 'redis.log'}")

    def _spawn_on(self, port: int) -> bool:
        """Start redis-server on `port`; False if the port was taken meanwhile."""
        logfile = self.dir / "redis.log"
        try:
            logfile.unlink(missing_ok=True)
            self._process = subprocess.Popen(
                [
                    self.executable,
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--dir",
                    str(self.dir),
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "everysec",
                    "--save",
                    "",
                    "--pidfile",
                    str(self.dir / "redis.pid"),
                    "--logfile",
                    str(logfile),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                # Its own process group: a Ctrl+C in the terminal reaches only us, and we
                # stop it after the roles that use it.
                start_new_session=True,
            )
        except OSError as exc:
            raise StartupError(f"cannot run {self.executable}: {exc.strerror}") from None
        (self.dir / "port").write_text(str(port))
        deadline = time.monotonic() + START_TIMEOUT_S
        # Ready means ours answers: another server that took the port first may answer
        # too, and then ours exits with "Address already in use".
        while (state := _state(port)) != "ready" or _server_pid(port) != self._process.pid:
            code = self._process.poll()
            if code is not None:
                self._process = None
                last = _last_line(logfile)
                if "Address already in use" in last:
                    return False
                raise StartupError(f"redis-server exited with status {code}: {last} ({logfile})")
            if state != "loading" and time.monotonic() > deadline:
                raise StartupError(
                    f"redis-server did not answer on port {port} within {START_TIMEOUT_S:g} s "
                    f"({logfile})"
                )
            time.sleep(0.05)
        return True

    def stop(self) -> None:
        """Stop the server (SIGTERM: it flushes the AOF), then give up the data dir."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        elif self._adopted_pid is not None:
            pid, self._adopted_pid = self._adopted_pid, None
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while _serves(pid, self.dir):  # not our child: its parent, init, reaps it
                if time.monotonic() > deadline:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    break
                time.sleep(0.05)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # last, so no one adopts a server on its way out
            self._lock_fd = None

    def abandon(self) -> None:
        """For a forced exit: ask the server to stop and give it a moment, no more (a
        start right after must not adopt a server on its way out)."""
        pid = self.pid
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 2
        while _serves(pid, self.dir) and time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                break  # our child: reaped
            time.sleep(0.02)
