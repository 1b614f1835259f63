"""One run of an order job: the path place, modify and cancel share.

    look up together: credentials, audit row, request validity, breaker -> a rate-limit grant
    -> attempt row -> the Kite action (which arms the grant just before its counted call)
    -> success: audit + result | transient: retry with backoff | permanent or exhausted: dead letter

Waiting for the breaker or the rate limit hands the job back to the queue (arq `Retry` with a
defer) without counting an attempt; only calls to Kite count. The attempt row is written before
the call, so a later run knows an earlier one may have reached Kite. The grant draws on the budget
of the account's Kite user and counts from when the call is sent until a window after its answer
(infra/kite/limits.py); a grant whose call never went out is given back. The day's order budget used
up fails the order at once: Kite's count starts again only at midnight IST.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, cast

import asyncpg
import redis.exceptions
from arq import Retry
from pydantic import BaseModel

from ticker.core.contracts import JOB_REFRESH_TOKENS
from ticker.core.gtt import GttKind
from ticker.core.mutual_funds import MfKind
from ticker.core.orders import OrderJobFailed, OrderKind
from ticker.infra.kite.breaker import CircuitBreaker
from ticker.infra.kite.limits import Budget, Grant, KiteLimiter, RateLimited
from ticker.infra.kite.rest import (
    DataException,
    KiteApi,
    KiteException,
    KiteTimeout,
    KiteUnreachable,
    TokenException,
    is_rate_limited,
    is_transient,
)
from ticker.infra.orders import audit_trail as audit
from ticker.infra.queue.enqueue import enqueue, scoped_job_id
from ticker.infra.runtime.settings import Settings
from ticker.jobs.context import Deps
from ticker.jobs.kite_clients import AccountUnavailable, kite_clients
from ticker.jobs.orders.dead_letter import dead_letter_order

log = logging.getLogger(__name__)

HOLD_MARGIN_S = 1.0  # a grant counts as in flight for the call's timeout and this much more
# Our own infrastructure failing (Postgres, Redis) is not the order's fault: hand the job back.
INFRA_ERRORS = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class Outcome(BaseModel):
    kite_order_id: str | None = None
    adopted: bool = False  # an order an earlier attempt placed, found by its tag
    kite_status: str | None = None
    trigger_id: int | None = None  # the GTT a GTT job placed, modified or deleted
    mf_ids: dict[str, str] = {}  # an MF job's Kite ids (order_id, sip_id): into the result, not the order columns


class AttemptResult(BaseModel):
    job_id: str
    kind: OrderKind | GttKind | MfKind
    account_id: str
    kite_order_id: str | None
    tag: str | None
    adopted: bool
    attempts: int
    kite_status: str | None = None
    client_tag: str | None = None
    basket_id: str | None = None


async def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Attempt:
    number: int
    may_exist: bool  # an earlier attempt (or the job this one replays) may have reached Kite
    sending: Callable[[], Awaitable[None]] = _nothing  # await just before the rate-limited call goes out


@dataclass
class OrderJob:
    deps: Deps
    job_id: str
    job_try: int
    job_name: str
    kind: OrderKind | GttKind | MfKind
    account_id: str
    payload: dict[str, Any]
    tag: str | None = None
    prior_tags: list[str] = field(default_factory=list)
    idempotency_key: str | None = None
    basket_id: str | None = None
    client_tag: str | None = None
    breaker_dirty: bool = True  # failures may be counted against the account: a success must reset them
    bucket: str = "orders"  # the account's rate-limit bucket its Kite call draws from (GTT writes: "api")


Action = Callable[[KiteApi, Attempt], Awaitable[Outcome]]
# Called when retries run out after an ambiguous error: may find the order after all (place only).
Recover = Callable[[KiteApi], Awaitable[Outcome | None]]
Check = Callable[[], Awaitable[str | None]]


def attach_order_components(deps: Deps) -> None:
    """The shared clients every order job uses (one per process; the limiter and breaker come with Deps)."""
    kite_clients(deps)


def limiter(deps: Deps) -> KiteLimiter:
    return deps.limiter


def breaker(deps: Deps) -> CircuitBreaker:
    return deps.breaker


async def pace_lookup(job: OrderJob) -> None:
    """Wait for room in Kite's limit on other calls (10/s per user) before an order-book look-up."""
    d = job.deps
    await limiter(d).acquire(await kite_clients(d).budget(job.account_id), "api")


