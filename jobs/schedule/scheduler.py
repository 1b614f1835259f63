"""`ticker scheduler`: APScheduler (AsyncIOScheduler, market time zone) that only enqueues jobs.

Every firing belongs to a slot: the scheduled run time, which is the same on every replica (daily
jobs fire at a fixed wall time; interval jobs on epoch-aligned grids). A slot is claimed in Redis
(SET NX) and enqueued under `scoped_job_id(names, job, slot)`, so two replicas never run one period
twice. Missed firings coalesce into one run, and on start-up a daily slot already due today that
no replica claimed is run once. Schedules that concern the market (instrument refresh, order sync,
portfolio refresh, strike rebalancing) skip exchange holidays: NSE's calendar (core.holidays) plus any dates named in
MARKET_HOLIDAYS; token refresh and cleanup run every weekday (Kite's other APIs work on holidays).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import socket
import sys
import time as _time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, time
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from arq.connections import ArqRedis

from ticker.core.clock import is_trading_day
from ticker.core.contracts import (
    JOB_CLEANUP,
    JOB_REBALANCE_STRIKES,
    JOB_REFRESH_INSTRUMENTS,
    JOB_REFRESH_PORTFOLIO,
    JOB_REFRESH_TOKENS,
    JOB_SYNC_ORDERS,
    Names,
)
from ticker.infra.queue.enqueue import create_queue, enqueue, names_for, scoped_job_id
from ticker.infra.runtime.heartbeat import beat
from ticker.infra.runtime.outage import REDIS_ERRORS, Outage
from ticker.infra.runtime.settings import Settings
from ticker.jobs.schedule.apscheduler_adapter import SlotExecutor, slot_scheduler

log = logging.getLogger("ticker.scheduler")

PROBE_JOB = "scheduler_probe"
TRADING_DAYS = "mon-fri"
DAILY_CLAIM_SECONDS = 36 * 3600
HEARTBEAT_SECONDS = 5.0


@dataclass(frozen=True)
class Schedule:
    name: str
    job_name: str
    trigger: BaseTrigger
    claim_seconds: int
    market_hours_only: bool = False
    daily_at: time | None = None  # set for once-a-trading-day schedules (start-up catch-up)
    coalesce: bool = True  # a backlog of missed firings runs once (the latest slot)
    trading_days_only: bool = False  # skipped on exchange holidays


# --- what runs when --------------------------------------------------------------------------------
def daily(name: str, job_name: str, at: time, settings: Settings, *, trading_days_only: bool = False) -> Schedule:
    trigger = CronTrigger(day_of_week=TRADING_DAYS, hour=at.hour, minute=at.minute, second=at.second,
                          timezone=settings.tz)
    return Schedule(name, job_name, trigger, DAILY_CLAIM_SECONDS, daily_at=at, trading_days_only=trading_days_only)


def every(name: str, job_name: str, seconds: float, settings: Settings, market_hours_only: bool) -> Schedule:
    # Epoch-aligned start: every replica fires on the same grid, so slots agree.
    start = datetime.fromtimestamp(math.ceil(_time.time() / seconds) * seconds, settings.tz)
    trigger = IntervalTrigger(seconds=seconds, start_date=start, timezone=settings.tz)
    return Schedule(name, job_name, trigger, max(int(seconds * 10), 300), market_hours_only,
                    trading_days_only=market_hours_only)


def build_schedules(settings: Settings, available: set[str], test_interval: float | None = None) -> list[Schedule]:
    """The production schedule, or only a probe every `test_interval` seconds."""
    if test_interval is not None:
        # The probe keeps every slot (no coalescing) so a test can account for each one.
        probe = every("probe", PROBE_JOB, test_interval, settings, market_hours_only=False)
        return [replace(probe, coalesce=False)]
    wanted = [
        (settings.schedule_token_refresh,
         lambda: daily("token_refresh", JOB_REFRESH_TOKENS, settings.token_refresh_time, settings)),
        (settings.schedule_instrument_refresh,
         lambda: daily("instrument_refresh", JOB_REFRESH_INSTRUMENTS, settings.instrument_refresh_time, settings,
                       trading_days_only=True)),
        (settings.schedule_cleanup, lambda: daily("cleanup", JOB_CLEANUP, settings.cleanup_time, settings)),
        (settings.schedule_order_sync,
         lambda: every("order_sync", JOB_SYNC_ORDERS, settings.order_sync_seconds, settings, True)),
        (settings.schedule_portfolio_refresh,
         lambda: every("portfolio_refresh", JOB_REFRESH_PORTFOLIO, settings.portfolio_refresh_seconds, settings,
                       True)),
        (settings.rebalance_enabled,
         lambda: every("rebalance", JOB_REBALANCE_STRIKES, 60, settings, True)),
    ]
    out = []
    for enabled, make in wanted:
        if not enabled:
            continue
        schedule = make()
        if schedule.job_name not in available:
            log.warning("schedule skipped: no worker function", extra={"schedule": schedule.name,
                                                                         "job": schedule.job_name})
            continue
        out.append(schedule)
    return out


def available_jobs() -> set[str]:
    from ticker.jobs.functions import all_functions

    return {getattr(f, "name", None) or f.__name__ for f in all_functions()}


def in_market_hours(at: datetime, settings: Settings) -> bool:
    local = at.astimezone(settings.tz)
    return is_trading_day(local.date(), settings.holidays) and settings.market_open <= local.time() <= settings.market_close


# --- claiming and enqueueing a slot -----------------------------------------------------------------
class SlotRunner:
    """Turns one scheduled run time into at most one enqueued job across all replicas."""

    def __init__(self, queue: ArqRedis, names: Names, settings: Settings, outage: Outage | None = None) -> None:
        self.queue = queue
        self.names = names
        self.settings = settings
        self.outage = outage or Outage("redis")
        self.enqueued = 0
        self.taken = 0

    def slot_of(self, run_time: datetime) -> str:
        return run_time.astimezone(self.settings.tz).replace(microsecond=0).isoformat()

    async def fire(self, schedule: Schedule, run_time: datetime) -> bool:
        if schedule.market_hours_only and not in_market_hours(run_time, self.settings):
            return False
        day = run_time.astimezone(self.settings.tz).date()
        if schedule.trading_days_only and not is_trading_day(day, self.settings.holidays):
            log.info("exchange holiday: schedule skipped", extra={"schedule": schedule.name, "day": day.isoformat()})
            return False
        slot = self.slot_of(run_time)
        # A slot survives a Redis outage shorter than its claim window: tried again until then.
        give_up = _time.monotonic() + schedule.claim_seconds
        while True:
            try:
                fresh = await self._claim(schedule, slot)
            except REDIS_ERRORS as exc:
                delay = self.outage.failed(exc, f"enqueueing {schedule.name}")
                if _time.monotonic() + delay > give_up:
                    raise
                await asyncio.sleep(delay)
                continue
            self.outage.ok()
            return fresh

    async def _claim(self, schedule: Schedule, slot: str) -> bool:
        job_id = scoped_job_id(self.names, schedule.job_name, schedule.name, slot)
        claim = self.names.key("schedule", job_id)
        if not await self.queue.set(claim, slot, nx=True, ex=schedule.claim_seconds):
            self.taken += 1
            log.info("schedule slot already taken", extra={"schedule": schedule.name, "slot": slot,
                                                          "job_id": job_id})
            return False
        try:
            fresh = await enqueue(self.queue, self.names, schedule.job_name, {}, job_id=job_id)
        except BaseException:
            # let another replica (or the next try) have the slot; with Redis gone it expires anyway
            with contextlib.suppress(*REDIS_ERRORS):
                await self.queue.delete(claim)
            raise
        self.enqueued += fresh
        log.info("schedule slot enqueued" if fresh else "schedule slot already queued",
                 extra={"schedule": schedule.name, "slot": slot, "job_id": job_id})
        return fresh

    async def catch_up(self, schedules: list[Schedule], now: datetime) -> int:
        """Run once, now, each daily slot already due today that no replica has claimed."""
        ran = 0
        local = now.astimezone(self.settings.tz)
        for schedule in schedules:
            if schedule.daily_at is None or local.weekday() >= 5:
                continue
            due = datetime.combine(local.date(), schedule.daily_at, self.settings.tz)
            if due <= local:
                try:
                    ran += await self.fire(schedule, due)
                except REDIS_ERRORS:  # Redis gone for the whole claim window: the slot is skipped
                    log.error("missed today's slot: Redis was unreachable", extra={"schedule": schedule.name})
        return ran


def make_scheduler(settings: Settings, schedules: list[Schedule], runner: SlotRunner) -> tuple[AsyncIOScheduler, SlotExecutor]:
    """The APScheduler for `schedules`, in the market's time zone, each firing `runner` with its slot."""
    return slot_scheduler(settings.tz, [(s.name, s.trigger, s.coalesce, _bind(runner, s)) for s in schedules])


