"""`ticker tail`: what a Redis tick subscriber receives, as a table refreshing in place; with
`--chain UNDERLYING`, one option chain as a ladder (see `chain_board`).

It is an ordinary subscriber of the published channels, so what it shows is exactly what an app sees.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

import orjson

from ticker.core.contracts import Names
from ticker.core.tick_envelope import unwrap
from ticker.infra.cli.chain_board import ChainBoard, chain_listing
from ticker.infra.cli.oneshot import CliContext, cli_context, reach_postgres, reach_tick_bus
from ticker.infra.queue.enqueue import names_for
from ticker.infra.runtime.startup import stop_event
from ticker.infra.stores.tick_bus import BusListener

CLEAR = "\x1b[H\x1b[2J"
COLUMNS = ("symbol", "ltp", "iv", "delta", "gamma", "theta", "vega", "age")


class Board:
    """The latest message per token, bounded to the most recently updated `rows`."""

    def __init__(self, rows: int, tokens: set[int] | None) -> None:
        self.rows = rows
        self.tokens = tokens
        self.latest: OrderedDict[Any, dict[str, Any]] = OrderedDict()
        self.received = 0

    def add(self, payload: bytes) -> None:
        items, _ = unwrap(orjson.loads(payload))  # an envelope, or a bare array (TICK_MESSAGE_FORMAT=array)
        for item in items:
            key = item.get("instrument_token") or item.get("order_id") or item.get("type")
            if self.tokens is not None and item.get("instrument_token") not in self.tokens:
                continue
            self.received += 1
            self.latest[key] = item
            self.latest.move_to_end(key)
            while len(self.latest) > self.rows:
                self.latest.popitem(last=False)

    def render(self, channel: str) -> str:
        now = time.time()
        lines = [f"{channel}  rows={len(self.latest)}  messages={self.received}",
                 "".join(f"{c:>12}" if i else f"{c:<28}" for i, c in enumerate(COLUMNS))]
        for item in sorted(self.latest.values(), key=_sort_key):
            lines.append(_row(item, now))
        return "\n".join(lines)


def _sort_key(item: dict[str, Any]) -> tuple:
    return (str(item.get("name") or ""), str(item.get("expiry") or ""), item.get("strike") or 0,
            str(item.get("instrument_type") or ""), str(item.get("tradingsymbol") or ""))


def _num(value: Any, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, int | float) else "-"


def _row(item: dict[str, Any], now: float) -> str:
    symbol = str(item.get("tradingsymbol") or item.get("instrument_token") or item.get("order_id") or "?")
    if item.get("status"):  # order postback
        symbol = f"{symbol} {item.get('status')}"
    ts = item.get("ts")
    age = f"{now - ts:.1f}s" if isinstance(ts, int | float) else "-"
    cells = [_num(item.get("last_price", item.get("close")), ".2f"), _num(item.get("iv"), ".4f"),
             _num(item.get("delta"), ".4f"), _num(item.get("gamma"), ".6f"), _num(item.get("theta"), ".3f"),
             _num(item.get("vega"), ".3f"), age]
    return f"{symbol[:27]:<28}" + "".join(f"{c:>12}" for c in cells)


async def tail(args: argparse.Namespace) -> int:
    ctx = cli_context(log_format="text")  # dev.json fills what the environment leaves unset
    names = names_for(ctx.settings)
    if args.chain:
        return await tail_chain(args, ctx, names)
    tokens = {int(t) for t in args.tokens.split(",") if t.strip()} if args.tokens else None
    board = Board(args.rows, tokens)
    interactive = sys.stdout.isatty() and not args.seconds
    channel = getattr(names, args.channel)
    await _listen(ctx, names, args.channel, args, board.add, lambda: board.render(channel), interactive)
    if not interactive:
        print(board.render(channel))
    return 0 if board.received or not args.seconds else 1


async def tail_chain(args: argparse.Namespace, ctx: CliContext, names: Names) -> int:
    """The chain's ladder: which chain comes from the instruments table (an unknown underlying or
    expiry is one line), its figures and rows from the chain channel."""
    db = await reach_postgres(ctx, max_size=1)
    try:
        today = datetime.now(ctx.settings.tz).date()
        listing = await chain_listing(db, args.chain.upper(), args.expiry, today)
    finally:
        await db.close()
    board = ChainBoard(listing, args.rows)
    interactive = sys.stdout.isatty() and not args.seconds
    await _listen(ctx, names, "chain", args, board.add, lambda: board.render(names.chain, ansi=True), interactive)
    if not interactive:
        print(board.render(names.chain, ansi=False))
    return 0 if board.received or not args.seconds else 1


async def _listen(ctx: CliContext, names: Names, kind: str, args: argparse.Namespace, add: Callable[[bytes], object],
                  render: Callable[[], str], interactive: bool) -> None:
    """Feed `add` what the `kind` channels carry until stopped (or --seconds are up), redrawing in place."""
    await (await reach_tick_bus(ctx)).aclose()  # one line, not a traceback, when Redis is out of reach
    listener = BusListener(ctx.settings, names, kind, name="ticker-tail")
    stop = stop_event()
    deadline = time.monotonic() + args.seconds if args.seconds else None
    next_draw = 0.0
    try:
        await listener.start()
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            data = await listener.get(timeout=0.2)
            if data is not None:
                add(data)
            if interactive and time.monotonic() >= next_draw:
                sys.stdout.write(CLEAR + render() + "\n")
                sys.stdout.flush()
                next_draw = time.monotonic() + args.refresh
    finally:
        await listener.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ticker tail", description="Live view of the published tick channels.")
    parser.add_argument("--channel", choices=("options", "underlying", "orders"), default="options")
    parser.add_argument("--chain", metavar="UNDERLYING",
                        help="show this underlying's option chain as a ladder (calls | strike | puts)")
    parser.add_argument("--expiry", type=date.fromisoformat, metavar="YYYY-MM-DD",
                        help="with --chain: the expiry (default: the nearest listed)")
    parser.add_argument("--tokens", help="comma-separated instrument tokens to show (default: all)")
    parser.add_argument("--rows", type=int, default=40, help="rows to keep on screen (default 40)")
    parser.add_argument("--refresh", type=float, default=0.5, help="seconds between redraws")
    parser.add_argument("--seconds", type=float, default=0,
                        help="listen this long, print one table and exit (exit 1 if nothing arrived)")
    args = parser.parse_args(argv)
    if args.rows <= 0 or args.refresh <= 0 or args.seconds < 0:
        parser.error("--rows and --refresh must be positive, --seconds not negative")
    if args.expiry and not args.chain:
        parser.error("--expiry goes with --chain")
    return asyncio.run(tail(args))
