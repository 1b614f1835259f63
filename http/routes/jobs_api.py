"""Jobs by id (status, long-poll, cancel) and the history request that becomes one.

`GET /history` checks the range by the rules the history job applies (`ticker.core.history`), so a
range the job would refuse is a 422 naming the field and nothing is queued. Its job id derives from
the normalised parameters (times in India time), so repeating the same request returns the same job
while its result is kept, and a finished one answers from that result.
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, tzinfo
from typing import Literal

from aiohttp import web
from pydantic import Field

from ticker.core.clock import IST
from ticker.core.contracts import JOB_FETCH_HISTORY
from ticker.core.history import range_issues
from ticker.http.accept import accepted, submit
from ticker.http.inputs import QueryBool, QueryDateTime, Strict, read_query
from ticker.http.middleware.errors import ApiError, json_response, not_found
from ticker.http.state import Services, services
from ticker.infra.queue.enqueue import scoped_job_id
from ticker.infra.queue.status import JobStatus, cancel_job, job_status

routes = web.RouteTableDef()

MAX_WAIT_SECONDS = 30.0
RECHECK_SECONDS = 2.0  # a long-poll re-reads this often even when no finished signal arrives
_JOB_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
# the keys of ticker.core.history.KITE_MAX_DAYS (a test holds them equal)
Interval = Literal["minute", "3minute", "5minute", "10minute", "15minute", "30minute", "60minute", "day"]


class WaitQuery(Strict):
    wait: float = Field(0, ge=0, le=MAX_WAIT_SECONDS, allow_inf_nan=False)


class HistoryQuery(Strict):
    model_config = Strict.model_config | {"populate_by_name": True}

    instrument_token: int = Field(ge=0, lt=1 << 32)
    from_: QueryDateTime = Field(alias="from")
    to: QueryDateTime
    interval: Interval = "minute"
    oi: QueryBool = False
    continuous: QueryBool = False
    greeks: QueryBool = False


def _job_id(request: web.Request) -> str:
    job_id = request.match_info["job_id"]
    if not _JOB_ID.match(job_id):
        raise not_found("job", job_id[:128])
    return job_id


async def wait_for(svc: Services, job_id: str, wait: float) -> JobStatus | None:
    """The job's status, after waiting up to `wait` seconds for it to reach a terminal state.

    It is read again when its worker says it finished (`FinishedJobs`), and every RECHECK_SECONDS
    in case that message was lost; a shutdown ends the wait early (the client polls again)."""
    if svc.finished is None or wait <= 0:
        return await job_status(svc.redis, svc.db, svc.names, job_id)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    with svc.finished.watch(job_id) as finished:
        while True:
            status = await job_status(svc.redis, svc.db, svc.names, job_id)
            remaining = deadline - loop.time()
            if status is None or status.terminal or remaining <= 0 or svc.stopping.is_set():
                return status
            await finished.wait(min(RECHECK_SECONDS, remaining))


@routes.get("/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    svc = services(request)
    job_id = _job_id(request)
    q = read_query(request, WaitQuery)
    status = await wait_for(svc, job_id, q.wait)
    if status is None:
        raise not_found("job", job_id)
    return json_response(status.model_dump(mode="json"))


@routes.delete("/jobs/{job_id}")
async def cancel(request: web.Request) -> web.Response:
    """Cancel a job that has not started; one that runs or has run cannot be taken back."""
    svc = services(request)
    job_id = _job_id(request)
    if await cancel_job(svc.redis, svc.db, svc.names, job_id, keep_result_s=svc.settings.job_result_ttl_seconds):
        return json_response({"job_id": job_id, "cancelled": True})
    status = await job_status(svc.redis, svc.db, svc.names, job_id)
    if status is None:
        raise not_found("job", job_id)
    raise ApiError(409, "not_cancellable", f"job {job_id} is {status.status}; only a job that has not "
                   "started can be cancelled", {"status": status.status})


def history_range(q: HistoryQuery, tz: tzinfo) -> tuple[datetime, datetime]:
    """The query's range in India time (naive times are in `tz`, the market's zone), or a 422."""
    if (q.from_.tzinfo is None) != (q.to.tzinfo is None):
        raise _range_error("to", "tz_mismatch", "give both from and to with a time zone offset, or neither")
    start = q.from_ if q.from_.tzinfo else q.from_.replace(tzinfo=tz)
    end = q.to if q.to.tzinfo else q.to.replace(tzinfo=tz)
    issues = range_issues(start, end, q.interval)
    if issues:
        details = [{"field": i.field, "location": "query", "message": i.message, "type": i.kind} for i in issues]
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
        raise ApiError(422, "validation_error", f"invalid query: {summary}", details)
    return start.astimezone(IST), end.astimezone(IST)


def _range_error(field: str, kind: str, message: str) -> ApiError:
    return ApiError(422, "validation_error", f"invalid query: {field}: {message}",
                    [{"field": field, "location": "query", "message": message, "type": kind}])


def history_payload(q: HistoryQuery, tz: tzinfo) -> dict:
    """The history job's payload for a checked query (ApiError 422 when the range is refused)."""
    start, end = history_range(q, tz)
    return {"instrument_token": q.instrument_token, "from": start.isoformat(), "to": end.isoformat(),
            "interval": q.interval, "oi": q.oi, "continuous": q.continuous, "greeks": q.greeks}


@routes.get("/history")
async def history(request: web.Request) -> web.Response:
    svc = services(request)
    q = read_query(request, HistoryQuery)
    payload = history_payload(q, svc.settings.tz)  # the range first: it needs no database
    if await svc.refs.instrument_by_token(q.instrument_token) is None:
        raise ApiError(422, "validation_error", f"instrument_token: unknown instrument {q.instrument_token}",
                       [{"field": "instrument_token", "location": "query", "message": "unknown instrument",
                         "type": "unknown_instrument"}])
    job_id = scoped_job_id(svc.names, "history", *(payload[k] for k in sorted(payload)))
    new = await submit(svc, JOB_FETCH_HISTORY, payload, job_id)
    return accepted(job_id, new)
