"""`POST /kite/postback`: Kite's HTTP order postbacks, verified, onto the orders channel.

Kite posts each order update as a JSON body to the app's registered postback URL. It cannot send our
API key, so the route is open; what makes an update trustworthy is its `checksum` (SHA-256 of
order_id + order_timestamp + the app's api_secret, see `ticker.core.postbacks`). A verified update
is published on `ticker:<prefix>:orders` (an envelope of one update, on the same sequence and history as
the streamer's) exactly as the streamer publishes the ones it receives over
the ticker WebSocket (the update plus `account_id`); anything else is refused (403), counted by
reason and logged at most once a minute per reason. Bodies are small: more than
`MAX_POSTBACK_BYTES` is a 413 before anything is read.

Which account: `?account_id=` when the postback URL registered with Kite names it (one URL per
app), else the accounts whose stored user_id is the update's `user_id`, else every account; the
update is genuine when one of their api_secrets verifies it. An account with no stored api_secret
cannot verify: when every candidate lacks one, the update is published unverified, which is logged
once per account and listed in /health.
"""

from __future__ import annotations

import logging
import re
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import Counter

from ticker.core.contracts import ORDERS_SHARD
from ticker.core.postbacks import check_postback
from ticker.http.middleware.errors import ApiError, json_response, not_found
from ticker.http.state import Services, services
from ticker.infra.runtime.throttle import Throttle
from ticker.infra.stores.accounts import KiteAccount, load_accounts
from ticker.infra.stores.tick_history import publish_sequenced

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

MAX_POSTBACK_BYTES = 64 * 1024
ACCOUNTS_TTL = 30.0  # secrets are read (decrypted) at most this often...
RELOAD_AFTER = 2.0  # ...except that an update no cached secret verifies rereads them after this long
_ACCOUNT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


@dataclass
class Verdict:
    account_id: str | None
    verified: bool
    problem: str | None = None


@dataclass
class PostbackReceiver:
    """One per app: the accounts' secrets (cached), the counters and who passed unverified."""

    rejected: Counter
    published: Counter
    accounts: list[KiteAccount] = field(default_factory=list)
    loaded_at: float = float("-inf")
    unverified: set[str] = field(default_factory=set)
    throttle: Throttle = field(default_factory=Throttle)

    async def _accounts(self, svc: Services, fresh: bool = False) -> list[KiteAccount]:
        age = time.monotonic() - self.loaded_at
        if age > ACCOUNTS_TTL or (fresh and age > RELOAD_AFTER):
            store = svc.accounts if svc.accounts.configured else None
            self.accounts = await load_accounts(store, svc.settings)
            self.loaded_at = time.monotonic()
        return self.accounts

    async def verify(self, svc: Services, update: dict[str, Any], account_id: str | None) -> Verdict:
        verdict = _judge(update, await self._accounts(svc), account_id)
        if verdict.problem == "bad_checksum":  # a secret stored a moment ago may be what verifies it
            verdict = _judge(update, await self._accounts(svc, fresh=True), account_id)
        return verdict


def _candidates(accounts: list[KiteAccount], account_id: str | None, user_id: Any) -> list[KiteAccount]:
    if account_id is not None:
        return [a for a in accounts if a.account_id == account_id]
    same_user = [a for a in accounts if user_id and a.secret("user_id") == str(user_id)]
    return same_user or accounts


def _judge(update: dict[str, Any], accounts: list[KiteAccount], account_id: str | None) -> Verdict:
    candidates = _candidates(accounts, account_id, update.get("user_id"))
    if account_id is not None and not candidates:
        raise not_found("account", account_id)
    if not candidates:
        return Verdict(None, verified=False, problem="unknown_account")
    keyed = [a for a in candidates if a.secret("api_secret")]
    if not keyed:  # nothing to verify with: pass, reported as unverified
        return Verdict(candidates[0].account_id if len(candidates) == 1 else account_id, verified=False)
    problem = None
    for account in keyed:
        problem = check_postback(update, account.secret("api_secret") or "")
        if problem is None:
            return Verdict(account.account_id, verified=True)
        if problem != "bad_checksum":
            break  # missing or malformed: no secret can fix that
    return Verdict(None, verified=False, problem=problem or "bad_checksum")


