"""Mutual-fund jobs: place and cancel an MF order, register, modify and cancel a SIP, each exactly once
in effect.

They run on the order jobs' path (`run_order_job`): audit row and attempts, the account's breaker,
retries with backoff on transient errors, the dead-letter queue for refusals and exhausted retries;
their calls draw from the account's general ("api") rate limit. A place job sends Kite the tag
derived from its job id, so an attempt after one that may have reached Kite looks for an order (or
SIP) with that tag first and adopts it; a dead letter's replay looks for its original's tag too. Cancels look at the current state on such a retry; a SIP
modification sets values, so repeating it is harmless.

A job does not refresh the MF snapshots itself (each refresh is four calls on the same rate limit):
`GET /mf/...?refresh=true` shows its effect.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from arq.worker import func
from pydantic import ValidationError

from ticker.core.mutual_funds import MF_JOB_NAMES, MfKind, MfPayload, mf_tag, validate_mf_order, validate_sip
from ticker.infra.kite.rest import KiteApi
from ticker.infra.orders.mf_rules import mf_facts
from ticker.infra.orders.validate import UnknownAccount, resolve_account_id
from ticker.jobs.context import deps
from ticker.jobs.orders.runner import (
    Action,
    Attempt,
    Check,
    OrderJob,
    Outcome,
    Recover,
    fail_for_good,
    pace_lookup,
    run_order_job,
)

# (payload, job, Kite call timeout) -> the Kite action and, for places, the look-up that finds a lost one
Maker = Callable[[MfPayload, OrderJob, float], tuple[Action, Recover | None]]


async def _open(ctx: dict[str, Any], payload: dict[str, Any], kind: MfKind) -> tuple[MfPayload, OrderJob]:
    """(payload with its account resolved, job). A payload that can never succeed is dead-lettered."""
    d = deps(ctx)
    job = OrderJob(deps=d, job_id=ctx["job_id"], job_try=ctx["job_try"], job_name=MF_JOB_NAMES[kind], kind=kind,
                   account_id="", payload=payload, bucket="api")
    try:
        p = MfPayload.model_validate(payload)
        account_id = p.account_id or await resolve_account_id(d.db, d.settings, None)
    except ValidationError as exc:
        err = exc.errors()[0]
        await fail_for_good(job, f"invalid payload: {'.'.join(map(str, err['loc']))}: {err['msg']}")
    except UnknownAccount as exc:
        await fail_for_good(job, str(exc))
    p = p.model_copy(update={"account_id": account_id})
    return p, replace(job, account_id=account_id, idempotency_key=p.idempotency_key, prior_tags=p.prior_tags,
                      tag=mf_tag(job.job_id) if kind in ("mf_place", "sip_place") else None)


def _checker(job: OrderJob, p: MfPayload) -> Check:
    """Why the request can never succeed by what the account's MF snapshots say (it is then
    dead-lettered without a call to Kite), or None."""

    async def check() -> str | None:
        facts = await mf_facts(job.deps.redis, job.deps.names, job.account_id)
        if p.order is not None:
            issues = validate_mf_order(p.order, facts.funds, facts.held(p.order.tradingsymbol))
        elif p.sip is not None:
            issues = validate_sip(p.sip, facts.funds, facts.held(p.sip.tradingsymbol))
        else:
            issues = []
        return f"{issues[0].field}: {issues[0].message}" if issues else None

    return check


async def _run(ctx: dict[str, Any], payload: dict[str, Any], kind: MfKind, make: Maker) -> dict[str, Any]:
    p, job = await _open(ctx, payload, kind)
    action, recover = make(p, job, job.deps.settings.order_request_timeout)
    return await run_order_job(job, action, recover=recover, check=_checker(job, p))


async def _paced(job: OrderJob) -> bool:
    """Room in Kite's limit for a look at the current state (always True, once there is room)."""
    await pace_lookup(job)
    return True


