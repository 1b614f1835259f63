"""`ticker accounts`: a round trip through the real command, secrets from the environment or a prompt."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import orjson
import pytest
import redis as sync_redis

from ticker.infra.cli import accounts_cli
from ticker.infra.runtime.settings import Settings
from ticker.infra.stores.accounts import account_store

SECRETS = {"KITE_ACCOUNT_API_SECRET": "api-secret-value-1", "KITE_ACCOUNT_USER_ID": "ZX9876",
           "KITE_ACCOUNT_PASSWORD": "hunter2-pass", "KITE_ACCOUNT_TOTP_SECRET": "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"}


@pytest.fixture(autouse=True)
def _keep_logging() -> None:
    """The command configures logging for its process; give pytest its handlers back afterwards."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, settings: Settings, private_db_url: str) -> Settings:
    monkeypatch.chdir(tmp_path)
    for name in list(accounts_cli.ENV.values()):
        monkeypatch.delenv(name, raising=False)
    env = {"DATABASE_URL": private_db_url, "REDIS_URL": settings.redis_url, "ENVIRONMENT": "test",
           "ACCOUNT_ENCRYPTION_KEY": settings.account_encryption_key.get_secret_value(),
           "REDIS_NAMESPACE": settings.redis_namespace, "PUBLISH_CHANNEL_PREFIX": settings.publish_channel_prefix,
           "SECRETS_BACKEND": "fernet", "LOG_FORMAT": "text"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    asyncio.run(_sql(private_db_url, "TRUNCATE kite_accounts"))
    return settings.model_copy(update={"database_url": private_db_url})


async def _sql(url: str, query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def _stored(settings: Settings, account_id: str):
    from ticker.infra.stores.db import create_pool

    pool = await create_pool(settings.database_url)
    try:
        return await account_store(pool, settings).get(account_id)
    finally:
        await pool.close()


def _next_of_type(pubsub: sync_redis.client.PubSub, kind: str, timeout: float = 60.0) -> dict:
    """The pubsub's next message of this type ("subscribe" confirmation, "message")."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1.0)
        if message is not None and message["type"] == kind:
            return message
    pytest.fail(f"no {kind} on the control channel within {timeout}s")


def _run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return accounts_cli.main(list(argv), out=out), out.getvalue()


def test_add_list_set_token_remove(cli_env: Settings, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    code, out = _run("add", "desk-1", "--api-key", "kite_key_1", "--auto-login")
    assert (code, out.strip()) == (0, "added account desk-1")

    code, out = _run("list", "--json")
    [listed] = orjson.loads(out)
    assert listed["account_id"] == "desk-1" and listed["auto_login"] is True
    assert listed["has_api_secret"] and listed["has_totp_secret"] and not listed["has_access_token"]
    rows = asyncio.run(_sql(cli_env.database_url, "SELECT * FROM kite_accounts"))
    raw = b"".join(bytes(v) for k, v in rows[0].items() if k.endswith("_enc") and v is not None)
    assert all(s.encode() not in raw for s in SECRETS.values())

    control = sync_redis.Redis.from_url(cli_env.redis_url).pubsub()
    control.subscribe(f"{cli_env.redis_namespace}:control")
    _next_of_type(control, "subscribe")  # listening before the command publishes
    monkeypatch.setenv("KITE_ACCOUNT_ACCESS_TOKEN", "new-access-token-77")
    code, out = _run("set-token", "desk-1")
    assert code == 0 and "streamer was told" in out
    message = _next_of_type(control, "message")
    control.close()
    assert orjson.loads(message["data"])["account_id"] == "desk-1"
    assert orjson.loads(message["data"])["kind"] == "tokens"
    stored = asyncio.run(_stored(cli_env, "desk-1"))
    assert stored.secret("access_token") == "new-access-token-77"
    assert stored.secret("password") == "hunter2-pass"

    code, table = _run("list")
    assert "desk-1" in table and "kite_key_1" in table
    assert (code, _run("remove", "desk-1")) == (0, (0, "removed account desk-1\n"))
    assert _run("remove", "desk-1")[0] == 2
    captured = capsys.readouterr()
    for secret in [*SECRETS.values(), "new-access-token-77"]:
        assert secret not in out + table + captured.out + captured.err
    assert "no account 'desk-1'" in captured.err


def test_missing_and_bad_secrets_are_refused_clearly(cli_env: Settings, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    assert _run("add", "desk-2", "--api-key", "k2")[0] == 2
    assert "KITE_ACCOUNT_API_SECRET" in capsys.readouterr().err

    monkeypatch.setenv("KITE_ACCOUNT_API_SECRET", "api-secret-value-2")
    assert _run("add", "desk-2", "--api-key", "k2", "--auto-login")[0] == 2
    assert "KITE_ACCOUNT_USER_ID" in capsys.readouterr().err

    for k in ("KITE_ACCOUNT_USER_ID", "KITE_ACCOUNT_PASSWORD"):
        monkeypatch.setenv(k, SECRETS[k])
    monkeypatch.setenv("KITE_ACCOUNT_TOTP_SECRET", "not base32!")
    assert _run("add", "desk-2", "--api-key", "k2", "--auto-login")[0] == 2
    assert "base32" in capsys.readouterr().err
    assert asyncio.run(_stored(cli_env, "desk-2")) is None

    with pytest.raises(SystemExit) as info:
        _run("add", "bad id", "--api-key", "k")
    assert info.value.code == 2
    assert _run("set-token", "nobody")[0] == 2


def test_secrets_are_prompted_without_echo_on_a_terminal(cli_env: Settings, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    asked: list[str] = []
    answers = {"api secret": "prompted-secret-9", "access token (empty to skip)": ""}

    def fake_getpass(prompt: str) -> str:  # stands in for the terminal, not for the code under test
        asked.append(prompt.rstrip(": "))
        return answers[asked[-1]]

    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr(accounts_cli.getpass, "getpass", fake_getpass)
    assert _run("add", "desk-3", "--api-key", "k3") == (0, "added account desk-3\n")
    assert asked == ["api secret", "access token (empty to skip)"]
    stored = asyncio.run(_stored(cli_env, "desk-3"))
    assert stored.secret("api_secret") == "prompted-secret-9" and stored.access_token is None
    assert "prompted-secret-9" not in capsys.readouterr().out


def test_the_ticker_command_runs_it(cli_env: Settings, tmp_path: Path) -> None:
    import os

    env = {**os.environ, **SECRETS}
    done = subprocess.run([sys.executable, "-m", "ticker.infra.cli.main", "accounts", "add", "desk-4",
                           "--api-key", "k4"], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "added account desk-4"
    assert all(s not in done.stdout + done.stderr for s in SECRETS.values())
    assert asyncio.run(_stored(cli_env, "desk-4")).secret("api_secret") == SECRETS["KITE_ACCOUNT_API_SECRET"]
