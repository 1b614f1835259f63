"""`ticker streamer` as a process: a clear exit when it is not configured, patience when its\ndependencies are not up yet."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from ticker.infra.dev.embedded import EmbeddedRedis, free_port

TICKER = str(Path(sys.executable).with_name("ticker"))


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    return subprocess.run([TICKER, "streamer", *args], env={**base, "LOG_FORMAT": "text", **env},
                          capture_output=True, text=True, timeout=60)


def test_missing_settings_exit_2_with_a_message():
    result = run({})
    assert result.returncode == 2 and "REDIS_URL" in result.stderr


async def test_a_streamer_started_before_redis_waits_for_it_then_serves(settings, tmp_path):
    redis = EmbeddedRedis(tmp_path / "redis")  # its port, with nothing listening yet
    port = free_port()
    base = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env = {**base, "LOG_FORMAT": "text", "REDIS_URL": redis.url, "DATABASE_URL": settings.database_url,
           "STREAMER_PORT": str(port), "REDIS_NAMESPACE": settings.redis_namespace}
    log_path = tmp_path / "streamer.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([TICKER, "streamer", "--host", "127.0.0.1"], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        await _until(lambda: "unreachable while starting the streamer" in log_path.read_text(), proc, log_path)
        assert proc.poll() is None
        redis.start()
        await _until(lambda: _answers(port), proc, log_path)
        assert log_path.read_text().count("unreachable while starting the streamer") == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        redis.stop()
    assert code == 0, log_path.read_text()[-3000:]


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # a 503 is an answer: the process serves
    except OSError:
        return False


async def _until(check, proc: subprocess.Popen, log_path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert proc.poll() is None, log_path.read_text()[-3000:]
        assert time.monotonic() < deadline, log_path.read_text()[-3000:]
        await asyncio.sleep(0.1)


def test_help_lists_options():
    result = run({}, "--help")
    assert result.returncode == 0 and "--instance" in result.stdout
