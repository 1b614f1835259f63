"""GTT jobs: place, modify and delete a GTT at Kite, each exactly once in effect.

They run on the order jobs' path (`run_order_job`): audit row and attempts, the account's breaker,
retries with backoff on transient errors, and the dead-letter queue for rejections and exhausted
retries. GTT calls draw from the account's general ("api") rate limit, as Kite counts them.

Kite's GTTs carry no tag, so a place whose earlier attempt may have reached Kite looks for a GTT with
the same condition and orders, created since the job started and not recorded by another place job,
and adopts it instead of placing a second one. Modify and delete look at the GTT's current state on
a retry for the same reason.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from arq.worker import func
from pydantic import BaseModel, ValidationError

from ticker.core.clock import IST
from ticker.core.contracts import JOB_DELETE_GTT, JOB_MODIFY_GTT, JOB_PLACE_GTT
from ticker.core.gtt import (
    DeleteGttPayload,
    GttKind,
    GttRequest,
    ModifyGttPayload,
    PlaceGttPayload,
    gtt_version_key,
    same_gtt,
    validate_gtt,
)
from ticker.infra.kite.rest import KiteApi
from ticker.infra.orders import audit_trail as audit
from ticker.infra.orders.validate import UnknownAccount, find_instrument, resolve_account_id
from ticker.jobs.context import deps
from ticker.jobs.data.portfolio_reads import cache_key
from ticker.jobs.orders.runner import (
    INFRA_ERRORS,
    Attempt,
    Check,
    OrderJob,
    Outcome,
    error_text,
    fail_for_good,
    run_order_job,
)

log = logging.getLogger(__name__)
KINDS: dict[GttKind, tuple[str, type[BaseModel]]] = {
    "gtt_place": (JOB_PLACE_GTT, PlaceGttPayload),
    "gtt_modify": (JOB_MODIFY_GTT, ModifyGttPayload),
    "gtt_delete": (JOB_DELETE_GTT, DeleteGttPayload),
}
CLOCK_SKEW = timedelta(seconds=5)  # Kite's created_at against our clock, when adopting a placed GTT


async def _open(ctx: dict[str, Any], payload: dict[str, Any], kind: GttKind) -> tuple[Any, OrderJob]:
    """(payload with its account resolved, job). A payload that can never succeed is dead-lettered."""
    d = deps(ctx)
    job_name, model = KINDS[kind]
    job = OrderJob(deps=d, job_id=ctx["job_id"], job_try=ctx["job_try"], job_name=job_name, kind=kind,
                   account_id="", payload=payload, bucket="api")
    try:
        p: Any = model.model_validate(payload)  # one of KINDS' payload models
        named = p.gtt.account_id if hasattr(p, "gtt") else p.account_id
        account_id = named or await resolve_account_id(d.db, d.settings, None)
    except ValidationError as exc:
        err = exc.errors()[0]
        await fail_for_good(job, f"invalid payload: {'.'.join(map(str, err['loc']))}: {err['msg']}")
    except UnknownAccount as exc:
        await fail_for_good(job, str(exc))
    if hasattr(p, "gtt"):
        p = p.model_copy(update={"gtt": p.gtt.model_copy(update={"account_id": account_id})})
    else:
        p = p.model_copy(update={"account_id": account_id})
    job = replace(job, account_id=account_id, idempotency_key=p.idempotency_key, payload=p.model_dump(mode="json"))
    return p, job


def _checker(job: OrderJob, req: GttRequest) -> Check:
    """Why the GTT can never succeed (it is then dead-lettered without a call to Kite), or None."""

    async def check() -> str | None:
        issues = validate_gtt(req, await find_instrument(job.deps.db, req.exchange, req.tradingsymbol))
        return f"{issues[0].field}: {issues[0].message}" if issues else None

    return check


async def _settled(job: OrderJob, result: dict[str, Any]) -> dict[str, Any]:
    """The job's result, once cached reads of the account's GTTs are dropped (they are stale now) and
    the account's GTT version is bumped (so the next read is a new job)."""
    d, trigger_id = job.deps, result.get("trigger_id")
    keys = [cache_key(d.names, job.account_id, "gtts")]
    if trigger_id is not None:
        keys.append(cache_key(d.names, job.account_id, "gtt", int(trigger_id)))
    try:
        async with d.redis.pipeline(transaction=False) as pipe:
            pipe.delete(*keys)
            pipe.incr(gtt_version_key(d.names, job.account_id))
            await pipe.execute()
    except INFRA_ERRORS as exc:  # reads may then answer from before the write for one cache window
        log.warning("GTT job %s: cached GTT reads not dropped: %s", job.job_id, error_text(exc))
    return result


