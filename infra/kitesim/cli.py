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
    p = argparse.ArgumentParser(
        prog="ticker sim", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="A Kite Connect stand-in: REST at http://HOST:PORT, the ticker WebSocket at "
                    "ws://HOST:PORT/ws, admin API at /_sim/ (see ticker.infra.kitesim.admin).",
        epilog="""Kite's 2026 rules, enforced as Kite enforces them:
  - every REST call sends X-Kite-Version: 3 (else 400 InputException)
  - MARKET and SL-M orders carry market_protection: -1 (automatic) or 1..100 (percent)
  - quantity is a lot multiple and within the freeze quantity unless autoslice=true
    (at most 10 slices); co needs trigger_price; iceberg needs iceberg_legs (2..10) and
    iceberg_quantity; validity=TTL needs validity_ttl; modify/cancel name the order's variety
  - per-user rate limits: orders 10/s, 400/min, 5,000/day; quote 1/s; historical 3/s;
    everything else 10/s; beyond: 429 NetworkException "Too many requests"
  - quote takes up to 500 instruments, ltp and ohlc up to 1,000
  - contracts follow NSE's dated specifications (lot sizes from the January 2026 series:
    NIFTY 65, BANKNIFTY 30, FINNIFTY 60, MIDCPNIFTY 120; freeze quantities; Tuesday expiries
    moved off NSE holidays) and the market closes on NSE holidays (--market-hours nse)
  - order postbacks carry app_id and checksum = sha256(order_id + order_timestamp + api_secret)
  - with --order-ip-allowlist, order requests from other addresses: 403 PermissionException""")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8780)
    p.add_argument("--seed", type=int, default=1, help="same seed: same instruments, prices, history")
    p.add_argument("--profile", choices=("small", "full"), default="small",
                   help="small: four indices' chains; full: an NFO-sized universe (~90k rows)")
    p.add_argument("--market-hours", choices=("always", "nse"), default="always",
                   help="always: the market is open at any hour; nse: 09:15-15:30 IST on NSE trading days")
    p.add_argument("--accounts", metavar="FILE_OR_N", default="1",
                   help="a YAML/JSON list of accounts, or how many default accounts to create")
    p.add_argument("--redirect-url", help="where /connect/login redirects (default /_sim/callback)")
    p.add_argument("--postback-url", help="where order postbacks (COMPLETE, CANCELLED, REJECTED, UPDATE) "
                   "are POSTed for accounts that name none")
    p.add_argument("--order-ip-allowlist", metavar="IP[,IP...]", default="",
                   help="static IPs order requests (place/modify/cancel, GTT writes) must come from; others get "
                   "403 PermissionException (default: any address)")
    p.add_argument("--tick-interval-ms", type=int, default=500)
    p.add_argument("--tick-phases", choices=("staggered", "aligned"), default="staggered",
                   help="staggered: each connection's frames at its own stable phase of the interval, as "
                   "independent sockets; aligned: every connection's frame at the same instant (worst case)")
    p.add_argument("--tick-rate", type=float, help="ticks per second per instrument (default: every interval)")
    p.add_argument("--ticks-per-second", type=float, help="total tick target across all connections")
    p.add_argument("--order-rate-limit", type=int, default=10, help="order placements/s per user (0 disables)")
    p.add_argument("--no-rate-limits", action="store_true", help="switch off every Kite rate limit")
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
        market_hours=args.market_hours, redirect_url=args.redirect_url, postback_url=args.postback_url,
        order_ip_allowlist=[ip for ip in args.order_ip_allowlist.split(",") if ip.strip()],
        rate_limits=not args.no_rate_limits,
        tick_interval_ms=args.tick_interval_ms, tick_phases=args.tick_phases, tick_rate=args.tick_rate,
        ticks_per_second=args.ticks_per_second, order_rate_limit=args.order_rate_limit,
        drop_every_seconds=args.drop_every, error_rate=args.error_rate, latency_ms=args.latency_ms,
        timeout_seconds=args.timeout_seconds, **accounts,
    )


async def serve(config: SimConfig) -> None:
    from ticker.infra.kitesim.server import running_sim

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


def _one_line(exc: ValueError) -> str:
    """pydantic's several-line report as `field: message; ...`."""
    if not isinstance(exc, ValidationError):
        return " ".join(str(exc).split())
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg'].removeprefix('Value error, ')}"
                     for e in exc.errors())


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        config = config_from(args)
        config.resolve_accounts()  # an accounts file that does not parse is refused here, not mid-start
    except (ValidationError, ValueError) as exc:
        print(f"ticker sim: invalid options: {_one_line(exc)}", file=sys.stderr)
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