def _place_order(p: MfPayload, job: OrderJob, timeout: float) -> tuple[Action, Recover]:
    assert p.order is not None and job.tag is not None
    order, tag, tags = p.order, job.tag, {job.tag, *job.prior_tags}

    async def lookup(api: KiteApi) -> Outcome | None:
        await pace_lookup(job)  # a call beyond the attempt's own: it takes its own place in Kite's limit
        found = next((o for o in await api.mf_orders(timeout=timeout) if o.tag in tags), None)
        return None if found is None else Outcome(adopted=True, kite_status=found.status,
                                                  mf_ids={"order_id": found.order_id})

    async def action(api: KiteApi, attempt: Attempt) -> Outcome:
        if attempt.may_exist and (found := await lookup(api)) is not None:
            return found
        placed = await api.place_mf_order(order.kite_params(tag), timeout=timeout)
        return Outcome(kite_status="OPEN", mf_ids={"order_id": placed.order_id})

    return action, lookup


def _cancel_order(p: MfPayload, job: OrderJob, timeout: float) -> tuple[Action, None]:
    order_id = p.order_id or ""

    async def action(api: KiteApi, attempt: Attempt) -> Outcome:
        if attempt.may_exist and await _paced(job) and \
                (await api.mf_order(order_id, timeout=timeout)).status == "CANCELLED":
            return Outcome(adopted=True, kite_status="CANCELLED", mf_ids={"order_id": order_id})
        done = await api.cancel_mf_order(order_id, timeout=timeout)
        return Outcome(kite_status="CANCELLED", mf_ids={"order_id": done.order_id})

    return action, None


def _place_sip(p: MfPayload, job: OrderJob, timeout: float) -> tuple[Action, Recover]:
    assert p.sip is not None and job.tag is not None
    sip, tag, tags = p.sip, job.tag, {job.tag, *job.prior_tags}

    async def lookup(api: KiteApi) -> Outcome | None:
        await pace_lookup(job)
        found = next((s for s in await api.mf_sips(timeout=timeout) if s.tag in tags), None)
        return None if found is None else Outcome(adopted=True, kite_status=found.status,
                                                  mf_ids={"sip_id": found.sip_id})

    async def action(api: KiteApi, attempt: Attempt) -> Outcome:
        if attempt.may_exist and (found := await lookup(api)) is not None:
            return found
        placed = await api.place_mf_sip(sip.kite_params(tag), timeout=timeout)
        return Outcome(kite_status="ACTIVE", mf_ids={"sip_id": placed.sip_id})

    return action, lookup


def _modify_sip(p: MfPayload, job: OrderJob, timeout: float) -> tuple[Action, None]:
    assert p.modify is not None
    sip_id, change = p.sip_id or "", p.modify

    async def action(api: KiteApi, attempt: Attempt) -> Outcome:
        done = await api.modify_mf_sip(sip_id, change.kite_params(), timeout=timeout)
        return Outcome(kite_status=change.status, mf_ids={"sip_id": done.sip_id})

    return action, None


def _cancel_sip(p: MfPayload, job: OrderJob, timeout: float) -> tuple[Action, None]:
    sip_id = p.sip_id or ""

    async def action(api: KiteApi, attempt: Attempt) -> Outcome:
        if attempt.may_exist and await _paced(job) and \
                (await api.mf_sip(sip_id, timeout=timeout)).status == "CANCELLED":
            return Outcome(adopted=True, kite_status="CANCELLED", mf_ids={"sip_id": sip_id})
        done = await api.cancel_mf_sip(sip_id, timeout=timeout)
        return Outcome(kite_status="CANCELLED", mf_ids={"sip_id": done.sip_id})

    return action, None


async def place_mf_order(ctx: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    return await _run(ctx, payload, "mf_place", _place_order)


async def cancel_mf_order(ctx: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    return await _run(ctx, payload, "mf_cancel", _cancel_order)


async def place_mf_sip(ctx: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    return await _run(ctx, payload, "sip_place", _place_sip)


async def modify_mf_sip(ctx: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    return await _run(ctx, payload, "sip_modify", _modify_sip)


async def cancel_mf_sip(ctx: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    return await _run(ctx, payload, "sip_cancel", _cancel_sip)


FUNCTIONS = [
    func(place_mf_order, name=MF_JOB_NAMES["mf_place"]),
    func(cancel_mf_order, name=MF_JOB_NAMES["mf_cancel"]),
    func(place_mf_sip, name=MF_JOB_NAMES["sip_place"]),
    func(modify_mf_sip, name=MF_JOB_NAMES["sip_modify"]),
    func(cancel_mf_sip, name=MF_JOB_NAMES["sip_cancel"]),
]
