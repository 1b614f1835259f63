"""`ticker streamer` as a process: clear exits when it cannot run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

TICKER = str(Path(sys.executable).with_name("ticker"))


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    return subprocess.run([TICKER, "streamer", *args], env={**base, "LOG_FORMAT": "text", **env},
                          capture_output=True, text=True, timeout=60)


def test_missing_settings_exit_2_with_a_message():
    result = run({})
    assert result.returncode == 2 and "REDIS_URL" in result.stderr


def test_unreachable_postgres_exits_1_with_a_message(settings):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    result = run({"REDIS_URL": settings.redis_url, "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/x"})
    assert result.returncode == 1 and "cannot start" in result.stderr


def test_help_lists_options():
    result = run({}, "--help")
    assert result.returncode == 0 and "--instance" in result.stdout
