"""Margin previews as a short job: Kite's basket margins for one or more order legs.

A read with no effect at Kite, so it needs no audit: a transient failure (network, 429, 5xx) is
retried with backoff up to ORDER_MAX_TRIES, anything else fails the job with Kite's message. The
call draws from the account's general ("api") rate limit. The result is Kite's answer as it is
(`initial`, `final`, `orders`, `charges`) with the account it was computed for.
"""

from __future__ import annotations

from typing import Any

from arq import Retry
from arq.worker import func
from pydantic import ValidationError

from ticker.core.contracts import JOB_ORDER_MARGINS
from ticker.core.margins import MarginsPayload
from ticker.infra.kite.limits import RateLimited
from ticker.infra.kite.rest import is_transient
from ticker.infra.orders.validate import resolve_account_id
from ticker.jobs.context import deps
from ticker.jobs.kite_clients import kite_clients
from ticker.jobs.orders.runner import backoff, error_text, limiter


class MarginsFailed(RuntimeError):
    """Kite refused the preview, or it could not be asked; the message says why."""


async def order_margins(ctx: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    d = deps(ctx)
    try:
        req = MarginsPayload.model_validate(payload).request
    except ValidationError as exc:
        err = exc.errors()[0]
        raise MarginsFailed(f"invalid payload: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    account_id = await resolve_account_id(d.db, d.settings, req.account_id)
    tries = ctx.get("job_try", 1)
    try:
        await limiter(d).acquire(account_id, "api", max_wait=d.settings.rate_wait_max_seconds)
        api = await kite_clients(d).api(account_id)
        data = await api.basket_margins(req.kite_orders(), consider_positions=req.consider_positions,
                                        compact=req.mode == "compact", timeout=d.settings.order_request_timeout)
    except RateLimited as exc:
        raise Retry(defer=exc.wait_s) from exc
    except Exception as exc:
        if is_transient(exc) and tries < d.settings.order_max_tries:
            raise Retry(defer=backoff(d.settings, tries, exc)) from exc
        raise MarginsFailed(error_text(exc)) from exc
    return {"account_id": account_id, "consider_positions": req.consider_positions, **data.to_json()}


FUNCTIONS = [func(order_margins, name=JOB_ORDER_MARGINS)]
