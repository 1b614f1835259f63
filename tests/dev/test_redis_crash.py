"""Redis SIGKILLed and restarted on its port under a running worker, web, streamer and scheduler:
all of them recover without being restarted, and orders accepted before the crash complete exactly
once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest

from .redis_crash import DevUnderRedis


async def _statuses(database_url: str, job_ids: list[str]) -> dict[str, str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT job_id, status FROM order_requests WHERE job_id = ANY($1::text[])", job_ids)
    finally:
        await conn.close()
    return {r["job_id"]: r["status"] for r in rows}


@pytest.mark.timeout(400)
async def test_every_process_outlives_a_redis_crash(tmp_path: Path) -> None:
    rig = DevUnderRedis(tmp_path)
    try:
        await rig.start()
        pids = rig.pids()
        assert all(len(p) == 1 for p in pids.values()), pids
        # Kite answers slowly, so orders are running and queued at the moment Redis dies.
        await rig.sim("POST", "/_sim/faults", {"route": "POST /orders/*", "kind": "latency", "delay_ms": 400})
        before = await rig.place(20)

        back_at = await rig.crash()
        await rig.sim("DELETE", "/_sim/faults")
        recovery = await rig.recover(back_at, timeout=120)
        # each came back by itself (the bound is only how long we wait; `make bench` reports the times)
        assert min(recovery.web_s, recovery.streamer_s, recovery.worker_s) > -5, recovery

        deadline = time.monotonic() + 120
        while set((found := await _statuses(rig.info["database_url"], before)).values()) != {"complete"}:
            assert time.monotonic() < deadline, found
            await asyncio.sleep(0.1)
        assert len(found) == len(before)
        assert set((await rig.orders_at_kite(before)).values()) == {1}  # each placed exactly once
        assert rig.pids() == pids, "a process was restarted"
        text = rig.log_text
        assert "restarting it" not in text, text[-3000:]
        for name in ("worker", "web", "streamer", "scheduler"):
            assert name in {line.split("|")[0].strip() for line in text.splitlines() if "|" in line}
    finally:
        code = rig.stop()
    assert code == 0, rig.log_text[-3000:]
