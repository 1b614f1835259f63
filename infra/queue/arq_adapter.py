"""Our side of arq: the only module that knows arq's internals.

arq's key layout (`arq:job:<id>`, `arq:result:<id>`, `arq:in-progress:<id>`, `arq:retry:<id>`, the
queue's health-check key), its pickled job and result records, the `ctx` keys it hands a job, and the
Worker methods we extend all live here, checked by `tests/jobs/test_arq_contract.py` against the arq
version pinned in pyproject.toml. Everything else (enqueue, job status, the worker, the web) speaks
through the names below, so an arq upgrade breaks one module and one test, loudly.

Two signals ride beside arq's records, both explicit PUBLISHes (keyspace notifications are often off
on managed Redis): an enqueue publishes on its queue's wake channel so an idle worker polls at once
instead of every few milliseconds, and a worker publishes a job's id on the finished channel once its
result is written so a long-polling status request re-reads at once. A lost message only costs time:
workers and waiters re-check on a coarse timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import pickle
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from arq import constants as arq_constants
from arq.connections import ArqRedis
from arq.jobs import Job, serialize_job, serialize_result
from arq.typing import WorkerCoroutine
from arq.utils import timestamp_ms
from arq.worker import Function, Worker
from redis.asyncio import Redis
from redis.exceptions import WatchError

from ticker.core.contracts import Names
from ticker.infra.runtime.outage import REDIS_ERRORS, Outage

# The arq release line this module is written against (pyproject pins the same range).
ARQ_SERIES = "0.28"
FINISHED_SUFFIX = "jobs:finished"
RESUBSCRIBE_S = 1.0  # after the wake channel's subscription is lost


# --- keys and channels ---------------------------------------------------------------------------
def job_key(job_id: str) -> str:
    return arq_constants.job_key_prefix + job_id


def result_key(job_id: str) -> str:
    return arq_constants.result_key_prefix + job_id


def in_progress_key(job_id: str) -> str:
    return arq_constants.in_progress_key_prefix + job_id


def retry_key(job_id: str) -> str:
    return arq_constants.retry_key_prefix + job_id


def health_check_key(queue: str) -> str:
    return queue + arq_constants.health_check_key_suffix


def wake_channel(queue: str) -> str:
    """Published on by every enqueue onto `queue`; its workers listen to poll at once."""
    return queue + ":wake"


def finished_channel(names: Names) -> str:
    """Published on with a job's id once its worker has written the job's result."""
    return names.key(FINISHED_SUFFIX)


# --- records -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobRecord:
    """A queued job as arq stores it."""

    function: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    tries: int
    enqueued_ms: int


@dataclass(frozen=True)
class ResultRecord:
    """A finished job's result as arq stores it (`value` is the exception when it failed)."""

    function: str
    success: bool
    value: Any
    tries: int
    enqueued_ms: int
    started_ms: int
    finished_ms: int


class ForeignError(Exception):
    """Stands in for an exception class this process cannot (or must not) import."""


class _Unpickler(pickle.Unpickler):
    # Results hold the job's exception; the web process must not import the job rooms to read it.
    def find_class(self, module: str, name: str) -> Any:
        if module.startswith(("ticker.jobs", "ticker.streamer", "ticker.http")):
            return ForeignError
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return ForeignError


def _loads(raw: bytes) -> dict[str, Any] | None:
    try:
        data = _Unpickler(io.BytesIO(raw)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError):
        return None  # an unreadable record reads as absent; the audit may still know the job
    return data if isinstance(data, dict) else None


def read_job(raw: bytes | None) -> JobRecord | None:
    data = _loads(raw) if raw else None
    if data is None:
        return None
    return JobRecord(function=data.get("f") or "", args=tuple(data.get("a") or ()), kwargs=data.get("k") or {},
                     tries=int(data.get("t") or 0), enqueued_ms=int(data.get("et") or 0))


def read_result(raw: bytes | None) -> ResultRecord | None:
    data = _loads(raw) if raw else None
    if data is None:
        return None
    return ResultRecord(function=data.get("f") or "", success=bool(data.get("s")), value=data.get("r"),
                        tries=int(data.get("t") or 0), enqueued_ms=int(data.get("et") or 0),
                        started_ms=int(data.get("st") or 0), finished_ms=int(data.get("ft") or 0))


def job_bytes(function: str, args: tuple[Any, ...], enqueued_ms: int) -> bytes:
    """A job definition exactly as arq's `enqueue_job` writes it."""
    return serialize_job(function, args, {}, None, enqueued_ms)


