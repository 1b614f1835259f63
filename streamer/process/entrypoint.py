"""`ticker streamer`: the Kite WebSocket streamer (ticks + Greeks to Redis) as a process.

Runs until SIGTERM/SIGINT, then stops reading, flushes the last batch, closes its sockets and
exits 0. Serves /health and /metrics on STREAMER_PORT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import sys
import uuid

import asyncpg
from aiohttp import web
from redis.exceptions import RedisError

from ticker.infra.runtime.outage import Outage
from ticker.infra.runtime.settings import Settings, SettingsError
from ticker.infra.runtime.startup import init_process, stop_event
from ticker.streamer.process.status_app import build_app
from ticker.streamer.process.wiring import Clients, Streamer

log = logging.getLogger(__name__)


def default_instance() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ticker streamer",
        description="Stream Kite ticks with option Greeks to Redis (settings come from the environment).")
    parser.add_argument("--port", type=int, help="port for /health and /metrics (default STREAMER_PORT)")
    parser.add_argument("--host", help="interface to bind (default HOST)")
    parser.add_argument("--instance", help="replica name used for leases and heartbeats (default: host-pid)")
    return parser.parse_args(argv)


async def _open_clients(settings: Settings, stop: asyncio.Event) -> Clients | None:
    """The streamer's clients, waiting out Redis or PostgreSQL being down when it starts."""
    outage = Outage("redis or postgres")
    while not stop.is_set():
        try:
            clients = await Clients.open(settings)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, RedisError) as exc:
            delay = outage.failed(exc, "starting the streamer")
        else:
            outage.ok()
            return clients
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
    return None


async def serve(settings: Settings, *, host: str, port: int, instance: str) -> int:
    stop = stop_event()
    clients = await _open_clients(settings, stop)
    if clients is None:  # stopped before Redis and PostgreSQL ever answered
        return 0
    streamer = Streamer(settings, clients, instance)
    runner = web.AppRunner(build_app(streamer.health, streamer.metrics.registry), access_log=None)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            log.error("streamer cannot listen", extra={"host": host, "port": port, "error": str(exc)[:200]})
            return 2
        await streamer.start()
        log.info("streamer running", extra={"instance": instance, "port": port})
        await stop.wait()
        log.info("streamer stopping", extra={"instance": instance})
    finally:
        await streamer.stop()
        await runner.cleanup()
    log.info("streamer stopped", extra={"instance": instance, "published": streamer.publisher.published_total})
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    settings = init_process()
    try:
        settings.require("redis_url", "database_url")
    except SettingsError as exc:
        print(f"ticker streamer: {exc}", file=sys.stderr)
        return 2
    port = args.port or settings.streamer_port
    if not 0 <= port < 65536:
        print("ticker streamer: --port must be between 0 and 65535", file=sys.stderr)
        return 2
    return asyncio.run(serve(settings, host=args.host or settings.host, port=port,
                             instance=args.instance or default_instance()))


if __name__ == "__main__":
    sys.exit(main())
