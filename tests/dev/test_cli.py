"""Every `ticker` command, run as a user runs it: a missing setting or a server out of reach is one
line on stderr and a non-zero exit, never a traceback; in dev the one-shot commands find
`.ticker/dev.json` by themselves; `ticker --version` answers."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.waiting import wait_for
from ticker.infra.dev.embedded import EmbeddedRedis, free_port
from ticker.infra.runtime.settings import Settings
from ticker.infra.stores.crypto import new_key
from ticker.infra.stores.redis import connect

TICKER = str(Path(sys.executable).with_name("ticker"))
BOUND = 120.0  # seconds; only a hung command takes this long
SETTINGS_VARS = ("REDIS_URL", "DATABASE_URL", "API_KEY", "ADMIN_API_KEY", "ACCOUNT_ENCRYPTION_KEY", "ENVIRONMENT",
                 "REDIS_NAMESPACE", "PUBLISH_CHANNEL_PREFIX", "SECRETS_BACKEND", "PORT", "HOST")


def bare_env(home: Path, **extra: str) -> dict[str, str]:
    """This environment without any setting, plus `extra`: what a fresh shell has."""
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_VARS and not k.startswith(("KITE_", "TEST_"))}
    return {**env, "HOME": str(home), **extra}


def ticker(cwd: Path, env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TICKER, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=BOUND,
                          stdin=subprocess.DEVNULL)


def one_line_failure(done: subprocess.CompletedProcess[str], command: str) -> str:
    """The one line a failed command printed (asserting it is one line, with no traceback)."""
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"ticker {command}: "), lines[0]
    return lines[0]


def with_netloc(url: str, netloc: str) -> str:
    return urlunsplit(urlsplit(url)._replace(netloc=netloc))


@pytest.mark.parametrize("argv", [["tail"], ["accounts", "list"], ["migrate"], ["web"], ["streamer"], ["worker"],
                                  ["scheduler"]])
def test_a_missing_setting_is_one_line(argv: list[str], tmp_path: Path) -> None:
    done = ticker(tmp_path, bare_env(tmp_path), *argv)
    line = one_line_failure(done, argv[0])
    assert done.returncode == 2
    assert "REDIS_URL" in line or "DATABASE_URL" in line


def test_an_invalid_setting_is_one_line(tmp_path: Path) -> None:
    done = ticker(tmp_path, bare_env(tmp_path, REDIS_URL="http://not-redis", PORT="0"), "tail")
    line = one_line_failure(done, "tail")
    assert done.returncode == 2 and "REDIS_URL" in line and "PORT" in line


def test_redis_out_of_reach_is_one_line(settings: Settings, tmp_path: Path) -> None:
    refused = f"redis://127.0.0.1:{free_port()}/0"
    unknown = "redis://no-such-host.invalid:6379/0"
    wrong_password = with_netloc(settings.redis_url, f":wrong-pass-42@{urlsplit(settings.redis_url).netloc.split('@')[-1]}")
    for url, why in ((refused, "connection refused"), (unknown, "host name not found"),
                     (wrong_password, "wrong user name or password")):
        done = ticker(tmp_path, bare_env(tmp_path, REDIS_URL=url), "tail", "--seconds", "1")
        line = one_line_failure(done, "tail")
        assert done.returncode == 1 and "cannot reach Redis" in line and why in line, line
        assert "wrong-pass-42" not in line  # a password is never printed


def test_postgres_out_of_reach_is_one_line(settings: Settings, tmp_path: Path) -> None:
    refused = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    unknown = "postgresql://postgres:secret-pw-42@no-such-host.invalid/postgres"
    no_database = urlunsplit(urlsplit(settings.database_url)._replace(path="/no_such_database_x"))
    cases = [(["accounts", "list"], refused, "connection refused"), (["migrate"], unknown, "host name not found"),
             (["accounts", "list"], no_database, "does not exist")]
    for argv, url, why in cases:
        env = bare_env(tmp_path, DATABASE_URL=url, ACCOUNT_ENCRYPTION_KEY=new_key())
        done = ticker(tmp_path, env, *argv)
        line = one_line_failure(done, argv[0])
        assert done.returncode == 1 and "cannot reach PostgreSQL" in line and why in line, line
        assert "secret-pw-42" not in line


async def test_redis_going_away_under_tail_is_one_line(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    try:
        proc = await asyncio.create_subprocess_exec(
            TICKER, "tail", "--seconds", str(BOUND), cwd=tmp_path, env=bare_env(tmp_path, REDIS_URL=url),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL)
        probe = connect(url)

        async def tail_subscribed() -> bool:
            return bool(await probe.execute_command("PUBSUB", "CHANNELS"))

        try:
            await wait_for(tail_subscribed)
        finally:
            await probe.aclose()
        server.kill()
        out, err = await asyncio.wait_for(proc.communicate(), BOUND)
    finally:
        server.stop()
    done = subprocess.CompletedProcess(["tail"], proc.returncode or 0, out.decode(), err.decode())
    assert "lost the connection to Redis" in one_line_failure(done, "tail")


def test_dev_with_a_given_server_out_of_reach_says_so_before_starting_anything(tmp_path: Path) -> None:
    refused = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
               "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"}
    for name, url in refused.items():
        done = ticker(tmp_path, bare_env(tmp_path, **{name: url}), "dev", "--folder", str(tmp_path / ".ticker"))
        assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
        assert f"start-up failed: cannot reach {'Redis' if name == 'REDIS_URL' else 'PostgreSQL'} at {url}: " \
            "connection refused" in done.stdout
        assert "migrations" not in done.stdout  # nothing was started first


def test_the_stand_in_refuses_bad_options_and_a_taken_port_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "accounts.yaml").write_text("- {colour: blue}\n")
    for argv in (["--port", "99999"], ["--accounts", str(tmp_path / "accounts.yaml")]):
        done = ticker(tmp_path, bare_env(tmp_path), "sim", *argv)
        assert done.returncode == 2 and "invalid options" in one_line_failure(done, "sim")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = ticker(tmp_path, bare_env(tmp_path), "sim", "--port", str(taken.getsockname()[1]))
    assert done.returncode == 1 and "cannot listen" in one_line_failure(done, "sim")


# --- .ticker/dev.json ------------------------------------------------------------------------------
def write_dev_json(folder: Path, settings: Settings, key: str, **override: str) -> None:
    (folder / ".ticker").mkdir(parents=True)
    info = {"redis_url": settings.redis_url, "database_url": settings.database_url, "api_key": "dev-key",
            "account_encryption_key": key, "redis_namespace": settings.redis_namespace,
            "publish_channel_prefix": settings.publish_channel_prefix, "web_url": "http://127.0.0.1:1", **override}
    (folder / ".ticker" / "dev.json").write_text(json.dumps(info))


def test_dev_json_supplies_what_the_environment_leaves_unset(settings: Settings, tmp_path: Path) -> None:
    write_dev_json(tmp_path, settings, new_key())
    below = tmp_path / "src" / "deeper"
    below.mkdir(parents=True)
    env = bare_env(tmp_path, REDIS_URL="")  # empty, as in a copied .env.example: still unset
    added = ticker(below, {**env, "KITE_ACCOUNT_API_SECRET": "dev-json-secret"},
                   "accounts", "add", "devjson1", "--api-key", "k1")
    assert added.returncode == 0, added.stderr
    listed = ticker(below, env, "accounts", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [a["account_id"] for a in json.loads(listed.stdout)] == ["devjson1"]
    assert ticker(below, env, "migrate").stdout.strip() == "database is up to date"

    tail = ticker(below, env, "tail", "--seconds", "1")
    assert tail.returncode in (0, 1) and not tail.stderr.strip(), tail.stderr  # 1: no ticks in that second
    assert tail.stdout.startswith(f"{settings.publish_channel_prefix}:options")  # the dev.json prefix


def test_the_environment_wins_and_production_ignores_dev_json(settings: Settings, tmp_path: Path) -> None:
    write_dev_json(tmp_path, settings, new_key())
    refused = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    done = ticker(tmp_path, bare_env(tmp_path, DATABASE_URL=refused), "accounts", "list")
    assert str(urlsplit(refused).port) in one_line_failure(done, "accounts")
    assert "dev.json" not in done.stderr  # the failing setting did not come from it

    production = bare_env(tmp_path, ENVIRONMENT="production", API_KEY="trading-0123456789abcdefghijklmnopq",
                          ADMIN_API_KEY="admin-0123456789ABCDEFGHIJKLMNOPQRS", ACCOUNT_ENCRYPTION_KEY=new_key())
    line = one_line_failure(ticker(tmp_path, production, "accounts", "list"), "accounts")
    assert "set DATABASE_URL" in line and "make dev" not in line


def test_a_stale_dev_json_is_named_in_the_failure(settings: Settings, tmp_path: Path) -> None:
    write_dev_json(tmp_path, settings, new_key(), redis_url=f"redis://127.0.0.1:{free_port()}/0")
    line = one_line_failure(ticker(tmp_path, bare_env(tmp_path), "tail", "--seconds", "1"), "tail")
    assert "dev.json" in line and "make dev" in line and "connection refused" in line


def test_version(tmp_path: Path) -> None:
    done = ticker(tmp_path, bare_env(tmp_path), "--version")
    assert done.returncode == 0 and done.stdout.strip() == f"ticker {version('ticker-service')}"