def failed_result_bytes(job_id: str, job: JobRecord, error: BaseException, now_ms: int) -> bytes:
    """A result record saying the job failed with `error` without running (e.g. cancelled)."""
    data = serialize_result(job.function, job.args, job.kwargs, job.tries, job.enqueued_ms, False, error,
                            now_ms, now_ms, f"{job_id}:{job.function}", "", job_id=job_id)
    if data is None:  # arq could not pickle even its fallback record
        raise ValueError(f"cannot record the failure of job {job_id}")
    return data


def now_ms() -> int:
    return timestamp_ms()


# --- enqueue -------------------------------------------------------------------------------------
# The same records arq's `enqueue_job` writes (job definition with arq's serializer and expiry, the
# queue entry), checked and written atomically by one script instead of WATCH/EXISTS/MULTI/EXEC:
# one round trip, no connection held across awaits, and it can share a pipeline with other calls.
# A job due now also wakes the queue's workers.
ENQUEUE_SCRIPT = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
redis.call('PSETEX', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
if ARGV[5] == '1' then redis.call('PUBLISH', KEYS[4], '') end
return 1
"""


def enqueue_call(queue: str, job_name: str, body: Any, *, job_id: str,
                 defer_by: float | None = None) -> tuple[list[str], list[Any]]:
    """(keys, args) for ENQUEUE_SCRIPT: `job_name(body)` as arq would store it on `queue`."""
    now = timestamp_ms()
    defer_ms = int(round(defer_by * 1000)) if defer_by else 0
    keys = [job_key(job_id), result_key(job_id), queue, wake_channel(queue)]
    return keys, [defer_ms + arq_constants.expires_extra_ms, job_bytes(job_name, (body,), now), now + defer_ms,
                  job_id, "0" if defer_ms else "1"]


# --- reading and cancelling ----------------------------------------------------------------------
@dataclass(frozen=True)
class ArqView:
    job: JobRecord | None
    result: ResultRecord | None
    running: bool
    tries: int


async def read_view(redis: Redis, job_id: str) -> ArqView:
    """What arq's keys say about a job, in one round trip."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(job_key(job_id))
        pipe.get(result_key(job_id))
        pipe.exists(in_progress_key(job_id))
        pipe.get(retry_key(job_id))
        job_raw, result_raw, running, tries = await pipe.execute()
    return ArqView(read_job(job_raw), read_result(result_raw), bool(running), int(tries or 0))


async def cancel_unstarted(redis: Redis, job_id: str, queues: tuple[str, ...], error: BaseException,
                           keep_result_s: float) -> bool:
    """Replace a job that never started by a failed result (`error`); False when it is running, has
    run once (a retry waiting), does not exist, or a worker takes it meanwhile."""
    keys = (job_key(job_id), in_progress_key(job_id), retry_key(job_id))
    async with redis.pipeline(transaction=True) as pipe:
        try:
            await pipe.watch(*keys)
            job = read_job(await pipe.get(keys[0]))
            if job is None or await pipe.exists(keys[1]) or await pipe.exists(keys[2]):
                return False
            data = failed_result_bytes(job_id, job, error, timestamp_ms())
            pipe.multi()
            pipe.delete(keys[0])
            for queue in queues:
                pipe.zrem(queue, job_id)
            pipe.set(result_key(job_id), data, px=int(keep_result_s * 1000))
            await pipe.execute()
        except WatchError:
            return False
    return True


async def job_result(pool: ArqRedis, job_id: str, queue: str, timeout: float | None) -> Any:
    """Wait for the job's result; raises the job's own exception when it failed."""
    return await Job(job_id, pool, _queue_name=queue).result(timeout=timeout)


# --- what a running job is told ------------------------------------------------------------------
@dataclass(frozen=True)
class JobContext:
    job_id: str
    job_try: int
    due_ms: int  # when the job became due: its enqueue time, or the end of its defer


def job_context(ctx: dict[str, Any]) -> JobContext:
    return JobContext(job_id=str(ctx.get("job_id", "")), job_try=int(ctx.get("job_try") or 1),
                      due_ms=int(ctx.get("score") or 0))


def wrap_function(function: Function,
                  wrap: Callable[[str, Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]) -> Function:
    """The same registered job function with its coroutine replaced by `wrap(name, coroutine)`."""
    return dataclasses.replace(function, coroutine=cast(WorkerCoroutine, wrap(function.name, function.coroutine)))


def datetime_ms(ms: int) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, tz=UTC) if ms else None


# --- the worker ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerCounts:
    queue: str
    running: int
    complete: int
    failed: int
    retried: int


class QueueWorker(Worker):
    """arq's Worker, with three changes.

    - Losing Redis pauses it instead of ending it: arq lets any Redis error escape its poll loop. A
      failed poll is recorded on the process's Redis `Outage`, waited out with jittered back-off and
      tried again on fresh connections; running jobs carry on.
    - Idle, it sleeps until woken instead of polling every `poll_delay`: by an enqueue onto its
      queue (the wake channel), a job of its own ending (a free slot), the next deferred job coming
      due, or at the latest `idle_recheck_s` (a lost wake-up, arq's own retries). Busy, it polls
      every `poll_delay` as arq does; with `idle_recheck_s` None it always does.
    - Once a job's result is written it publishes the job's id on `finished` (status long-polls).
    """

    def __init__(self, *, outage: Outage, finished: str | None, idle_recheck_s: float | None,
                 **kwargs: Any) -> None:
        super().__init__(after_job_end=self._job_ended, **kwargs)
        self.outage = outage
        self._finished = finished
        self._idle_recheck_s = idle_recheck_s
        self._wake = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None

    async def _poll_iteration(self) -> None:
        self._wake.clear()  # a wake-up from here on means work this poll may not have seen
        try:
            await super()._poll_iteration()
            if not self.burst and self._idle_recheck_s is not None:
                await self._idle(self._idle_recheck_s)
        except REDIS_ERRORS as exc:
            await asyncio.sleep(self.outage.failed(exc, f"polling {self.queue_name}"))
        else:
            self.outage.ok()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        # arq takes a concurrency slot before its claim transaction and does not give it back when
        # that transaction dies with the connection; give it back here, one job at a time.
        for job_id in job_ids:
            try:
                await super().start_jobs([job_id])
            except REDIS_ERRORS:
                self._release_sem_dec_counter_on_complete()
                raise
            task = self.tasks.get(job_id.decode())
            if task is not None:
                task.add_done_callback(lambda _: self._wake.set())

    async def _idle(self, recheck_s: float) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen(), name=f"wake-{self.queue_name}")
        if self._wake.is_set():
            return
        now = timestamp_ms()
        later = await self.pool.zrangebyscore(self.queue_name, min=f"({now}", max="+inf", start=0, num=1,
                                              withscores=True)
        # arq records the worker's health from its poll, and lets the key lapse one second after
        # the interval: poll in time for it
        wait = min(recheck_s, max(0.0, self._last_health_check + self.health_check_interval - now / 1000))
        if later:
            wait = min(wait, max(0.0, (later[0][1] - now) / 1000))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._wake.wait()

    async def _listen(self) -> None:
        """Set the wake-up on every message on the queue's wake channel, for as long as it runs."""
        while True:
            pubsub = self.pool.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(wake_channel(self.queue_name))
                self._wake.set()  # whatever was enqueued before the subscription took
                async for _message in pubsub.listen():
                    self._wake.set()
            except REDIS_ERRORS:
                await asyncio.sleep(RESUBSCRIBE_S)  # the poll loop reports the outage
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _job_ended(self, ctx: dict[str, Any]) -> None:
        if self._finished is None:
            return
        with contextlib.suppress(*REDIS_ERRORS):  # a lost signal only delays a long-poll's re-check
            await self.pool.publish(self._finished, str(ctx.get("job_id", "")))

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, *REDIS_ERRORS):
                await self._listener
        await super().close()


def worker_counts(worker: Worker) -> WorkerCounts:
    return WorkerCounts(queue=worker.queue_name, running=sum(not t.done() for t in worker.tasks.values()),
                        complete=worker.jobs_complete, failed=worker.jobs_failed, retried=worker.jobs_retried)


def running_tasks(worker: Worker) -> list[asyncio.Task[Any]]:
    return [t for t in worker.tasks.values() if not t.done()]


def stop_taking_jobs(worker: Worker) -> None:
    worker.allow_pick_jobs = False


def cancel_running(worker: Worker) -> None:
    """Cancel the worker's jobs and loop, as SIGTERM would; arq hands the cancelled jobs back."""
    worker.handle_sig(signal.SIGTERM)


def set_in_progress_timeout(worker: Worker, seconds: float) -> None:
    """How long arq's in-progress marker outlives a job's start (a dead worker's job waits this long)."""
    worker.in_progress_timeout_s = seconds
