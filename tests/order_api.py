"""Orders submitted as production submits them: through the web's order intake over HTTP.

`web_orders(settings)` starts the aiohttp app in-process on those settings (their database, Redis
namespace and channel prefix) and yields an `OrderApi`; `OrderApi.at(url)` talks to a web process
that is already running (`ticker dev`). Requests carry an `Idempotency-Key`; answers come back as
the JSON the API gives.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient, TestServer
from pydantic import BaseModel

from ticker.core.orders import BasketRequest, CancelRequest, ModifyRequest, OrderRequest
from ticker.http.app import create_app
from ticker.infra.runtime.settings import Settings


def _body(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True)


class OrderApi:
    def __init__(self, session: aiohttp.ClientSession | TestClient, base: str = "",
                 headers: dict[str, str] | None = None) -> None:
        self.session = session
        self.base = base
        self.headers = headers or {}

    @classmethod
    @contextlib.asynccontextmanager
    async def at(cls, url: str, api_key: str | None = None) -> AsyncIterator[OrderApi]:
        async with aiohttp.ClientSession() as session:
            yield cls(session, url.rstrip("/"), {"X-API-Key": api_key} if api_key else {})

    async def call(self, method: str, path: str, body: Any = None, key: str | None = None,
                   expect: int = 202, **params: Any) -> dict[str, Any]:
        headers = {**self.headers, **({"Idempotency-Key": key} if key else {})}
        query = {k: str(v) for k, v in params.items() if v is not None}
        async with self.session.request(method, self.base + path, json=body, headers=headers,
                                        params=query) as r:
            doc = await r.json()
            assert r.status == expect, (r.status, doc)
            return doc

    async def place(self, order: OrderRequest, key: str | None = None, expect: int = 202) -> dict[str, Any]:
        return await self.call("POST", "/orders", _body(order), key or uuid.uuid4().hex, expect)

    async def place_id(self, order: OrderRequest, key: str | None = None) -> str:
        return (await self.place(order, key))["job_id"]

    async def modify(self, req: ModifyRequest, key: str | None = None) -> dict[str, Any]:
        body = {k: v for k, v in _body(req).items() if k != "order_id"}
        return await self.call("PUT", f"/orders/{req.order_id}", body, key or uuid.uuid4().hex)

    async def cancel(self, req: CancelRequest, key: str | None = None) -> dict[str, Any]:
        query = {k: v for k, v in _body(req).items() if k != "order_id"}
        return await self.call("DELETE", f"/orders/{req.order_id}", None, key or uuid.uuid4().hex, **query)

    async def basket(self, basket: BasketRequest, key: str | None = None, expect: int = 202) -> dict[str, Any]:
        return await self.call("POST", "/orders/basket", _body(basket), key or uuid.uuid4().hex, expect)

    async def replay(self, letter_id: int, replay_number: int | None = None) -> dict[str, Any]:
        return await self.call("POST", f"/dlq/{letter_id}/replay", replay_number=replay_number)


@contextlib.asynccontextmanager
async def web_orders(settings: Settings) -> AsyncIterator[OrderApi]:
    """The web app on `settings` (no API key outside production; a rate limit tests never reach)."""
    app = create_app(settings.model_copy(update={"http_rate_limit_per_minute": 1_000_000}))
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield OrderApi(client)
    finally:
        await client.close()