def _ist(stamp: datetime | str | None) -> datetime | None:
    """A Kite timestamp (naive, IST) as an aware time; None when Kite sent none or no readable one."""
    return stamp.replace(tzinfo=IST) if isinstance(stamp, datetime) else None


def is_replay(job: OrderJob) -> bool:
    """A replay of a dead letter (its idempotency key is `replay:<job id>:<n>`, see
    ticker.core.orders.replay_key): the job it replays may have placed the GTT already."""
    return (job.idempotency_key or "").startswith("replay:")


async def find_placed(job: OrderJob, api: KiteApi, req: GttRequest, timeout: float) -> Outcome | None:
    """A GTT an earlier attempt of this job placed: same content, created since the job started (or,
    for a replay, at any time), not recorded by another place job."""
    record = await audit.get_order(job.deps.db, job.job_id)
    since = None
    if record is not None and not is_replay(job):
        since = (record.started_at or record.created_at) - CLOCK_SKEW
    for gtt in await api.gtts(timeout=timeout):
        created = _ist(gtt.created_at)
        if since is not None and (created is None or created < since):
            continue
        if same_gtt(req, gtt.to_json()) and not await audit.gtt_claimed(job.deps.db, gtt.id, job.job_id):
            return Outcome(trigger_id=gtt.id, adopted=True, kite_status=gtt.status)
    return None


async def place_gtt(ctx: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    p, job = await _open(ctx, payload, "gtt_place")
    req: GttRequest = p.gtt
    if is_replay(job):  # the first attempt looks before it places (order replays carry prior tags)
        job = replace(job, prior_tags=[job.idempotency_key or ""])
    timeout = job.deps.settings.order_request_timeout

    async def lookup(api: KiteApi) -> Outcome | None:
        return await find_placed(job, api, req, timeout)

    async def action(api: KiteApi, attempt: Attempt) -> Outcome:
        if attempt.may_exist and (found := await lookup(api)) is not None:
            return found
        placed = await api.place_gtt(req.kite_params(), timeout=timeout)
        return Outcome(trigger_id=placed.trigger_id, kite_status="active")

    return await _settled(job, await run_order_job(job, action, recover=lookup, check=_checker(job, req)))


async def modify_gtt(ctx: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    p, job = await _open(ctx, payload, "gtt_modify")
    req: GttRequest = p.gtt
    timeout = job.deps.settings.order_request_timeout

    async def action(api: KiteApi, attempt: Attempt) -> Outcome:
        if attempt.may_exist:
            current = await api.gtt(p.trigger_id, timeout=timeout)
            if same_gtt(req, current.to_json()):
                return Outcome(trigger_id=p.trigger_id, adopted=True, kite_status=current.status)
        modified = await api.modify_gtt(p.trigger_id, req.kite_params(), timeout=timeout)
        return Outcome(trigger_id=modified.trigger_id, kite_status="active")

    return await _settled(job, await run_order_job(job, action, check=_checker(job, req)))


async def delete_gtt(ctx: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    p, job = await _open(ctx, payload, "gtt_delete")
    timeout = job.deps.settings.order_request_timeout

    async def action(api: KiteApi, attempt: Attempt) -> Outcome:
        if attempt.may_exist:
            current = await api.gtt(p.trigger_id, timeout=timeout)
            if current.status == "deleted":
                return Outcome(trigger_id=p.trigger_id, adopted=True, kite_status="deleted")
        deleted = await api.delete_gtt(p.trigger_id, timeout=timeout)
        return Outcome(trigger_id=deleted.trigger_id, kite_status="deleted")

    return await _settled(job, await run_order_job(job, action))


FUNCTIONS = [
    func(place_gtt, name=JOB_PLACE_GTT),
    func(modify_gtt, name=JOB_MODIFY_GTT),
    func(delete_gtt, name=JOB_DELETE_GTT),
]