_RECEIVERS: weakref.WeakKeyDictionary[web.Application, PostbackReceiver] = weakref.WeakKeyDictionary()


def receiver_of(app: web.Application, svc: Services) -> PostbackReceiver:
    found = _RECEIVERS.get(app)
    if found is None:
        registry = svc.metrics.registry
        found = _RECEIVERS[app] = PostbackReceiver(
            rejected=Counter("ticker_http_postbacks_rejected_total", "Kite postbacks refused before the orders "
                             "channel, by reason (bad_checksum, missing_checksum, malformed, unknown_account)", ["reason"],
                             registry=registry),
            published=Counter("ticker_http_postbacks_published_total", "Kite postbacks published on the orders "
                              "channel, by whether their checksum was verified", ["verified"], registry=registry))
    return found


def postback_report(app: web.Application) -> dict[str, Any]:
    """For /health: accounts whose HTTP postbacks were published without verification."""
    found = _RECEIVERS.get(app)
    return {"unverified_accounts": sorted(found.unverified) if found else []}


def _is_update(update: Any) -> bool:
    if not isinstance(update, dict):
        return False
    order_id, checksum = update.get("order_id"), update.get("checksum")
    return isinstance(order_id, str) and bool(order_id) and (checksum is None or isinstance(checksum, str))


async def _read(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_POSTBACK_BYTES:
        raise ApiError(413, "payload_too_large", f"a postback body is at most {MAX_POSTBACK_BYTES} bytes")
    body = await request.content.read(MAX_POSTBACK_BYTES + 1)
    if len(body) > MAX_POSTBACK_BYTES:
        raise ApiError(413, "payload_too_large", f"a postback body is at most {MAX_POSTBACK_BYTES} bytes")
    return body


def _refuse(receiver: PostbackReceiver, reason: str, message: str, status: int, **extra: Any) -> ApiError:
    receiver.rejected.labels(reason).inc()
    held = receiver.throttle.allow(reason)
    if held is not None:
        log.warning("Kite postback refused: %s", message, extra={"reason": reason, "repeats_not_logged": held,
                                                                   **extra})
    return ApiError(status, reason, message)


@routes.post("/kite/postback")
async def kite_postback(request: web.Request) -> web.Response:
    svc = services(request)
    receiver = receiver_of(request.app, svc)
    account_id = request.query.get("account_id")
    if account_id is not None and not _ACCOUNT_ID.match(account_id):
        raise ApiError(422, "validation_error", "account_id: 1 to 64 of A-Z a-z 0-9 _ . : -",
                       [{"field": "account_id", "location": "query", "message": "not an account id",
                         "type": "string_pattern_mismatch"}])
    try:
        update = orjson.loads(await _read(request))
    except orjson.JSONDecodeError:
        raise _refuse(receiver, "malformed", "the body is not JSON", 400) from None
    if not _is_update(update):
        raise _refuse(receiver, "malformed", "the body is not an order update (a JSON object with a string "
                      "order_id, and checksum, when given, a string)", 400)
    verdict = await receiver.verify(svc, update, account_id)
    if verdict.problem is not None:
        raise _refuse(receiver, verdict.problem, "the order update's checksum does not verify", 403,
                      order_id=str(update.get("order_id"))[:40])
    if not verdict.verified:
        key = verdict.account_id or "(unknown)"
        if key not in receiver.unverified:
            receiver.unverified.add(key)
            log.warning("Kite postbacks pass unverified: no api_secret is stored for the account",
                        extra={"account_id": key})
    doc = {**update, "account_id": verdict.account_id}
    sharded = svc.settings.tick_redis_cluster  # order updates are a shard of their own there
    names = svc.names.shard(ORDERS_SHARD) if sharded else svc.names
    await publish_sequenced(svc.ticks, names, names.orders, [orjson.dumps(doc)],
                            envelope=svc.settings.tick_message_format == "envelope",
                            history_seconds=svc.settings.tick_history_seconds, sharded=sharded)
    receiver.published.labels("true" if verdict.verified else "false").inc()
    return json_response({"published": True, "verified": verdict.verified, "account_id": verdict.account_id})
