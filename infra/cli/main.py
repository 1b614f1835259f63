"""`ticker`: one console script, one subcommand per process (see the Procfile).

Each subcommand lives with the code it runs and is loaded by module name, so `infra` never imports
the process rooms: `ticker web` runs `ticker.http.web_process.main(argv)`, and so on.
"""

from __future__ import annotations

import asyncio
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "dev": ("ticker.infra.dev.run", "run the whole system locally on embedded Redis/Postgres and the Kite stand-in"),
    "web": ("ticker.http.web_process", "the HTTP API (enqueue-and-poll, subscriptions, WebSocket fan-out)"),
    "streamer": ("ticker.streamer.process.entrypoint", "the Kite WebSocket streamer: ticks + Greeks to Redis"),
    "worker": ("ticker.jobs.worker", "an arq worker running order and data jobs"),
    "scheduler": ("ticker.jobs.schedule.scheduler", "the periodic-job scheduler (enqueues only)"),
    "sim": ("ticker.infra.kitesim.cli", "the Kite Connect stand-in (REST + ticker WebSocket)"),
    "migrate": ("ticker.infra.cli.main", "apply pending database migrations"),
    "accounts": ("ticker.infra.cli.accounts_cli", "add, list, remove Kite accounts and set their tokens"),
    "tail": ("ticker.infra.cli.tail", "a live terminal view of what tick subscribers receive"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {desc}" for name, (_, desc) in COMMANDS.items()]
    return "usage: ticker <command> [options]\n\ncommands:\n" + "\n".join(lines) + (
        "\n\nRun `ticker <command> --help` for a command's options."
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"ticker: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
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


def migrate_main(argv: list[str]) -> int:
    import argparse

    from ticker.infra.runtime.startup import init_process
    from ticker.infra.stores.migrate import migrate

    parser = argparse.ArgumentParser(prog="ticker migrate", description="Apply pending SQL migrations "
                                     "(idempotent; safe to run from several replicas at once).")
    parser.add_argument("--database-url", help="defaults to DATABASE_URL")
    args = parser.parse_args(argv)
    settings = init_process()
    url = args.database_url or settings.database_url
    if not url:
        print("ticker migrate: set DATABASE_URL (or pass --database-url)", file=sys.stderr)
        return 2
    applied = asyncio.run(migrate(url))
    print(f"applied migrations: {', '.join(map(str, applied))}" if applied else "database is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
