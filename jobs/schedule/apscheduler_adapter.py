"""Our side of APScheduler: the only module that knows its internals.

The scheduler needs two things APScheduler 3 does not offer publicly: each firing's scheduled run
time handed to the job (the slot every replica agrees on), and a way to wait at shutdown for the
firings still running. Both come from an executor that overrides `AsyncIOExecutor._do_submit_job`
and reports back through `_run_job_success`, using the executor's `_eventloop` and
`_pending_futures` and the job's `_jobstore_alias`. `tests/data/test_apscheduler_contract.py`
holds these against the APScheduler version pinned in pyproject.toml.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, tzinfo
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger

log = logging.getLogger(__name__)

APSCHEDULER_SERIES = "3.11"
# (id, trigger, coalesce missed firings?, what to run with the scheduled time)
Entry = tuple[str, BaseTrigger, bool, Callable[..., Awaitable[Any]]]


class SlotExecutor(AsyncIOExecutor):
    """Like APScheduler's asyncio executor, but hands each job its scheduled run time (the slot)
    and keeps every task it starts, so shutdown can wait for them."""

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        task = self._eventloop.create_task(self._run(job, run_times))
        self._pending_futures.add(task)
        task.add_done_callback(self._pending_futures.discard)

    async def _run(self, job: Any, run_times: list[datetime]) -> None:
        events = []
        for run_time in run_times:
            try:
                await job.func(run_time, *job.args, **job.kwargs)
            except Exception as exc:
                log.exception("scheduled enqueue failed", extra={"schedule": job.id})
                events.append(JobExecutionEvent(EVENT_JOB_ERROR, job.id, job._jobstore_alias, run_time,
                                                exception=exc))
            else:
                events.append(JobExecutionEvent(EVENT_JOB_EXECUTED, job.id, job._jobstore_alias, run_time))
        self._run_job_success(job.id, events)

    async def drain(self) -> None:
        """Wait for every firing still running."""
        if self._pending_futures:
            await asyncio.gather(*list(self._pending_futures), return_exceptions=True)


def slot_scheduler(tz: tzinfo, entries: Sequence[Entry]) -> tuple[AsyncIOScheduler, SlotExecutor]:
    """An AsyncIOScheduler in `tz` running `entries` on a SlotExecutor. Each entry's function must
    accept the run time as its first argument and default it (APScheduler checks the signature)."""
    executor = SlotExecutor()
    scheduler = AsyncIOScheduler(
        timezone=tz, executors={"default": executor},
        # No grace limit: a late firing is better than none (coalescing is per schedule).
        job_defaults={"max_instances": 1, "misfire_grace_time": None},
    )
    for name, trigger, coalesce, fire in entries:
        scheduler.add_job(fire, trigger, id=name, name=name, coalesce=coalesce)
    return scheduler, executor
