"""`/accounts`: Kite accounts. Secrets are accepted on write, stored encrypted, never returned."""

from __future__ import annotations

import re

from aiohttp import web
from pydantic import Field, SecretStr

from ticker.core.contracts import ControlMessage
from ticker.http.inputs import Strict, read_json
from ticker.http.middleware.errors import ApiError, json_response, not_found
from ticker.http.state import Services, services
from ticker.infra.queue.control import publish_control
from ticker.infra.stores.accounts import KiteAccount, settings_account

routes = web.RouteTableDef()

_ID = r"^[A-Za-z0-9_.:-]+$"
_ID_PATH = re.compile(_ID)


class AccountIn(Strict):
    account_id: str = Field(min_length=1, max_length=64, pattern=_ID)
    api_key: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")
    api_secret: SecretStr | None = Field(None, min_length=1, max_length=256)
    access_token: SecretStr | None = Field(None, min_length=1, max_length=256)
    user_id: SecretStr | None = Field(None, min_length=1, max_length=64)
    password: SecretStr | None = Field(None, min_length=1, max_length=256)
    totp_secret: SecretStr | None = Field(None, min_length=16, max_length=128)
    auto_login: bool = False
    is_active: bool = True


def _store_ready(svc: Services) -> None:
    if not svc.accounts.configured:
        raise ApiError(503, "secrets_unavailable", "accounts cannot be stored or read: the server has no "
                       "ACCOUNT_ENCRYPTION_KEY (or secrets backend) configured")


async def _announce(svc: Services, account_id: str, reason: str) -> None:
    svc.refs.forget_accounts()
    await publish_control(svc.redis, svc.names, ControlMessage(kind="tokens", account_id=account_id, reason=reason))


@routes.get("/accounts")
async def list_accounts(request: web.Request) -> web.Response:
    svc = services(request)
    _store_ready(svc)
    stored = await svc.accounts.list(active_only=False)
    docs = [{**a.public(), "source": "database"} for a in stored]
    single = settings_account(svc.settings)
    if not stored and single is not None:
        docs.append({**single.public(), "source": "settings"})
    return json_response({"accounts": docs})


@routes.post("/accounts")
async def upsert_account(request: web.Request) -> web.Response:
    svc = services(request)
    body = await read_json(request, AccountIn)
    _store_ready(svc)
    if body.auto_login and not (body.user_id and body.password and body.totp_secret):
        existing = await svc.accounts.get(body.account_id)
        if existing is None or not (existing.user_id and existing.password and existing.totp_secret):
            raise ApiError(422, "validation_error", "auto_login: needs user_id, password and totp_secret",
                           [{"field": "auto_login", "location": "body", "type": "missing_credentials",
                             "message": "automated login needs user_id, password and totp_secret"}])
    created = await svc.accounts.get(body.account_id) is None
    account = KiteAccount(**body.model_dump(exclude_none=True, exclude={"api_secret", "access_token", "user_id",
                                                                         "password", "totp_secret"}),
                          api_secret=body.api_secret, access_token=body.access_token, user_id=body.user_id,
                          password=body.password, totp_secret=body.totp_secret)
    await svc.accounts.upsert(account)
    await _announce(svc, body.account_id, "account saved")
    saved = await svc.accounts.get(body.account_id)
    doc = {**(saved or account).public(), "source": "database"}
    return json_response(doc, status=201 if created else 200)


@routes.delete("/accounts/{account_id}")
async def delete_account(request: web.Request) -> web.Response:
    svc = services(request)
    account_id = request.match_info["account_id"]
    if not _ID_PATH.match(account_id) or len(account_id) > 64:
        raise not_found("account", account_id[:64])
    _store_ready(svc)
    if not await svc.accounts.remove(account_id):
        raise not_found("account", account_id)
    await _announce(svc, account_id, "account removed")
    return json_response({"account_id": account_id, "removed": True})
