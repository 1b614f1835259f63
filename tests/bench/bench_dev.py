"""`ticker dev` from nothing: how long until it is up and until option ticks with Greeks arrive.

`ticker dev` runs as a newcomer runs it (no Redis, Postgres or Kite credentials given: it starts
embedded servers, the Kite stand-in and every process); this process times, from the moment it
started the command, when `dev.json` appears (everything is up) and when the first option ticks
carrying an IV are published on `ticker:nifty:options`. The end-to-end test checks that both
happen; how soon is measured here.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.bench.harness import Report, fmt_time
from tests.dev.devrun import clean_env, first_option_ticks
from ticker.infra.dev.embedded import free_port

TICKER = str(Path(sys.executable).with_name("ticker"))
GOAL_FIRST_TICK = 30.0
GIVE_UP = 180.0


async def _start_to_ticks(tmp: Path) -> tuple[float, float]:
    """(seconds to dev.json, seconds to the first option ticks with Greeks); inf where not reached."""
    folder = tmp / "ticker"
    log = (tmp / "dev.log").open("wb")
    started = time.monotonic()
    dev = subprocess.Popen(
        [TICKER, "dev", "--folder", str(folder), "--port", str(free_port()), "--streamer-port", str(free_port())],
        env=clean_env(tmp), stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
    up = ticks_at = float("inf")
    try:
        while not (folder / "dev.json").exists():
            if dev.poll() is not None or time.monotonic() - started > GIVE_UP:
                return up, ticks_at
            await asyncio.sleep(0.05)
        up = time.monotonic() - started
        info = json.loads((folder / "dev.json").read_text())
        ticks, after = await first_option_ticks(info["redis_url"], started, GIVE_UP)
        if ticks:
            ticks_at = after
        return up, ticks_at
    finally:
        if dev.poll() is None:
            dev.send_signal(signal.SIGINT)
        try:
            dev.wait(60)
        except subprocess.TimeoutExpired:
            dev.kill()
            dev.wait()
        log.close()


async def run(report: Report) -> None:
    with tempfile.TemporaryDirectory(prefix="ticker-bench-dev-") as tmp:
        up, first = await _start_to_ticks(Path(tmp))
    report.row("`ticker dev` from nothing: start -> everything up / -> first option ticks with Greeks",
               f"{fmt_time(up)} / {fmt_time(first)}", goal=f"first ticks <= {GOAL_FIRST_TICK:.0f} s",
               met=first <= GOAL_FIRST_TICK)


if __name__ == "__main__":
    asyncio.run(run(Report()))
