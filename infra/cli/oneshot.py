"""What the one-shot commands (`tail`, `accounts`, `migrate`) share: settings and reaching Redis and
PostgreSQL, failing with one line a person can act on instead of a traceback.

Unlike the long-running processes, which wait out an outage, a one-shot command that cannot reach
what it needs says which server, at which address (password hidden) and why, and exits 1; a setting
it needs and lacks exits 2. In dev the settings the environment leaves unset come from the nearest
`.ticker/dev.json` (see `ticker.infra.dev.devfile`).
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ticker.infra.dev.devfile import unset_in
from ticker.infra.runtime.settings import Settings, SettingsError, load_settings
from ticker.infra.runtime.startup import configure
from ticker.infra.stores.db import create_pool
from ticker.infra.stores.redis import connect
from ticker.infra.stores.tick_bus import connect_tick_bus, separate, tick_bus_url

# What a client raises when its server cannot be reached, refuses us, or goes away (OSError covers
# refused, DNS failures, missing unix sockets and timeouts). Errors in what a command asks of a
# reachable server are not here: those are bugs and keep their traceback.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError, RedisConnectionError, RedisTimeoutError, asyncpg.PostgresConnectionError,
    asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidCatalogNameError,
    asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError, asyncpg.AdminShutdownError,
    asyncpg.ClientConfigurationError)
# Connecting to Redis may also fail on an address redis-py cannot use (ValueError, TypeError).
REDIS_CONNECT_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, ValueError, TypeError)


class CliFailure(Exception):
    """Printed as `ticker <command>: <message>`; the process exits with `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class CliContext:
    settings: Settings
    dev_file: Path | None = None  # the dev.json that filled some settings, if any
    from_dev_file: set[str] = field(default_factory=set)

    def require(self, *names: str) -> None:
        """A CliFailure (exit 2) naming every missing setting and where it could come from."""
        try:
            self.settings.require(*names)
        except SettingsError as exc:
            hint = "" if self.settings.environment == "production" else (
                ", or run this next to a running `make dev` (it writes .ticker/dev.json)")
            raise CliFailure(f"{exc}{hint}", code=2) from None

    def origin(self, name: str) -> str:
        """Where a setting came from, for error messages: only said when it was the dev file."""
        if name in self.from_dev_file and self.dev_file is not None:
            return f" (from {self.dev_file}: is `make dev` still running?)"
        return ""


def cli_context(**overrides: object) -> CliContext:
    """Settings for a one-shot command: environment and `.env` first, then dev.json for the rest.
    Invalid settings are a CliFailure (exit 2)."""
    try:
        settings = load_settings(**overrides)
        dev_file, values = unset_in(settings)
        if values:
            settings = load_settings(**{**values, **overrides})
    except SettingsError as exc:
        raise CliFailure(str(exc), code=2) from None
    configure(settings)
    return CliContext(settings, dev_file, set(values))


def redact(url: str) -> str:
    """The URL with any password replaced by ***, safe to print."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable URL>"
    if not password:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def reason(exc: BaseException) -> str:
    """Why a connection failed, in a few words."""
    for cause in _chain(exc):
        if isinstance(cause, AuthenticationError | asyncpg.InvalidPasswordError):
            return "wrong user name or password"
        if isinstance(cause, ResponseError) and str(cause).startswith(("NOAUTH", "WRONGPASS")):
            return "wrong user name or password"
        if isinstance(cause, socket.gaierror):
            return "host name not found"
        if isinstance(cause, ConnectionRefusedError) or getattr(cause, "errno", None) == errno.ECONNREFUSED:
            return "connection refused"
        if isinstance(cause, FileNotFoundError):
            return "no server at that socket"
        if isinstance(cause, TimeoutError):
            return "timed out"
        if isinstance(cause, RedisConnectionError) and "closed" in str(cause):
            return "the server closed the connection"
        if isinstance(cause, asyncpg.PostgresError):
            return str(cause)  # e.g. role "x" does not exist, database "y" does not exist
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}{': ' + text if text else ''}"


def server_of(exc: BaseException) -> str:
    """Which server a connection error came from, as far as its type tells."""
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return "Redis"
    if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
        return "PostgreSQL"
    return "Redis or PostgreSQL"


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def unreachable(what: str, url: str, exc: BaseException, origin: str = "") -> CliFailure:
    return CliFailure(f"cannot reach {what} at {redact(url)}{origin}: {reason(exc)}")


async def reach_redis(ctx: CliContext) -> Redis:
    """A Redis client that has answered a PING (REDIS_URL required)."""
    ctx.require("redis_url")
    url = ctx.settings.redis_url
    assert url is not None  # require() raised otherwise
    return await _reach(ctx, connect(url), url, "Redis", "redis_url")


async def reach_tick_bus(ctx: CliContext) -> Redis:
    """A client of the tick bus (TICK_REDIS_URL, else REDIS_URL) that has answered a PING."""
    setting = "tick_redis_url" if ctx.settings.tick_redis_url else "redis_url"
    ctx.require(setting)
    what = "the tick-bus Redis" if separate(ctx.settings) else "Redis"
    return await _reach(ctx, connect_tick_bus(ctx.settings), tick_bus_url(ctx.settings), what, setting)


async def _reach(ctx: CliContext, redis: Redis, url: str, what: str, setting: str) -> Redis:
    try:
        await redis.ping()
    except REDIS_CONNECT_ERRORS as exc:
        await redis.aclose()
        raise unreachable(what, url, exc, ctx.origin(setting)) from None
    return redis


async def reach_postgres(ctx: CliContext, *, max_size: int = 2) -> asyncpg.Pool:
    """A PostgreSQL pool with one open connection (DATABASE_URL required)."""
    ctx.require("database_url")
    url = ctx.settings.database_url
    assert url is not None  # require() raised otherwise
    try:
        return await create_pool(url, min_size=1, max_size=max_size)
    except CONNECTION_ERRORS as exc:
        raise unreachable("PostgreSQL", url, exc, ctx.origin("database_url")) from None
