"""Wire codec: decode of 500-packet frames against kiteconnect's parser on the same frames."""

from __future__ import annotations

import numpy as np
from kiteconnect import KiteTicker

from tests.bench.harness import Report, best_of, fmt_time
from ticker.core.wire import Ticks, decode, encode

PACKETS = 500
FRAMES = 10
GOAL = 30.0


def _ticks(rng: np.random.Generator, n: int, index_share: float) -> Ticks:
    """Plausible full-mode ticks: NFO options, with a share of index packets mixed in."""
    index = rng.random(n) < index_share
    token = np.where(index, (rng.integers(1000, 2000, n) << 8) | 9, (rng.integers(10**4, 10**6, n) << 8) | 2)
    price = np.round(rng.uniform(1, 25000, n), 2)
    levels = np.arange(1, 6) * 0.05
    return Ticks.build(
        token=token, mode="full", last_price=price, average_traded_price=price,
        open=price, high=price + 5, low=price - 0.5, close=price - 1,
        last_traded_quantity=rng.integers(1, 1800, n), volume_traded=rng.integers(0, 10**8, n),
        total_buy_quantity=rng.integers(0, 10**6, n), total_sell_quantity=rng.integers(0, 10**6, n),
        last_trade_time=1_750_000_000 + rng.integers(0, 22_500, n), exchange_timestamp=1_750_000_000,
        oi=rng.integers(0, 10**7, n), oi_day_high=10**7, oi_day_low=0,
        depth_buy_quantity=rng.integers(1, 5000, (n, 5)), depth_buy_price=price[:, None] - levels,
        depth_buy_orders=rng.integers(1, 50, (n, 5)), depth_sell_quantity=rng.integers(1, 5000, (n, 5)),
        depth_sell_price=price[:, None] + levels, depth_sell_orders=rng.integers(1, 50, (n, 5)),
    )


def _decode_row(report: Report, label: str, frames: list[bytes], goal: bool) -> None:
    kite = KiteTicker("bench", "bench")  # never connects: only its parser is timed
    assert [len(decode(f)) for f in frames] == [len(kite._parse_binary(f)) for f in frames]
    ours = best_of(lambda: [decode(f) for f in frames], repeat=7) / len(frames)
    anchor = best_of(lambda: [kite._parse_binary(f) for f in frames], repeat=3) / len(frames)
    ratio = anchor / ours
    report.row(
        label, f"{fmt_time(ours)}/frame ({fmt_time(ours / PACKETS)}/tick)",
        anchor=f"kiteconnect _parse_binary {fmt_time(anchor)}/frame ({fmt_time(anchor / PACKETS)}/tick)",
        ratio=ratio, goal=f">= {GOAL:.0f}x" if goal else "info", met=ratio >= GOAL if goal else None,
    )


def run(report: Report) -> None:
    rng = np.random.default_rng(7)
    full = [encode(_ticks(rng, PACKETS, 0.0)) for _ in range(FRAMES)]
    mixed = [encode(_ticks(rng, PACKETS, 0.1)) for _ in range(FRAMES)]  # 184- and 32-byte packets
    _decode_row(report, f"wire decode, {PACKETS} full packets/frame", full, goal=True)
    _decode_row(report, f"wire decode, {PACKETS} mixed full+index packets/frame", mixed, goal=False)

    ticks = [decode(f) for f in full]
    per_frame = best_of(lambda: [encode(t) for t in ticks], repeat=7) / len(ticks)
    report.row(f"wire encode, {PACKETS} full packets/frame",
               f"{fmt_time(per_frame)}/frame = {PACKETS / per_frame / 1e6:.2f}M ticks/s", goal="info")