def _bind(runner: SlotRunner, schedule: Schedule) -> Callable[..., Awaitable[bool]]:
    # The default only satisfies APScheduler's signature check; SlotExecutor always passes the time.
    async def fire(run_time: datetime | None = None) -> bool:
        return await runner.fire(schedule, run_time or datetime.now(runner.settings.tz))
    return fire


# --- the process -------------------------------------------------------------------------------------
async def heartbeat_loop(queue: ArqRedis, names: Names, stop: asyncio.Event, info: dict[str, Any],
                         outage: Outage) -> None:
    instance = f"{socket.gethostname()}:{os.getpid()}"
    while not stop.is_set():
        try:
            await beat(queue, names, "scheduler", instance, info)
            outage.ok()
        except REDIS_ERRORS as exc:  # Redis away: keep scheduling, the next beat will tell /health
            outage.failed(exc, "writing the heartbeat")
        try:
            await asyncio.wait_for(stop.wait(), HEARTBEAT_SECONDS)
        except TimeoutError:
            pass


async def _connect(settings: Settings, stop: asyncio.Event, outage: Outage) -> ArqRedis | None:
    """The queue pool, waiting out a Redis that is down when the scheduler starts."""
    while not stop.is_set():
        try:
            queue = await create_queue(settings, retries=0)
        except REDIS_ERRORS as exc:
            delay = outage.failed(exc, "starting the scheduler")
        else:
            outage.ok()
            return queue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
    return None


