"""`ticker sim`: run the Kite Connect stand-in until SIGTERM/SIGINT (exit 0)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from pydantic import ValidationError

from ticker.infra.kitesim.config import SimConfig

log = logging.getLogger("ticker.sim")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ticker sim", description="A Kite Connect stand-in: REST at "
                                "http://HOST:PORT, the ticker WebSocket at ws://HOST:PORT/ws, admin "
                                "API at /_sim/ (see ticker.infra.kitesim.admin).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8780)
    p.add_argument("--seed", type=int, default=1, help="same seed: same instruments, prices, history")
    p.add_argument("--profile", choices=("small", "full"), default="small",
                   help="small: four indices' chains; full: an NFO-sized universe (~90k rows)")
    p.add_argument("--market-hours", choices=("always", "nse"), default="always",
                   help="always: the market is open at any hour; nse: 09:15-15:30 IST on weekdays")
    p.add_argument("--accounts", metavar="FILE_OR_N", default="1",
                   help="a YAML/JSON list of accounts, or how many default accounts to create")
    p.add_argument("--redirect-url", help="where /connect/login redirects (default /_sim/callback)")
    p.add_argument("--tick-interval-ms", type=int, default=500)
    p.add_argument("--tick-rate", type=float, help="ticks per second per instrument (default: every interval)")
    p.add_argument("--ticks-per-second", type=float, help="total tick target across all connections")
    p.add_argument("--order-rate-limit", type=int, default=10, help="orders/s per api_key (0 disables)")
    p.add_argument("--drop-every", type=float, metavar="S", help="drop every ticker connection every S seconds")
    p.add_argument("--error-rate", type=float, default=0.0, help="random 500/502/503 share of REST calls")
    p.add_argument("--latency-ms", type=float, default=0.0, help="added to every REST call")
    p.add_argument("--timeout-seconds", type=float, default=10.0, help="how long a timeout fault withholds")
    return p


def config_from(args: argparse.Namespace) -> SimConfig:
    accounts: dict = {}
    if args.accounts.isdigit():
        accounts["accounts"] = int(args.accounts)
    else:
        accounts["accounts_file"] = Path(args.accounts)
    return SimConfig(
        host=args.host, port=args.port, seed=args.seed, profile=args.profile,
        market_hours=args.market_hours, redirect_url=args.redirect_url,
        tick_interval_ms=args.tick_interval_ms, tick_rate=args.tick_rate,
        ticks_per_second=args.ticks_per_second, order_rate_limit=args.order_rate_limit,
        drop_every_seconds=args.drop_every, error_rate=args.error_rate, latency_ms=args.latency_ms,
        timeout_seconds=args.timeout_seconds, **accounts,
    )


async def serve(config: SimConfig) -> None:
    from ticker.infra.kitesim.app import running_sim

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with running_sim(config, config.host, config.port) as sim:
        # Credentials stay out of the output; a user fetches them from the admin API on purpose.
        print(f"kite sim listening on {sim.url} (ws {sim.ws_url}); {len(sim.state.universe)} instruments; "
              f"{len(sim.accounts)} account(s), credentials at {sim.url}/_sim/accounts", flush=True)
        await stop.wait()
    print("kite sim stopped", flush=True)


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        config = config_from(args)
    except (ValidationError, ValueError) as exc:
        print(f"ticker sim: invalid options: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        print(f"ticker sim: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
