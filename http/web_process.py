"""`ticker web [--host H] [--port P]`: the HTTP API process.

SIGTERM/SIGINT: stop listening, let in-flight requests finish (up to HTTP_SHUTDOWN_SECONDS), close
WebSocket clients with 1001, release the pools, exit 0. A configuration that cannot run (for
example production without an API key) prints what to set and exits 2 before binding a port.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys

from aiohttp import web

from ticker.http.app import create_app
from ticker.http.middleware.edge import ApiRunner
from ticker.infra.runtime.settings import Settings, SettingsError
from ticker.infra.runtime.startup import init_process, stop_event

log = logging.getLogger("ticker.http")

# A request allocates many short-lived objects and keeps almost none. With the collector's default
# (a young-generation pass every 700 net allocations) 64 requests in flight crossed that line all
# the time: hundreds of passes a second, ~8% of the process's CPU, each also walking the objects it
# moved to the older generations. The objects startup builds (modules, models, pools) live as long
# as the process, so they are frozen out of every pass, and the young generation may grow further
# before one (cyclic garbage waits a little longer, tens of thousands of objects at most).
GC_YOUNG_THRESHOLD = 20_000


def tune_gc() -> None:
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


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
    tune_gc()
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
