"""`ticker dev` from nothing, as a newcomer runs it: no Redis, Postgres or Kite credentials given.

Option ticks with Greeks arrive on `ticker:nifty:options`, an order placed over HTTP completes with a
Kite order id, the API key buys a WebSocket token, `ticker tail` shows the rows updating, `ticker accounts list` finds the dev database
with no settings given, every process listens on loopback only and on the ports PORT, STREAMER_PORT
and SIM_PORT name, a second `ticker dev` says one is running, and Ctrl-C leaves no process behind.
How soon the first ticks arrive is measured by `make bench` (bench_dev); here the bounds only stop a
broken start from hanging the suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import psutil
import pytest

from tests.dev.devrun import clean_env, first_option_ticks
from ticker.infra.dev.embedded import free_port

TICKER = str(Path(sys.executable).with_name("ticker"))
DEADLINE = 180.0  # generous: a busy two-core machine starts Postgres, Redis and six processes here


def _leftovers(pids: set[int], folder: Path) -> list[str]:
    alive = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if proc.info["pid"] in pids or str(folder) in cmd:
                alive.append(f"{proc.info['pid']}: {cmd[:120]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return alive


def _listening(pids: set[int]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket these processes listen on."""
    found = set()
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            for conn in psutil.Process(pid).net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add((conn.laddr.ip, conn.laddr.port))
    return found


async def _place_and_poll(web_url: str, api_key: str, tick: dict) -> dict:
    headers = {"X-API-Key": api_key}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.get(f"{web_url}/instruments", params={"q": tick["tradingsymbol"], "limit": "1"}) as r:
            instrument = (await r.json())["instruments"][0]
        order = {"exchange": instrument["exchange"], "tradingsymbol": instrument["tradingsymbol"],
                 "transaction_type": "BUY", "quantity": instrument["lot_size"], "product": "NRML",
                 "order_type": "MARKET"}
        async with http.post(f"{web_url}/orders", json=order) as r:
            assert r.status == 202, await r.text()
            job = await r.json()
        deadline = time.monotonic() + DEADLINE
        while True:  # long polls, until the job is done (or a broken system runs out the bound)
            async with http.get(f"{web_url}{job['status_url']}", params={"wait": "20"}) as r:
                status = await r.json()
            if status.get("status") in ("complete", "failed", "dead_letter", "cancelled") \
                    or time.monotonic() > deadline:
                return status


@pytest.mark.timeout(900)
async def test_make_dev_from_nothing(tmp_path: Path) -> None:
    folder = tmp_path / ".ticker"
    ports = {"PORT": free_port(), "STREAMER_PORT": free_port(), "SIM_PORT": free_port()}  # as `make dev PORT=…`
    log = (tmp_path / "dev.log").open("wb")
    started = time.monotonic()
    dev = subprocess.Popen(
        [TICKER, "dev", "--folder", str(folder)], env={**clean_env(tmp_path), **{k: str(v) for k, v in ports.items()}},
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    family: set[int] = set()
    try:
        while not (folder / "dev.json").exists():
            assert dev.poll() is None, (tmp_path / "dev.log").read_text()[-3000:]
            assert time.monotonic() - started < DEADLINE, "ticker dev did not come up"
            await asyncio.sleep(0.25)
        info = json.loads((folder / "dev.json").read_text())
        assert {"redis_url", "database_url", "web_url", "sim_url", "api_key"} <= set(info)
        family = {p.pid for p in psutil.Process(dev.pid).children(recursive=True)} | {dev.pid}
        listening = _listening(family)
        assert {ip for ip, _ in listening} == {"127.0.0.1"}, listening  # loopback only, never 0.0.0.0
        assert set(ports.values()) <= {port for _, port in listening}, (ports, listening)
        assert info["web_url"] == f"http://127.0.0.1:{ports['PORT']}"
        assert info["sim_url"] == f"http://127.0.0.1:{ports['SIM_PORT']}"

        ticks, after = await first_option_ticks(info["redis_url"], started, DEADLINE)
        assert ticks, f"no option ticks with Greeks within {DEADLINE:.0f} s of start"
        for key in ("tradingsymbol", "last_price", "iv", "delta", "gamma", "theta", "vega"):
            assert ticks[0][key] is not None, key
        print(f"first option tick with Greeks {after:.1f} s after start")

        status = await _place_and_poll(info["web_url"], info["api_key"], ticks[0])
        assert status["status"] == "complete", status
        assert status["result"]["kite_order_id"]
        async with aiohttp.ClientSession() as http:  # ticker dev gives its web a JWT_SECRET: tokens work
            async with http.post(f"{info['web_url']}/auth/token", headers={"X-API-Key": info["api_key"]}) as r:
                assert r.status == 200, await r.text()

        tail_env = {**os.environ, "REDIS_URL": info["redis_url"]}
        tail = subprocess.run([TICKER, "tail", "--seconds", "3"], env=tail_env, capture_output=True, text=True,
                              timeout=DEADLINE)
        assert tail.returncode == 0, tail.stderr
        header = tail.stdout.splitlines()[0]
        rows = int(header.split("rows=")[1].split()[0])
        messages = int(header.split("messages=")[1].split()[0])
        assert rows > 0 and messages >= 2, "rows did not update"  # each later message updates rows

        # no settings in this shell: `ticker accounts` finds the dev database and key in .ticker/dev.json
        accounts = subprocess.run([TICKER, "accounts", "list"], env=clean_env(tmp_path), cwd=tmp_path,
                                  capture_output=True, text=True, timeout=DEADLINE, stdin=subprocess.DEVNULL)
        assert accounts.returncode == 0, accounts.stderr
        assert "sim1" in accounts.stdout and "sim2" in accounts.stdout

        second = subprocess.run([TICKER, "dev", "--folder", str(folder)], env=clean_env(tmp_path),
                                capture_output=True, text=True, timeout=DEADLINE)
        assert second.returncode == 1 and "already running" in second.stderr
    finally:
        if dev.poll() is None:
            dev.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            code = dev.wait(DEADLINE)
        finally:
            log.close()
    assert code == 0, (tmp_path / "dev.log").read_text()[-3000:]
    deadline = time.monotonic() + 60
    while _leftovers(family, folder) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert not _leftovers(family, folder)
