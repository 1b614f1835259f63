"""One `ticker dev` shared by the tests that check what a user sees of a running system (the chain
against the stand-in's prices, the option-chain page, the README's commands, the tail ladder).

It is started as `make dev` starts it, from nothing, on free ports, in a folder of its own; the tests
read `.ticker/dev.json` for its URLs and API key and must leave what they create behind them
harmless to one another (their own Idempotency-Keys, their own subscriptions).
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import redis as sync_redis

from tests.dev.devrun import OPTIONS_CHANNEL, clean_env
from ticker.core.tick_envelope import unwrap
from ticker.infra.dev.embedded import free_port

TICKER = str(Path(sys.executable).with_name("ticker"))
START_DEADLINE = 240.0  # generous: a busy two-core machine starts Postgres, Redis and six processes


@dataclass(frozen=True)
class RunningDev:
    home: Path  # the working directory `ticker dev` was started in (the README's commands run here)
    folder: Path  # its .ticker folder
    info: dict  # dev.json: redis_url, database_url, web_url, sim_url, api_key, ...
    env: dict[str, str]  # a clean environment for commands run against it
    log: Path

    @property
    def web_url(self) -> str:
        return self.info["web_url"]

    @property
    def api_key(self) -> str:
        return self.info["api_key"]

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def _wait_for_option_ticks(redis_url: str, deadline: float) -> None:
    """Returns once option ticks with an IV are being published: the chain, the page and the
    README's examples all need the market to be live."""
    client = sync_redis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    pubsub.subscribe(OPTIONS_CHANNEL)
    try:
        while time.monotonic() < deadline:
            msg = pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg and any(t.get("iv") is not None for t in unwrap(orjson.loads(msg["data"]))[0]):
                return
        raise AssertionError("ticker dev published no option ticks with an IV")
    finally:
        pubsub.close()
        client.close()


@contextlib.contextmanager
def running_dev(home: Path) -> Iterator[RunningDev]:
    folder = home / ".ticker"
    ports = {"PORT": free_port(), "STREAMER_PORT": free_port(), "SIM_PORT": free_port()}
    env = {**clean_env(home), **{k: str(v) for k, v in ports.items()}}
    log_path = home / "dev.log"
    log = log_path.open("wb")
    dev = subprocess.Popen([TICKER, "dev", "--folder", str(folder)], env=env, stdout=log,
                           stderr=subprocess.STDOUT, cwd=home)
    deadline = time.monotonic() + START_DEADLINE
    try:
        while not (folder / "dev.json").exists():
            assert dev.poll() is None, log_path.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "ticker dev did not come up"
            time.sleep(0.25)
        info = json.loads((folder / "dev.json").read_text())
        _wait_for_option_ticks(info["redis_url"], deadline)
        yield RunningDev(home=home, folder=folder, info=info, env=env, log=log_path)
    finally:
        if dev.poll() is None:
            dev.send_signal(signal.SIGINT)
        try:
            dev.wait(120)
        except subprocess.TimeoutExpired:
            dev.kill()
            dev.wait(30)
        log.close()
