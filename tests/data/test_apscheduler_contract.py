"""APScheduler's internals as `jobs/schedule/apscheduler_adapter.py` relies on them, held against the
installed APScheduler: a real scheduler fires a job through the slot executor, which hands it its
scheduled run time and reports the run back so APScheduler's own events and bookkeeping see it."""

from __future__ import annotations

import asyncio
import inspect
from datetime import UTC, datetime, timedelta

import apscheduler
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.job import Job
from apscheduler.triggers.date import DateTrigger

from tests.waiting import wait_for
from ticker.jobs.schedule.apscheduler_adapter import APSCHEDULER_SERIES, slot_scheduler


def test_the_installed_apscheduler_is_the_series_the_adapter_knows() -> None:
    assert apscheduler.__version__.startswith(APSCHEDULER_SERIES + "."), (
        f"APScheduler {apscheduler.__version__} is installed; the adapter knows {APSCHEDULER_SERIES}: check the "
        "executor members it uses against this release, then move APSCHEDULER_SERIES and the pin")


def test_executor_members_the_adapter_uses_exist() -> None:
    assert list(inspect.signature(AsyncIOExecutor._do_submit_job).parameters) == ["self", "job", "run_times"]
    assert list(inspect.signature(AsyncIOExecutor._run_job_success).parameters) == ["self", "job_id", "events"]
    assert "_jobstore_alias" in Job.__slots__
    assert list(inspect.signature(JobExecutionEvent).parameters)[:4] == ["code", "job_id", "jobstore",
                                                                        "scheduled_run_time"]


async def test_a_firing_gets_its_run_time_and_is_reported_back() -> None:
    seen: list[datetime] = []
    events: list[int] = []
    due = datetime.now(UTC) + timedelta(milliseconds=200)

    async def fire(run_time: datetime | None = None) -> None:
        seen.append(run_time)  # type: ignore[arg-type]

    async def fail(run_time: datetime | None = None) -> None:
        raise RuntimeError("no")

    scheduler, executor = slot_scheduler(UTC, [("ok", DateTrigger(due), True, fire),
                                               ("bad", DateTrigger(due), True, fail)])
    scheduler.add_listener(lambda e: events.append(e.code), EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
    scheduler.start()
    try:
        assert executor._eventloop is asyncio.get_running_loop() and isinstance(executor._pending_futures, set)

        async def both_reported() -> bool:
            return sorted(events) == sorted([EVENT_JOB_EXECUTED, EVENT_JOB_ERROR])

        await wait_for(both_reported)
        assert seen == [due]
        await executor.drain()
        assert not executor._pending_futures
    finally:
        scheduler.shutdown(wait=False)