async def run(settings: Settings, test_interval: float | None = None, stop: asyncio.Event | None = None) -> int:
    from ticker.infra.runtime.startup import stop_event

    stop = stop or stop_event()
    settings.require("redis_url")
    outage = Outage("redis")
    queue = await _connect(settings, stop, outage)
    if queue is None:  # stopped before Redis ever answered
        return 0
    names = names_for(settings)
    schedules = build_schedules(settings, set() if test_interval else available_jobs(), test_interval)
    runner = SlotRunner(queue, names, settings, outage)
    scheduler, executor = make_scheduler(settings, schedules, runner)
    beats = asyncio.create_task(heartbeat_loop(queue, names, stop, {"schedules": [s.name for s in schedules]},
                                               outage))
    try:
        await runner.catch_up(schedules, datetime.now(settings.tz))
        scheduler.start()
        log.info("scheduler started", extra={"schedules": [s.name for s in schedules]})
        await stop.wait()
    finally:
        stop.set()
        if scheduler.running:
            scheduler.shutdown(wait=False)
        await executor.drain()
        await beats
        await queue.aclose()
        log.info("scheduler stopped", extra={"enqueued": runner.enqueued, "taken_elsewhere": runner.taken})
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ticker scheduler",
        description="Enqueue periodic jobs (token and instrument refresh before the open, order sync, "
                    "portfolio refresh and strike rebalancing in market hours, daily cleanup). Safe to run as several "
                    "replicas: each slot is enqueued once.")
    parser.add_argument("--test-interval-seconds", type=float, default=None, metavar="N",
                        help="instead of the real schedule, enqueue a probe job every N seconds")
    args = parser.parse_args(argv)
    if args.test_interval_seconds is not None and not args.test_interval_seconds >= 0.5:
        parser.error("--test-interval-seconds must be at least 0.5")
    return args


def main(argv: list[str] | None = None) -> int:
    from ticker.infra.runtime.startup import init_process

    args = parse_args(sys.argv[1:] if argv is None else argv)
    settings = init_process()
    return asyncio.run(run(settings, args.test_interval_seconds))

