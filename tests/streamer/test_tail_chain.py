"""`ticker tail --chain` in a terminal: stand-in → streamer → the chain channel → the ladder.

The command runs as a person would run it, on a pseudo-terminal, so it redraws in place with ANSI
and highlights the ATM row; we read its screen until a frame shows priced calls and puts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from pathlib import Path

import pytest

from ticker.infra.cli.chain_board import RESET, REVERSE
from ticker.infra.cli.tail import CLEAR

from .conftest import BOUND, running_streamer, subscribe

pytestmark = pytest.mark.timeout(240)

TICKER = str(Path(sys.executable).with_name("ticker"))
NUMBER = r"-?\d+(?:\.\d+)?"


def _env(settings) -> dict[str, str]:
    return {**os.environ, "REDIS_URL": settings.redis_url, "DATABASE_URL": settings.database_url,
            "REDIS_NAMESPACE": settings.redis_namespace, "PUBLISH_CHANNEL_PREFIX": settings.publish_channel_prefix,
            "MARKET_TIMEZONE": settings.market_timezone}


def _priced(line: str) -> bool:
    """Both legs of a ladder row carry numbers: ltp, oi, iv %, delta on each side of the strike."""
    calls, _, puts = line.replace(REVERSE, "").replace(RESET, "").partition("|")
    puts = puts.partition("|")[2]
    return all(len(re.findall(rf"(?<!\S){NUMBER}(?!\S)", side)) == 4 for side in (calls, puts))


def _settled(frame: str) -> bool:
    """A frame with the figures, a highlighted priced ATM row and other priced rows."""
    lines = frame.splitlines()
    atm = [line for line in lines if line.startswith(REVERSE)]
    rows = [line for line in lines if line.count("|") == 2 and _priced(line)]
    return "ATM IV" in frame and "max pain" in frame and len(atm) == 1 and _priced(atm[0]) and len(rows) >= 3


class Terminal:
    """The master side of a pseudo-terminal, read until the command closes its side: the command
    never blocks on a full terminal, even while it is being stopped."""

    def __init__(self, master: int) -> None:
        self.master, self.seen, self.changed = master, bytearray(), asyncio.Event()

    async def read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                chunk = await loop.run_in_executor(None, os.read, self.master, 65536)
            except OSError:  # EIO: every holder of the other side has closed it
                return
            if not chunk:
                return
            self.seen.extend(chunk)
            self.changed.set()

    async def frame(self, reader: asyncio.Task) -> str:
        """The latest whole frame once one has settled (the last one may be half written); what
        was shown if the command ended first."""
        async with asyncio.timeout(BOUND * 2):
            while not reader.done():
                frames = self.seen.decode(errors="replace").split(CLEAR)
                if len(frames) > 2 and _settled(frames[-2]):
                    return frames[-2]
                self.changed.clear()
                await self.changed.wait()
        return self.seen.decode(errors="replace")


async def test_tail_chain_draws_the_ladder_in_a_terminal(market, sdb, ssettings, snames, sredis):
    settings = ssettings.model_copy(update={"chain_interval_ms": 200})
    expiries = [r[0] for r in await sdb.fetch(
        "SELECT DISTINCT expiry FROM instruments WHERE name = 'NIFTY' AND instrument_type = 'CE' ORDER BY expiry")]
    expiry = expiries[min(1, len(expiries) - 1)]
    listed = await sdb.fetch("SELECT instrument_token FROM instruments WHERE name = 'NIFTY' AND expiry = $1 "
                             "AND instrument_type IN ('CE', 'PE') AND is_active", expiry)
    await subscribe(sdb, [r["instrument_token"] for r in listed])
    master, slave = os.openpty()
    async with running_streamer(settings):
        proc = await asyncio.create_subprocess_exec(
            TICKER, "tail", "--chain", "NIFTY", "--expiry", expiry.isoformat(), "--refresh", "0.2",
            env=_env(settings), stdin=slave, stdout=slave, stderr=slave)
        os.close(slave)
        terminal = Terminal(master)
        reader = asyncio.create_task(terminal.read())
        try:
            frame = await terminal.frame(reader)
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            code = await asyncio.wait_for(proc.wait(), BOUND)
            await asyncio.wait_for(reader, BOUND)
            os.close(master)
    assert _settled(frame), frame
    assert f"NIFTY {expiry.isoformat()}" in frame and "CALLS" in frame and "PUTS" in frame
    assert code == 0


async def test_tail_chain_of_an_unknown_underlying_is_one_line(market, ssettings):
    proc = await asyncio.create_subprocess_exec(
        TICKER, "tail", "--chain", "NOSUCHINDEX", env=_env(ssettings),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), BOUND)
    lines = err.decode().strip().splitlines()
    assert proc.returncode != 0 and out == b""
    assert len(lines) == 1 and "NOSUCHINDEX" in lines[0] and "no listed options" in lines[0], err.decode()
