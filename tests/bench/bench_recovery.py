"""Redis SIGKILLed under the running system: how long from Redis answering again until the web is
healthy, the streamer publishes and the worker starts an order (the rig: tests/dev/redis_crash.py)."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from tests.bench.harness import Report
from tests.dev.redis_crash import DevUnderRedis

ROUNDS = 3
GOAL_S = 2.0


async def run(report: Report) -> None:
    with tempfile.TemporaryDirectory(prefix="ticker-recovery-") as folder:
        rig = DevUnderRedis(Path(folder))
        try:
            await rig.start()
            rounds = []
            for _ in range(ROUNDS):
                back_at = await rig.crash()
                rounds.append(await rig.recover(back_at, timeout=60))
        finally:
            rig.stop()
    for what, values in (("web /health sees Redis", [r.web_s for r in rounds]),
                         ("streamer publishes option ticks", [r.streamer_s for r in rounds]),
                         ("worker starts an order enqueued then", [r.worker_s for r in rounds])):
        worst = max(values)
        report.row(f"Redis SIGKILLed and restarted -> {what} (median / worst of {ROUNDS})",
                   f"{statistics.median(values):.2f} s / {worst:.2f} s", goal=f"<= {GOAL_S:.0f} s",
                   met=worst <= GOAL_S)
