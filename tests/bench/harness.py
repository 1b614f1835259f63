"""A tiny benchmark harness: each bench module adds rows to one Report, printed as one table.

Speed is always reported as a ratio against a named anchor measured in the same run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ticker.infra.dev.embedded import servers


@dataclass
class Row:
    bench: str
    ours: str
    anchor: str = ""
    ratio: str = ""
    goal: str = ""
    met: bool | None = None


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)

    def row(self, bench: str, ours: str, anchor: str = "", ratio: float | None = None,
            goal: str = "", met: bool | None = None) -> None:
        r = Row(bench, ours, anchor, f"{ratio:.1f}x" if ratio is not None else "", goal, met)
        self.rows.append(r)
        print(f"  {bench}: ours {ours}" + (f" | anchor {anchor} | {r.ratio}" if anchor else "")
              + (f" | goal {goal} {'met' if met else 'NOT met'}" if met is not None else ""), flush=True)

    def markdown(self) -> str:
        head = "| benchmark | ours | anchor | ratio | goal | met |\n|---|---|---|---|---|---|\n"
        body = "".join(
            f"| {r.bench} | {r.ours} | {r.anchor} | {r.ratio} | {r.goal} | "
            f"{'' if r.met is None else ('yes' if r.met else 'no')} |\n"
            for r in self.rows
        )
        return head + body


def best_of(fn: Callable[[], object], repeat: int = 5, number: int = 1) -> float:
    """Best wall time per call over `repeat` rounds of `number` calls (seconds)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t0) / number)
    return min(times)


def machine_speed() -> float:
    """Seconds a fixed pure-Python loop takes here, best of three. On a shared virtual machine it
    has been seen to vary by nearly 2x from minute to minute as the host gets busier; every
    absolute figure of a run scales with it, ratios against an anchor measured alongside far less."""
    def loop() -> None:
        total = 0
        for i in range(5_000_000):
            total += i
    return best_of(loop, repeat=3)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


@contextlib.contextmanager
def bench_servers(name: str) -> Iterator[tuple[str, str]]:
    """(redis url, postgres url) for a bench: TEST_* or plain URLs when set, else private embedded ones."""
    redis_url = os.environ.get("TEST_REDIS_URL") or os.environ.get("REDIS_URL")
    pg_url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    folder = Path(tempfile.mkdtemp(prefix=f"ticker-bench-{name}-"))
    try:
        with servers(folder, redis_url, pg_url) as urls:
            yield urls
    finally:
        shutil.rmtree(folder, ignore_errors=True)
