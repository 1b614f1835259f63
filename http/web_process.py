"""`ticker web [--host H] [--port P]`: the HTTP API process.

SIGTERM/SIGINT: stop listening, let in-flight requests finish (up to HTTP_SHUTDOWN_SECONDS), close
WebSocket clients with 1001, release the pools, exit 0. A configuration that cannot run (for
example production without an API key) prints what to set and exits 2 before binding a port.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from aiohttp import web

from ticker.http.app import create_app
from ticker.http.middleware.edge import ApiRunner
from ticker.infra.runtime.settings import Settings, SettingsError
from ticker.infra.runtime.startup import init_process, stop_event

log = logging.getLogger("ticker.http")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ticker web", description="Serve the HTTP API and /ws/ticks.")
    parser.add_argument("--host", help="interface to bind (default: HOST, 0.0.0.0)")
    parser.add_argument("--port", type=int, help="TCP port (default: PORT, 8080)")
    return parser.parse_args(argv)


async def serve(settings: Settings, host: str, port: int) -> None:
    app = create_app(settings)
    runner = ApiRunner(app, handle_signals=False, access_log=None,
                           shutdown_timeout=settings.http_shutdown_seconds)
    await runner.setup()
    try:
        stop = stop_event()
        site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
        await site.start()
        log.info("web listening", extra={"host": host, "port": port})
        print(f"ticker web: listening on http://{host}:{port}", flush=True)
        await stop.wait()
        log.info("web stopping: draining in-flight requests")
    finally:
        await runner.cleanup()
    log.info("web stopped")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = init_process(**overrides)
    try:
        settings.require("redis_url", "database_url")
    except SettingsError as exc:
        print(f"ticker web: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(settings, settings.host, settings.port))
    except OSError as exc:
        print(f"ticker web: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0
