"""The foundation: packaging, settings, migrations, logging redaction, the CLI, the house rules."""

from __future__ import annotations

import ast
import asyncio
import io
import logging
import os
import pathlib
import re
import subprocess
import sys
import uuid

import asyncpg
import pytest

from tests.databases import drop_database, with_database
from ticker.infra.runtime.logs import RedactingFilter, TextFormatter, register_secret
from ticker.infra.runtime.settings import SettingsError, load_settings
from ticker.infra.stores.crypto import SecretBox, SecretBoxError, new_key
from ticker.infra.stores.migrate import available, migrate
from ticker.infra.stores.tick_bus import separate, tick_bus_url

ROOT = pathlib.Path(__file__).resolve().parents[1]
TICKER = str(pathlib.Path(sys.executable).with_name("ticker"))


def run(args: list[str], env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("API_KEY", "ENVIRONMENT"))}
    full_env.update(env or {})
    return subprocess.run(args, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=120, **kw)


# --- packaging ---------------------------------------------------------------------------------
def test_stdlib_http_is_not_shadowed_and_ticker_http_imports() -> None:
    assert not (ROOT / "http" / "__init__.py").exists()
    proc = run([sys.executable, "-c", "import aiohttp, http; assert http.HTTPStatus; import ticker.http; print('ok')"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


ROOMS = {"streamer", "jobs", "http"}


# The one composition root: `ticker <command>` starts a process room by name, importing it only then.
COMPOSITION_ROOT = pathlib.Path("infra/cli/main.py")
_MODULE_NAME = re.compile(r"ticker(\.[a-z_]+)+")


def _imports(path: pathlib.Path) -> set[str]:
    """Modules a file imports: import statements, and names it hands to importlib."""
    tree = ast.parse(path.read_text())
    found = set()
    dynamic = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
            dynamic |= any(a.name == "importlib" for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            dynamic |= node.module == "importlib"
    if dynamic:  # a module that imports by name: every dotted ticker name it holds counts as an import
        found.update(node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
                     and isinstance(node.value, str) and _MODULE_NAME.fullmatch(node.value))
    return found


def test_dynamic_imports_are_seen() -> None:
    """A room named only in a string handed to importlib still counts."""
    assert "ticker.http.web_process" in _imports(ROOT / COMPOSITION_ROOT)
    assert "ticker.jobs.orders.order_jobs" in _imports(ROOT / "jobs" / "functions.py")


@pytest.mark.parametrize("folder", ["core", "infra", "streamer", "jobs", "http"])
def test_layering_rules(folder: str) -> None:
    """core is pure; infra sees only core; the three process rooms never import each other."""
    allowed_rooms = {folder} if folder in ROOMS else set()
    for path in (ROOT / folder).rglob("*.py"):
        if path.relative_to(ROOT) == COMPOSITION_ROOT:
            continue
        for mod in _imports(path):
            parts = mod.split(".")
            if parts[0] != "ticker" or len(parts) < 2:
                continue
            if parts[1] in ROOMS:
                assert parts[1] in allowed_rooms, f"{path.relative_to(ROOT)} imports {mod}"
            if folder == "core":
                assert parts[1] == "core", f"{path.relative_to(ROOT)} imports {mod}"
        if folder == "core":
            io_libs = {"aiohttp", "redis", "asyncpg", "asyncio", "socket", "requests", "arq", "boto3"}
            bad = {m.split(".")[0] for m in _imports(path)} & io_libs
            assert not bad, f"{path.relative_to(ROOT)} does I/O via {bad}"


def test_the_client_folder_is_installed_as_ticker_client_only() -> None:
    """infra/client/ is the package `ticker.client` (pyproject maps it): nothing imports it by its
    folder, as `ticker.infra.client`, which would load its modules twice under two names."""
    import ticker.client

    assert pathlib.Path(ticker.client.__file__).parent == ROOT / "infra" / "client"
    for folder in ("core", "infra", "streamer", "jobs", "http", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            assert not {m for m in _imports(path) if m.startswith("ticker.infra.client")}, path


# --- settings ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"port": 70000}, "PORT"),
        ({"redis_url": "http://x"}, "REDIS_URL"),
        ({"tick_redis_url": "http://x"}, "TICK_REDIS_URL"),
        ({"database_url": "mysql://x"}, "DATABASE_URL"),
        ({"market_timezone": "Mars/Olympus"}, "MARKET_TIMEZONE"),
        ({"tick_batch_max_size": 0}, "TICK_BATCH_MAX_SIZE"),
        ({"account_encryption_key": "not-a-key"}, "ACCOUNT_ENCRYPTION_KEY"),
    ],
)
def test_invalid_settings_name_the_field(override: dict, field: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(**override)
    assert field in str(err.value)


def test_the_tick_bus_is_redis_urls_unless_tick_redis_url_names_another() -> None:
    main, other = "redis://127.0.0.1:6379/0", "rediss://tick-bus:6380/0"
    assert (tick_bus_url(load_settings(redis_url=main)), separate(load_settings(redis_url=main))) == (main, False)
    assert not separate(load_settings(redis_url=main, tick_redis_url=main))
    apart = load_settings(redis_url=main, tick_redis_url=other)
    assert (tick_bus_url(apart), separate(apart)) == (other, True)


def test_defaults_match_the_documented_knobs() -> None:
    s = load_settings()
    assert (s.publish_channel_prefix, s.tick_batch_window_ms, s.tick_batch_max_size) == ("ticker:nifty", 100, 1000)
    assert (s.max_ws_connections, s.max_instruments_per_ws, s.market_timezone) == (3, 3000, "Asia/Kolkata")


TRADING_KEY = "trading-0123456789abcdefghijklmnopq"
ADMIN_KEY = "admin-0123456789ABCDEFGHIJKLMNOPQRS"


def test_production_refuses_without_keys() -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(environment="production", api_key="short", admin_api_key=ADMIN_KEY,
                      account_encryption_key=new_key())
    assert "API_KEY must be at least 32 characters" in str(err.value)
    with pytest.raises(SettingsError) as err:
        load_settings(environment="production", api_key=TRADING_KEY, admin_api_key=ADMIN_KEY)
    assert "ACCOUNT_ENCRYPTION_KEY" in str(err.value)
    ok = load_settings(environment="production", api_key=TRADING_KEY, admin_api_key=ADMIN_KEY,
                       account_encryption_key=new_key())
    assert ok.environment == "production"


@pytest.mark.parametrize(("api_key", "admin_key", "rule"), [
    (" " * 32, ADMIN_KEY, "API_KEY must contain at least 10 distinct characters"),
    ("ab" * 20, ADMIN_KEY, "API_KEY must contain at least 10 distinct characters"),
    ("0123456789" * 3 + "x", ADMIN_KEY, "API_KEY must be at least 32 characters"),
    (TRADING_KEY, None, "ADMIN_API_KEY is required"),
    (TRADING_KEY, "", "ADMIN_API_KEY is required"),
    (TRADING_KEY, "k" * 40, "ADMIN_API_KEY must contain at least 10 distinct characters"),
    (TRADING_KEY, "admin-123", "ADMIN_API_KEY must be at least 32 characters"),
    (TRADING_KEY, TRADING_KEY, "ADMIN_API_KEY must differ from API_KEY"),
])
def test_production_refuses_weak_or_shared_keys_naming_the_rule(api_key, admin_key, rule) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(environment="production", api_key=api_key, admin_api_key=admin_key,
                      account_encryption_key=new_key())
    assert rule in str(err.value)


def test_outside_production_keys_are_optional_and_empty_means_unset() -> None:
    s = load_settings(environment="development", api_key="", admin_api_key="")
    assert s.api_key_value is None and s.admin_api_key_value is None
    assert load_settings(environment="development", api_key="short").api_key_value == "short"


def test_production_process_refuses_to_start_with_a_clear_message() -> None:
    proc = run([TICKER, "migrate"], env={"ENVIRONMENT": "production"})
    assert proc.returncode == 2
    assert "API_KEY" in proc.stderr and "Traceback" not in proc.stderr


def test_env_example_documents_every_setting() -> None:
    from ticker.infra.runtime.settings import Settings

    documented = {
        line.split("=", 1)[0].lstrip("# ").strip()
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line and line.lstrip("# ")[:1].isupper()
    }
    missing = {name.upper() for name in Settings.model_fields} - documented
    assert not missing, f".env.example lacks {sorted(missing)}"


# --- logging and secrets -----------------------------------------------------------------------
def test_secrets_and_pii_are_redacted_from_logs() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(TextFormatter())
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    secret = "s3cr3tAccessTokenValue0123456789"
    register_secret(secret)
    try:
        logger.warning("login ok token=%s for trader@example.com phone +91 9876543210", secret)
        logger.warning("header Authorization: token kitekey:abcdef0123456789", extra={"password": "hunter22"})
        logger.warning("request_token=zzz111 api_secret=qqq222 totp_secret=JBSWY3DPEHPK3PXP")
        logger.warning("job scheduler_probe-7097382014d49a233d862b17 enqueued; call 8123456789")
        try:
            raise RuntimeError(f"failed with {secret}")
        except RuntimeError:
            logger.exception("boom")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    for leaked in (secret, "trader@example.com", "9876543210", "abcdef0123456789", "hunter22",
                   "zzz111", "qqq222", "JBSWY3DPEHPK3PXP"):
        assert leaked not in out, f"{leaked} leaked: {out}"
    assert out.count("***") >= 9
    assert "scheduler_probe-7097382014d49a233d862b17" in out  # ten digits inside a hex id are not a phone


def test_secret_box_round_trip_and_rotation() -> None:
    old, new = new_key(), new_key()
    token = SecretBox(old).encrypt("access-token-1")
    rotated_box = SecretBox(f"{new},{old}")
    assert rotated_box.decrypt(token) == "access-token-1"
    rotated = rotated_box.rotate(token)
    assert SecretBox(new).decrypt(rotated) == "access-token-1"
    with pytest.raises(SecretBoxError):
        SecretBox(new_key()).decrypt(token)


# --- migrations --------------------------------------------------------------------------------
async def _empty_database(admin_url: str, name: str) -> str:
    """A database with no schema at all (the shared helper would migrate it)."""
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(admin_url, name)


async def test_migrations_are_idempotent_and_safe_concurrently(database_url: str) -> None:
    name = f"ticker_mig_{uuid.uuid4().hex[:8]}"
    url = await _empty_database(database_url, name)
    try:
        results = await asyncio.gather(migrate(url), migrate(url), migrate(url))
        applied = sorted(v for r in results for v in r)
        assert applied == [m.version for m in available()], "each migration applied exactly once"
        assert await migrate(url) == []
        conn = await asyncpg.connect(url)
        tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
        await conn.close()
        assert {"instruments", "subscriptions", "kite_accounts", "order_requests", "order_attempts",
                "dead_letters", "schema_migrations"} <= tables
    finally:
        await drop_database(database_url, name)


def test_ticker_migrate_cli_twice(database_url: str) -> None:
    name = f"ticker_mig_{uuid.uuid4().hex[:8]}"
    url = asyncio.run(_empty_database(database_url, name))
    try:
        first = run([TICKER, "migrate"], env={"DATABASE_URL": url})
        assert first.returncode == 0, first.stderr
        assert "applied migrations: 1" in first.stdout
        second = run([TICKER, "migrate"], env={"DATABASE_URL": url})
        assert second.returncode == 0 and "up to date" in second.stdout
    finally:
        asyncio.run(drop_database(database_url, name))


# --- real servers ------------------------------------------------------------------------------
async def test_session_servers_are_real_and_isolated(redis, db, names) -> None:
    key = names.key("probe")
    await redis.set(key, "1", ex=5)
    assert await redis.get(key) == b"1"
    assert await db.fetchval("SELECT count(*) FROM schema_migrations") == len(available())
    assert (await db.fetchval("SELECT current_database()")).startswith("ticker_test_")


def test_cli_lists_every_process_command() -> None:
    proc = run([TICKER, "--help"])
    assert proc.returncode == 0
    for cmd in ("dev", "web", "streamer", "worker", "scheduler", "sim", "migrate"):
        assert f"  {cmd}" in proc.stdout


def test_module_and_class_names_are_unique() -> None:
    """A name says where it lives: no two modules share a file name, no two classes a name."""
    sources = [p for folder in ("core", "infra", "streamer", "jobs", "http") for p in (ROOT / folder).rglob("*.py")
               if p.name not in ("__init__.py", "__main__.py")]
    modules: dict[str, list[str]] = {}
    classes: dict[str, list[str]] = {}
    for path in sources:
        where = str(path.relative_to(ROOT))
        modules.setdefault(path.name, []).append(where)
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                classes.setdefault(node.name, []).append(where)
    assert not {n: w for n, w in modules.items() if len(w) > 1}
    assert not {n: w for n, w in classes.items() if len(w) > 1}
