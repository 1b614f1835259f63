"""`ticker`: one console script, one subcommand per process (see the Procfile).

Each subcommand lives with the code it runs and is loaded by module name, so `infra` never imports
the process rooms: `ticker web` runs `ticker.http.web_process.main(argv)`, and so on.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ticker.infra.cli.oneshot import CliContext

COMMANDS: dict[str, tuple[str, str]] = {
    "dev": ("ticker.infra.dev.run", "run the whole system locally on embedded Redis/Postgres and the Kite stand-in"),
    "web": ("ticker.http.web_process", "the HTTP API (enqueue-and-poll, subscriptions, WebSocket fan-out)"),
    "streamer": ("ticker.streamer.process.entrypoint", "the Kite WebSocket streamer: ticks + Greeks to Redis"),
    "worker": ("ticker.jobs.worker", "an arq worker running order and data jobs"),
    "scheduler": ("ticker.jobs.schedule.scheduler", "the periodic-job scheduler (enqueues only)"),
    "sim": ("ticker.infra.kitesim.cli", "the Kite Connect stand-in (REST + ticker WebSocket)"),
    "sim-setup": ("ticker.infra.dev.standin_setup",
                  "register the stand-in's accounts, load instruments, seed strikes (as `dev` does at start)"),
    "migrate": ("ticker.infra.cli.main", "apply pending database migrations"),
    "accounts": ("ticker.infra.cli.accounts_cli", "add, list, remove Kite accounts and set their tokens"),
    "tail": ("ticker.infra.cli.tail", "a live terminal view of what tick subscribers receive"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {desc}" for name, (_, desc) in COMMANDS.items()]
    return "usage: ticker <command> [options]   (ticker --version)\n\ncommands:\n" + "\n".join(lines) + (
        "\n\nRun `ticker <command> --help` for a command's options."
    )


# Commands that do one thing and end: they fail fast, with one line, when a server is out of reach.
# The others are services that wait for Redis and PostgreSQL to come (back).
ONE_SHOT = frozenset({"migrate", "accounts", "tail", "sim-setup"})


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("ticker-service")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"ticker {version()}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"ticker: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    try:
        return run_command(name, rest)
    except KeyboardInterrupt:  # Ctrl-C before a command set up its own handling: no traceback for that
        print(f"ticker {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        message, code = failure(name, exc)
        if message is None:
            raise
        print(f"ticker {name}: {message}", file=sys.stderr)
        return code


def run_command(name: str, rest: list[str]) -> int:
    if name == "migrate":
        return migrate_main(rest)
    module_name = COMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        print(f"ticker {name}: not yet available in this build", file=sys.stderr)
        return 2
    return int(module.main(rest) or 0)


def failure(name: str, exc: Exception) -> tuple[str | None, int]:
    """The one line and exit status for an error that reached the top; (None, _) to let it raise.

    A setting that is missing or invalid is the user's to fix, from any command. A server out of
    reach ends only a one-shot command this way; a service that fails on one at start-up is a bug
    worth its traceback, since services are meant to wait."""
    from ticker.infra.cli.oneshot import CONNECTION_ERRORS, CliFailure, reason, server_of
    from ticker.infra.runtime.settings import SettingsError

    if isinstance(exc, CliFailure):
        return str(exc), exc.code
    if isinstance(exc, SettingsError):
        return str(exc), 2
    if name in ONE_SHOT and isinstance(exc, CONNECTION_ERRORS):
        return f"lost the connection to {server_of(exc)}: {reason(exc)}", 1
    return None, 1


def migrate_main(argv: list[str]) -> int:
    import argparse

    from ticker.infra.cli.oneshot import cli_context

    parser = argparse.ArgumentParser(prog="ticker migrate", description="Apply pending SQL migrations "
                                     "(idempotent; safe to run from several replicas at once).")
    parser.add_argument("--database-url", help="defaults to DATABASE_URL")
    args = parser.parse_args(argv)
    ctx = cli_context(**({"database_url": args.database_url} if args.database_url else {}))
    applied = asyncio.run(_migrate(ctx))
    print(f"applied migrations: {', '.join(map(str, applied))}" if applied else "database is up to date")
    return 0


async def _migrate(ctx: CliContext) -> list[int]:
    from ticker.infra.cli.oneshot import reach_postgres
    from ticker.infra.stores.migrate import migrate

    pool = await reach_postgres(ctx, max_size=1)  # one clear line when PostgreSQL is out of reach
    await pool.close()
    assert ctx.settings.database_url is not None  # reach_postgres required it
    return await migrate(ctx.settings.database_url)


if __name__ == "__main__":
    sys.exit(main())
