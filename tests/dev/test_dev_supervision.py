"""`ticker dev` keeps its processes up: a killed worker or Redis is replaced and orders still complete;
only a crash loop ends the run."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from ticker.infra.dev.embedded import free_port
from ticker.infra.dev.supervise import CrashLoop, ProcessSupervisor, Watched

from .devrun import clean_env, first_option_ticks
from .test_dev_e2e import TICKER, _place_and_poll


async def _until(check, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        await asyncio.sleep(0.2)


def _child_pids(dev: subprocess.Popen, needle: str) -> set[int]:
    found = set()
    for proc in psutil.Process(dev.pid).children(recursive=True):
        try:
            if needle in " ".join(proc.cmdline()) and proc.status() != psutil.STATUS_ZOMBIE:
                found.add(proc.pid)
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.mark.timeout(300)
async def test_dev_replaces_a_killed_worker_and_a_killed_redis(tmp_path: Path) -> None:
    folder = tmp_path / "ticker"
    log_path = tmp_path / "dev.log"
    log = log_path.open("wb")
    dev = subprocess.Popen(
        [TICKER, "dev", "--folder", str(folder), "--port", str(free_port()), "--streamer-port", str(free_port())],
        env=clean_env(tmp_path), stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        await _until(lambda: (folder / "dev.json").exists() or dev.poll() is not None, "ticker dev up", 180)
        assert dev.poll() is None, log_path.read_text()[-3000:]
        info = json.loads((folder / "dev.json").read_text())
        ticks, _ = await first_option_ticks(info["redis_url"], time.monotonic(), 120)
        assert ticks, "no option ticks"

        (old_worker,) = _child_pids(dev, "ticker.infra.cli worker")
        psutil.Process(old_worker).kill()
        await _until(lambda: _child_pids(dev, "ticker.infra.cli worker") - {old_worker}, "a new worker")
        status = await _place_and_poll(info["web_url"], info["api_key"], ticks[0])
        assert status["status"] == "complete", status

        (redis_pid,) = _child_pids(dev, "redis-server")
        psutil.Process(redis_pid).kill()
        await _until(lambda: _child_pids(dev, "redis-server") - {redis_pid}, "a new redis-server")
        status = await _place_and_poll(info["web_url"], info["api_key"], ticks[0])
        assert status["status"] == "complete", status


        text = log_path.read_text()
        assert "worker was killed by SIGKILL; restarting" in text
        assert "redis was killed by SIGKILL; restarting" in text
        assert dev.poll() is None
    finally:
        if dev.poll() is None:
            dev.send_signal(signal.SIGINT)
        code = dev.wait(60)
        log.close()
    assert code == 0, log_path.read_text()[-3000:]


async def test_a_crash_loop_ends_supervision_with_the_reason() -> None:
    said: list[str] = []
    supervisor = ProcessSupervisor(said.append)
    starts = 0

    async def spawn() -> asyncio.subprocess.Process:
        nonlocal starts
        starts += 1
        return await asyncio.create_subprocess_exec(sys.executable, "-c", "raise SystemExit(3)")

    proc = await spawn()

    async def ended() -> int | None:
        return await proc.wait()

    async def restart() -> None:
        nonlocal proc
        proc = await spawn()

    item = Watched("crasher", ended, restart, CrashLoop(limit=3, window=600))
    supervisor.watch(item)
    await asyncio.wait_for(supervisor.gave_up.wait(), 60)
    await supervisor.stop()
    assert starts == 3
    assert "crasher exited with code 3: 3 exits within 600 s, a crash loop" in supervisor.reason
    assert said == ["crasher exited with code 3; restarting it in 0.5 s", "crasher restarted",
                    "crasher exited with code 3; restarting it in 1.0 s", "crasher restarted"]


def test_crash_loop_forgets_old_exits() -> None:
    now = [0.0]
    loop = CrashLoop(limit=3, window=60, clock=lambda: now[0])
    for t in (0.0, 30.0, 61.0, 100.0):
        now[0] = t
        assert not loop.record(), t  # never three within 60 s
    now[0] = 110.0
    assert loop.record()  # 61, 100, 110
