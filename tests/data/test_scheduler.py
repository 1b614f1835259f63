"""The scheduler: slot claims across replicas, catch-up after a restart, coalescing, the schedule itself,
and two real `ticker scheduler` processes sharing one Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import datetime, time, timedelta
from pathlib import Path
from subprocess import PIPE

import orjson
import pytest
from arq.connections import ArqRedis
from redis.asyncio import Redis

from tests.waiting import wait_for
from ticker.core.contracts import (
    JOB_CLEANUP,
    JOB_REBALANCE_STRIKES,
    JOB_REFRESH_INSTRUMENTS,
    JOB_REFRESH_TOKENS,
    JOB_SYNC_ORDERS,
    Names,
)
from ticker.core.holidays import NSE_HOLIDAYS
from ticker.infra.queue.enqueue import create_queue, scoped_job_id
from ticker.infra.runtime.heartbeat import alive
from ticker.infra.runtime.settings import Settings
from ticker.jobs.schedule.scheduler import PROBE_JOB, SlotRunner, build_schedules, every, make_scheduler

ALL_JOBS = {JOB_REFRESH_TOKENS, JOB_REFRESH_INSTRUMENTS, JOB_CLEANUP, JOB_SYNC_ORDERS, JOB_REBALANCE_STRIKES}


@pytest.fixture
async def queue(settings: Settings) -> ArqRedis:
    pool = await create_queue(settings)
    yield pool
    await pool.aclose()


def _ist(settings: Settings, *args: int) -> datetime:
    return datetime(*args, tzinfo=settings.tz)


async def _queued(redis: Redis, names: Names, prefix: str) -> set[str]:
    return {m.decode() for m in await redis.zrange(names.default_queue, 0, -1) if m.decode().startswith(prefix)}


def test_the_production_schedule(settings: Settings) -> None:
    schedules = {s.name: s for s in build_schedules(settings, ALL_JOBS)}
    assert set(schedules) == {"token_refresh", "instrument_refresh", "cleanup", "order_sync", "rebalance"}
    token = schedules["token_refresh"]
    assert token.daily_at == settings.token_refresh_time and token.job_name == JOB_REFRESH_TOKENS
    monday = _ist(settings, 2030, 3, 4)
    assert token.trigger.get_next_fire_time(None, monday) == datetime.combine(
        monday.date(), settings.token_refresh_time, settings.tz)
    friday_late = _ist(settings, 2030, 3, 8, 23, 0)
    assert token.trigger.get_next_fire_time(None, friday_late).date() == monday.date() + timedelta(days=7)
    assert schedules["order_sync"].market_hours_only and schedules["rebalance"].market_hours_only

    off = settings.model_copy(update={"schedule_order_sync": False, "rebalance_enabled": False})
    assert "order_sync" not in {s.name for s in build_schedules(off, ALL_JOBS)}
    missing = {s.name for s in build_schedules(settings, ALL_JOBS - {JOB_REBALANCE_STRIKES})}
    assert "rebalance" not in missing and "token_refresh" in missing


async def test_a_slot_is_enqueued_by_one_replica_only(settings: Settings, queue: ArqRedis, redis: Redis,
                                                      names: Names) -> None:
    schedule = next(s for s in build_schedules(settings, ALL_JOBS) if s.name == "instrument_refresh")
    slot_time = _ist(settings, 2030, 1, 7, 8, 15)
    a, b = SlotRunner(queue, names, settings), SlotRunner(queue, names, settings)
    results = await asyncio.gather(a.fire(schedule, slot_time), b.fire(schedule, slot_time))
    assert sorted(results) == [False, True]
    job_id = scoped_job_id(names, JOB_REFRESH_INSTRUMENTS, "instrument_refresh", a.slot_of(slot_time))
    assert job_id in await _queued(redis, names, JOB_REFRESH_INSTRUMENTS)
    assert a.taken + b.taken == 1
    # The next day is a new slot.
    assert await a.fire(schedule, slot_time + timedelta(days=1))


async def test_market_hours_schedules_stay_quiet_outside_hours(settings: Settings, queue: ArqRedis,
                                                               names: Names) -> None:
    sync = next(s for s in build_schedules(settings, ALL_JOBS) if s.name == "order_sync")
    runner = SlotRunner(queue, names, settings)
    assert not await runner.fire(sync, _ist(settings, 2030, 1, 6, 11, 0))   # a Sunday
    assert not await runner.fire(sync, _ist(settings, 2030, 1, 7, 16, 0))   # after the close
    assert await runner.fire(sync, _ist(settings, 2030, 1, 7, 11, 0, 30))


async def test_exchange_holidays_skip_market_schedules_only(settings: Settings, queue: ArqRedis, redis: Redis,
                                                            names: Names) -> None:
    holiday = settings.model_copy(update={"market_holidays": "2031-01-27, 2031-03-03"})
    extra = {datetime(2031, 1, 27).date(), datetime(2031, 3, 3).date()}
    assert holiday.holidays == NSE_HOLIDAYS | extra  # MARKET_HOLIDAYS adds to NSE's calendar
    schedules = {s.name: s for s in build_schedules(holiday, ALL_JOBS)}
    runner = SlotRunner(queue, names, holiday)
    monday = _ist(holiday, 2031, 1, 27, 8, 15)  # a weekday, and a holiday
    assert not await runner.fire(schedules["instrument_refresh"], monday)
    assert not await runner.fire(schedules["order_sync"], monday.replace(hour=11))
    assert await runner.fire(schedules["token_refresh"], monday.replace(hour=7, minute=35))  # Kite's APIs still work
    skipped = scoped_job_id(names, JOB_REFRESH_INSTRUMENTS, "instrument_refresh", runner.slot_of(monday))
    assert skipped not in await _queued(redis, names, JOB_REFRESH_INSTRUMENTS)
    assert await runner.fire(schedules["instrument_refresh"], monday + timedelta(days=1))  # the next trading day
    with pytest.raises(ValueError, match="MARKET_HOLIDAYS"):
        Settings(market_holidays="2031-01-27,26 Jan")


async def test_nse_calendar_holidays_are_skipped_without_configuration(settings: Settings, queue: ArqRedis,
                                                                       names: Names) -> None:
    schedules = {s.name: s for s in build_schedules(settings, ALL_JOBS)}
    runner = SlotRunner(queue, names, settings)
    republic_day = _ist(settings, 2027, 1, 26, 8, 15)  # a Tuesday in NSE's calendar
    assert not await runner.fire(schedules["instrument_refresh"], republic_day)
    assert not await runner.fire(schedules["order_sync"], republic_day.replace(hour=11))
    assert await runner.fire(schedules["instrument_refresh"], republic_day + timedelta(days=1))


async def test_restart_catches_up_todays_missed_slots_once(settings: Settings, queue: ArqRedis,
                                                           names: Names) -> None:
    schedules = build_schedules(settings, ALL_JOBS)
    at = datetime.combine(datetime(2030, 1, 9).date(), time(8, 0), settings.tz)  # token due, instruments not
    first = SlotRunner(queue, names, settings)
    assert await first.catch_up(schedules, at) == 2  # token refresh (07:35) and cleanup (02:00)
    again = SlotRunner(queue, names, settings)  # a second restart, or another replica
    assert await again.catch_up(schedules, at) == 0
    later = await again.catch_up(schedules, at.replace(hour=9))
    assert later == 1  # only the instrument refresh became due
    saturday = SlotRunner(queue, names, settings)
    assert await saturday.catch_up(schedules, _ist(settings, 2030, 1, 12, 12, 0)) == 0


async def test_missed_firings_coalesce_into_one_run(settings: Settings, queue: ArqRedis, redis: Redis,
                                                    names: Names) -> None:
    hourly = every("coalesce_check", "coalesce_probe", 3600, settings, market_hours_only=False)
    runner = SlotRunner(queue, names, settings)
    scheduler, executor = make_scheduler(settings, [hourly], runner)
    now = datetime.now(settings.tz).replace(microsecond=0)
    first_missed = now - timedelta(hours=3, minutes=30)
    scheduler.start(paused=True)
    scheduler.modify_job("coalesce_check", next_run_time=first_missed)
    scheduler.resume()

    async def fired() -> bool:
        return runner.enqueued > 0

    await wait_for(fired)
    scheduler.shutdown(wait=False)
    await executor.drain()
    queued = await _queued(redis, names, "coalesce_probe")
    assert runner.enqueued == 1 and len(queued) == 1
    latest = runner.slot_of(first_missed + timedelta(hours=3))
    assert queued == {scoped_job_id(names, "coalesce_probe", "coalesce_check", latest)}


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS", "DATABASE", "KITE"))}
    env.update(REDIS_URL=settings.redis_url, DATABASE_URL=settings.database_url, ENVIRONMENT="test",
               REDIS_NAMESPACE=settings.redis_namespace, PUBLISH_CHANNEL_PREFIX=settings.publish_channel_prefix,
               LOG_FORMAT="json", LOG_LEVEL="INFO")
    return env


def _log_events(stderr: str, message: str) -> list[dict]:
    out = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            doc = orjson.loads(line)
            if doc.get("msg") == message:
                out.append(doc)
    return out


async def test_two_scheduler_processes_enqueue_each_slot_once(settings: Settings, redis: Redis, names: Names,
                                                              tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "ticker.infra.cli.main", "scheduler", "--test-interval-seconds", "1"]
    procs = [await asyncio.create_subprocess_exec(*cmd, env=_env(settings), cwd=tmp_path,
                                                  stdout=PIPE, stderr=PIPE) for _ in range(2)]
    try:
        async def both_up() -> bool:  # each beats as it starts
            return len(await alive(redis, names, "scheduler")) >= 2

        await wait_for(both_up, every=0.1)
        up_at = len(await _queued(redis, names, PROBE_JOB))

        async def slots_passed_with_both_running() -> bool:
            # six: the first and the last may have been tried by one process only (it had not started,
            # or was stopped before its turn); every slot between was tried by both
            return len(await _queued(redis, names, PROBE_JOB)) >= up_at + 6

        await wait_for(slots_passed_with_both_running, every=0.1)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        raw = [await asyncio.wait_for(p.communicate(), 60) for p in procs]
    outputs = [(out.decode(), err.decode()) for out, err in raw]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outputs]

    enqueued = [{e["job_id"]: e["slot"] for e in _log_events(err, "schedule slot enqueued")} for _, err in outputs]
    taken = [{e["slot"] for e in _log_events(err, "schedule slot already taken")} for _, err in outputs]
    queued = await _queued(redis, names, PROBE_JOB)
    assert len(queued) >= 6
    assert not set(enqueued[0]) & set(enqueued[1])          # never both
    assert set(enqueued[0]) | set(enqueued[1]) == queued     # every enqueue is in the queue
    slots = sorted(datetime.fromisoformat(s) for e in enqueued for s in e.values())
    assert all(b - a == timedelta(seconds=1) for a, b in zip(slots, slots[1:], strict=False))  # no gaps
    # Both processes competed for the same slots; the loser saw each one taken.
    contested = (set(enqueued[0].values()) & taken[1]) | (set(enqueued[1].values()) & taken[0])
    assert len(contested) >= 3
