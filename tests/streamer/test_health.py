"""What the streamer says about itself, on a clock the tests drive: rates from the counters over a
sliding window, a stall of publishing, backpressure that recovers with the rates, one log line
per Redis outage each way, breaker and retry back-off, and stages restarted at once."""

from __future__ import annotations

import asyncio
import logging

import pytest

from ticker.streamer.process.backpressure import Backpressure
from ticker.streamer.process.supervisor import TaskSupervisor
from ticker.streamer.redis_link import RedisLink, jittered
from ticker.streamer.stages.publish_breaker import PublishBreaker


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_rates_follow_the_counters_and_drop_to_zero_when_publishing_stops():
    clock = Clock()
    bp = Backpressure(window=3.0, stall=5.0, clock=clock)
    received = published = 0
    for _ in range(10):  # 1000 ticks/s in and out
        received += 1000
        published += 1000
        clock.t += 1
        bp.sample(received, published)
    report = bp.report(fill=0.0)
    assert report["received_per_second"] == report["published_per_second"] == 1000.0
    assert report["level"] == "healthy" and report["stalled_seconds"] == 0
    for second in range(1, 8):  # publishing stops; ticks keep coming
        received += 1000
        clock.t += 1
        bp.sample(received, published, backlog=0)
        report = bp.report(fill=0.0)
        if second >= 3:  # the window holds only the stall now
            assert report["published_per_second"] == 0.0 and report["level"] == "overload"
    assert report["received_per_second"] == 1000.0 and report["stalled_seconds"] == 7.0
    for _ in range(4):  # publishing resumes
        received += 1000
        published += 1000
        clock.t += 1
        bp.sample(received, published)
    report = bp.report(fill=0.0)
    assert report["level"] == "healthy" and report["stalled_seconds"] == 0
    assert report["published_per_second"] == 1000.0


def test_a_growing_backlog_counts_as_on_its_way_only_while_the_pipeline_moves():
    clock = Clock()
    bp = Backpressure(window=3.0, stall=5.0, clock=clock)
    bp.sample(0, 0)
    for second in range(1, 9):  # a stage is stuck: everything piles up in the buffer
        clock.t = second
        bp.sample(1000 * second, 0, backlog=1000 * second)
        if second < 5:
            assert bp.report(0.1)["level"] == "healthy"  # late, not lost (yet)
    report = bp.report(0.1)
    assert report["stalled_seconds"] == 8.0 and report["level"] == "overload"


def test_ticks_dropped_for_their_content_are_handled_not_stalled():
    clock = Clock()
    bp = Backpressure(window=3.0, stall=5.0, clock=clock)
    for second in range(10):
        clock.t = second
        bp.sample(100 * second, 0, rejected_total=100 * second)  # every tick malformed
    report = bp.report(0.0)
    assert report["stalled_seconds"] == 0 and report["level"] == "healthy"
    assert report["published_per_second"] == 0.0


def test_an_outage_is_logged_once_each_way(caplog):
    clock = Clock()
    changes: list[bool] = []
    link = RedisLink(clock=clock, on_change=changes.append)
    caplog.set_level(logging.INFO, logger="ticker.streamer.redis_link")
    stale = link.now()  # an attempt begun before the outage
    clock.t = 1.0
    for part in ("publisher", "control", "leases", "publisher", "heartbeat"):
        link.failed(part, ConnectionError("refused"))
        clock.t += 0.5
    assert not link.up and "publisher: ConnectionError" in link.reason()
    link.ok("publisher", stale)  # its reply was read from a buffer after Redis died: proves nothing
    assert not link.up
    link.ok("control", link.now())
    link.ok("leases", link.now())
    assert link.up and link.reason() is None and link.outages == 1 and changes == [False, True]
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["Redis unreachable; streaming on and retrying with back-off until it is back",
                     "Redis reachable again"]


def test_a_socket_older_than_the_last_recovery_is_a_leftover_not_a_new_outage(caplog):
    clock = Clock()
    link = RedisLink(clock=clock)
    caplog.set_level(logging.INFO, logger="ticker.streamer.redis_link")
    held_since = link.now()  # the publisher's socket, opened before the restart
    clock.t = 1.0
    link.failed("control", ConnectionError("closed"), since=link.now())
    clock.t = 1.5
    link.ok("control", link.now())  # resubscribed on the restarted Redis
    link.failed("publisher", ConnectionError("closed"), since=held_since)  # its old socket dies now
    assert link.up and link.outages == 1 and link.failures["publisher"] == 1
    link.failed("publisher", ConnectionError("refused"), since=link.now())  # a fresh socket failing is news
    assert not link.up and link.outages == 2
    assert len(caplog.records) == 3


def test_breaker_periods_grow_with_jitter_up_to_the_cap():
    clock = Clock()
    breaker = PublishBreaker(reset_seconds=1.0, clock=clock)
    periods = []
    for _ in range(8):
        breaker.failure()
        opened = clock.t
        while not breaker.allow():
            clock.t += 0.001
        periods.append(clock.t - opened)
    assert periods[0] <= 1 / 8 + 0.002 and max(periods) <= 1.002 and periods[-1] >= 0.5
    breaker.success()  # closed again: the next outage starts over with a short period
    breaker.failure()
    opened = clock.t
    assert not breaker.allow() and breaker.trips == 2
    clock.t = opened + 1 / 8
    assert breaker.allow()
    delays = {jittered(3, 0.1, 10.0) for _ in range(20)}
    assert all(0.4 <= d <= 0.8 for d in delays) and len(delays) > 1


async def test_a_failing_stage_is_restarted_at_once_and_counted():
    restarts: list[str] = []
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        await asyncio.sleep(seconds)

    supervisor = TaskSupervisor(on_restart=restarts.append, sleep=sleep)
    runs = 0
    done = asyncio.Event()

    async def stage() -> None:
        nonlocal runs
        runs += 1
        if runs <= 3:
            raise RuntimeError("a bug")
        done.set()
        await asyncio.Event().wait()

    supervisor.keep("enrich", stage, at_once=True)
    await asyncio.wait_for(done.wait(), 30)
    assert runs == 4 and restarts == ["enrich"] * 3 and pauses == [0.0, 0.0, 0.0]
    await supervisor.close()


@pytest.mark.parametrize("attempt", [0, 5, 40])
def test_jitter_stays_within_half_to_full_of_the_capped_ceiling(attempt: int):
    ceiling = min(2.0, 0.25 * 2 ** attempt)
    assert all(ceiling / 2 <= jittered(attempt, 0.25, 2.0) <= ceiling for _ in range(50))