def backoff(settings: Settings, attempt: int, exc: BaseException | None = None) -> float:
    """Exponential with full-range jitter (x0.5..x1.5), capped; after Kite's 429 at least into the
    next of Kite's one-second windows, however short the configured back-off (our limiter granted
    the call, so the window was full of another client's calls on the same key, and retries within
    it would all be refused)."""
    base = min(settings.order_retry_max_seconds, settings.order_retry_base_seconds * 2 ** (attempt - 1))
    delay = base * random.uniform(0.5, 1.5)
    return max(delay, random.uniform(1.0, 1.5)) if is_rate_limited(exc) else delay


def error_text(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {exc}" if str(exc) else exc.__class__.__name__


def _row(job: OrderJob) -> audit.RequestRow:
    """The audit row's identifying fields."""
    return audit.RequestRow(job_id=job.job_id, kind=job.kind, account_id=job.account_id, payload=job.payload,
                            tag=job.tag, idempotency_key=job.idempotency_key, basket_id=job.basket_id)


async def fail_for_good(job: OrderJob, reason: str) -> NoReturn:
    await dead_letter_order(job.deps.db, job_id=job.job_id, job_name=job.job_name, payload=job.payload,
                            account_id=job.account_id or None, reason=reason,
                            row=_row(job) if job.account_id else None)
    raise OrderJobFailed(reason)


async def run_order_job(job: OrderJob, action: Action, recover: Recover | None = None,
                        check: Check | None = None) -> dict[str, Any]:
    """Run one order job. `check` returns why the request can never succeed (it is then dead-lettered
    without a call to Kite), or None."""
    try:
        return await _run(job, action, recover, check)
    except INFRA_ERRORS as exc:
        delay = backoff(job.deps.settings, min(job.job_try, 8))
        log.warning("order job %s: infrastructure error %s; retrying in %.2fs", job.job_id, error_text(exc), delay)
        raise Retry(defer=delay) from exc


async def _no_issue() -> None:
    return None


async def _api_and_budget(job: OrderJob) -> tuple[KiteApi | AccountUnavailable, Budget | None]:
    """The account's client and whose Kite rate limits it draws on (none for an unusable account)."""
    clients = kite_clients(job.deps)
    try:
        return await clients.api(job.account_id), await clients.budget(job.account_id)
    except AccountUnavailable as exc:
        return exc, None


async def _run(job: OrderJob, action: Action, recover: Recover | None, check: Check | None) -> dict[str, Any]:
    d = job.deps
    # Everything independent at once: the account's client, the audit row, the request's validity,
    # the account's breaker. The rate-limit grant only once the job knows it will call Kite: a job
    # that returns early (already done, refused, breaker open) draws nothing from Kite's limits.
    found = await asyncio.gather(
        _api_and_budget(job), audit.get_order(d.db, job.job_id), check() if check is not None else _no_issue(),
        breaker(d).check(job.account_id), return_exceptions=True)
    for result in found:
        if isinstance(result, BaseException):
            raise result
    Ready = tuple[tuple[KiteApi | AccountUnavailable, Budget | None], Any, str | None, tuple[float, bool]]
    (api, budget), record, issue, (breaker_wait, job.breaker_dirty) = cast(Ready, tuple(found))
    done = await _before_calling(job, record, issue, api, breaker_wait)
    if done is not None:
        return done
    assert isinstance(api, KiteApi) and budget is not None
    grant = await _wait_for_rate(job, budget)
    try:
        number = await audit.start_attempt(d.db, _row(job))
    except BaseException:
        await asyncio.shield(_release(d, grant))
        raise
    return await _attempt(job, api, grant, number, action, recover)


async def _before_calling(job: OrderJob, record: Any, issue: str | None, api: KiteApi | AccountUnavailable,
                          breaker_wait: float) -> dict[str, Any] | None:
    """The result when the job is already done; raises when it must not call Kite now; else None."""
    if record is not None and record.status == "complete" and record.result is not None:
        return record.result  # a re-run after the outcome was recorded (worker died before arq noted it)
    if record is not None and record.status in ("dead_letter", "failed", "cancelled"):
        raise OrderJobFailed(record.last_error or record.status)
    if issue is not None:
        await fail_for_good(job, issue)
    if isinstance(api, AccountUnavailable):
        await fail_for_good(job, str(api))
    if breaker_wait > 0:
        raise Retry(defer=breaker_wait + random.uniform(0, 0.25))
    return None


async def _attempt(job: OrderJob, api: KiteApi, grant: Grant, number: int, action: Action,
                   recover: Recover | None) -> dict[str, Any]:
    d = job.deps
    armed: list[bool] = []  # set once the call to Kite is on its way

    async def sending() -> None:
        if not armed:
            armed.append(True)
            await limiter(d).arm(grant)

    attempt = Attempt(number=number, may_exist=number > 1 or bool(job.prior_tags), sending=sending)
    started = time.perf_counter()
    try:
        outcome = await action(api, attempt)
    except asyncio.CancelledError:
        # The call may still be on its way to Kite: the grant keeps counting until its hold ends.
        if not armed:
            await asyncio.shield(_release(d, grant))
        await asyncio.shield(audit.end_attempt(d.db, job.job_id, number, "interrupted", _ms(started)))
        raise
    except INFRA_ERRORS:  # our Redis or Postgres failed on the way (arming the grant, a look-up): not Kite's answer
        with contextlib.suppress(*INFRA_ERRORS):
            await audit.end_attempt(d.db, job.job_id, number, "interrupted", _ms(started))
        raise  # run_order_job hands the job back; its next attempt looks for the order first
    except Exception as exc:  # every Kite failure is classified below: retry, or dead letter
        await _after_call(d, grant, armed, exc)
        return await _attempt_failed(job, api, number, started, exc, recover)
    await _after_call(d, grant, armed, None)
    return await _succeeded(job, number, started, outcome)


async def _after_call(d: Deps, grant: Grant, armed: list[bool], exc: Exception | None) -> None:
    """Settle a call Kite answered; give back a grant no call used (or whose call never left);
    a call without an answer (a timeout) keeps its hold."""
    try:
        if not armed or isinstance(exc, KiteUnreachable):
            await limiter(d).release(grant)
        elif exc is None or (isinstance(exc, KiteException) and not isinstance(exc, KiteTimeout)):
            await limiter(d).settle(grant)
    except Exception as exc:  # the grant then counts until its hold ends: a little long, never short
        _grant_trouble("settled", exc)


async def _release(d: Deps, grant: Grant | None) -> None:
    if grant is None:
        return
    try:
        await limiter(d).release(grant)
    except Exception as exc:  # the grant then counts until its hold ends
        _grant_trouble("released", exc)


def _grant_trouble(what: str, exc: Exception) -> None:
    """Redis being down is reported once per outage elsewhere; anything else is worth a warning."""
    level = logging.DEBUG if isinstance(exc, INFRA_ERRORS) else logging.WARNING
    log.log(level, "rate-limit grant not %s: %s", what, error_text(exc))


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


async def _wait_for_rate(job: OrderJob, budget: Budget) -> Grant:
    d = job.deps
    hold = d.settings.order_request_timeout + HOLD_MARGIN_S
    try:
        return await limiter(d).reserve(budget, job.bucket, max_wait=d.settings.rate_wait_max_seconds, hold=hold,
                                        ticket=job.job_id)
    except RateLimited as exc:
        if "day" in exc.full:
            await fail_for_good(job, f"Kite's daily order limit for this account ({d.settings.order_rate_per_day}) "
                                "is used up; it starts again at midnight IST")
        raise Retry(defer=exc.wait_s) from exc


async def _succeeded(job: OrderJob, number: int, started: float, outcome: Outcome) -> dict[str, Any]:
    d, latency = job.deps, _ms(started)
    result = AttemptResult(
        job_id=job.job_id, kind=job.kind, account_id=job.account_id, kite_order_id=outcome.kite_order_id,
        tag=job.tag, adopted=outcome.adopted, attempts=number, kite_status=outcome.kite_status,
        client_tag=job.client_tag, basket_id=job.basket_id,
    ).model_dump(mode="json")
    if outcome.trigger_id is not None:
        result["trigger_id"] = outcome.trigger_id
    result.update(outcome.mf_ids)
    await audit.complete(d.db, job.job_id, number, "adopted" if outcome.adopted else "ok", latency,
                         outcome.kite_order_id, result, gtt_id=outcome.trigger_id)
    if job.breaker_dirty:
        await breaker(d).record_success(job.account_id)
    return result


async def _attempt_failed(job: OrderJob, api: KiteApi, number: int, started: float, exc: Exception,
                          recover: Recover | None) -> dict[str, Any]:
    """Raise Retry (transient, tries left) or dead-letter and raise OrderJobFailed; the result only when
    the last look at the order book finds the order after all."""
    d, text = job.deps, error_text(exc)
    if isinstance(exc, TokenException):
        await audit.end_attempt(d.db, job.job_id, number, "token", _ms(started), error=text)
        await _token_rejected(job, api, number, text)
    if not is_transient(exc):
        await audit.end_attempt(d.db, job.job_id, number, "rejected", _ms(started), error=text)
        if isinstance(exc, DataException):  # Kite could not read its order system's answer: look, never repeat
            found, reason = await _last_look(job, api, recover, text)
            if found is not None:
                return await _succeeded(job, number, started, found)
            await fail_for_good(job, reason)
        await fail_for_good(job, text)
    await audit.end_attempt(d.db, job.job_id, number, "transient", _ms(started), error=text)
    await breaker(d).record_failure(job.account_id)
    if number < d.settings.order_max_tries:
        await audit.retrying(d.db, job.job_id, text)
        raise Retry(defer=backoff(d.settings, number, exc)) from exc
    reason = f"gave up after {number} attempts: {text}"
    # A timeout or a 5xx may have taken effect at Kite (a 429 or an unreachable Kite did not).
    if not isinstance(exc, KiteUnreachable) and getattr(exc, "code", 0) != 429:
        found, reason = await _last_look(job, api, recover, reason)
        if found is not None:
            return await _succeeded(job, number, started, found)
    await fail_for_good(job, reason)


async def _last_look(job: OrderJob, api: KiteApi, recover: Recover | None, reason: str) -> tuple[Outcome | None, str]:
    """After an outcome Kite left open: the order if the order book shows it, else the reason to give."""
    if recover is None:
        return None, reason
    try:
        return await recover(api), reason
    except Exception as look:  # the last look failed too: say so, a replay will look again
        log.warning("final order-book lookup failed: %s", error_text(look))
        return None, f"{reason} (the order may have reached Kite; its tag is {job.tag})"


async def _token_rejected(job: OrderJob, api: KiteApi, number: int, text: str) -> NoReturn:
    """Kite refused the token. Retry at once if a newer token is stored by now; on the first refusal
    ask for a token refresh and try again once it had time to run; otherwise give up."""
    d = job.deps
    clients = kite_clients(d)
    clients.forget(job.account_id)  # the next attempt reads the account afresh, whatever happens here
    try:
        fresh = await clients.fresh_account(job.account_id)
    except AccountUnavailable:
        fresh = None
    tries_left = number < d.settings.order_max_tries
    if fresh is not None and fresh.secret("access_token") != api.access_token and tries_left:
        await audit.retrying(d.db, job.job_id, text)
        raise Retry(defer=0)
    if tries_left and await audit.count_outcome(d.db, job.job_id, "token") == 1:
        slot = int(time.time() // 60)  # one refresh request per account per minute, however many orders
        await enqueue(d.redis, d.names, JOB_REFRESH_TOKENS, {"account_id": job.account_id},
                      job_id=scoped_job_id(d.names, "order-token-refresh", job.account_id, slot))
        await audit.retrying(d.db, job.job_id, text)
        raise Retry(defer=d.settings.order_token_refresh_wait_seconds)
    await fail_for_good(job, f"{text} (the account's access token needs a refresh)")
