"""Reads: instrument search (Postgres) and latest quotes (the streamer's Redis snapshot)."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson
from aiohttp import web
from pydantic import Field, field_validator

from ticker.http.inputs import Page, QueryBool, QueryDate, Strict, path_token, read_query
from ticker.http.middleware.errors import ApiError, json_response, not_found
from ticker.http.state import services
from ticker.infra.orders.validate import INSTRUMENT_COLUMNS

routes = web.RouteTableDef()

MAX_QUOTE_TOKENS = 500


class InstrumentQuery(Page):
    q: str | None = Field(None, min_length=1, max_length=64, description="tradingsymbol or name prefix")
    exchange: str | None = Field(None, min_length=2, max_length=8, pattern=r"^[A-Z]+$")
    segment: str | None = Field(None, min_length=2, max_length=16, pattern=r"^[A-Z-]+$")
    instrument_type: str | None = Field(None, pattern=r"^(EQ|FUT|CE|PE)$")
    name: str | None = Field(None, min_length=1, max_length=64)
    expiry: QueryDate | None = None
    strike: float | None = Field(None, ge=0, le=1e9, allow_inf_nan=False)
    include_inactive: QueryBool = False
    limit: int = Field(50, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=100_000)


class QuoteQuery(Strict):
    tokens: list[int]

    @field_validator("tokens", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        if isinstance(v, str):
            parts = [p.strip() for p in v.split(",") if p.strip()]
            if not parts:
                raise ValueError("give at least one instrument token")
            if len(parts) > MAX_QUOTE_TOKENS:
                raise ValueError(f"at most {MAX_QUOTE_TOKENS} tokens per request")
            return parts
        return v

    @field_validator("tokens")
    @classmethod
    def _range(cls, v: list[int]) -> list[int]:
        bad = [t for t in v if not 0 <= t < 1 << 32]
        if bad:
            raise ValueError(f"not an instrument token: {bad[0]}")
        return list(dict.fromkeys(v))


def _like_prefix(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def _doc(row: asyncpg.Record) -> dict[str, Any]:
    return dict(row.items())


def _search_sql(q: InstrumentQuery) -> tuple[str, list[Any]]:
    """Only the filters given, so the planner can use the prefix index on lower(tradingsymbol)."""
    where: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if q.q:
        pattern = arg(_like_prefix(q.q))
        where.append(f"(lower(tradingsymbol) LIKE {pattern} OR lower(name) LIKE {pattern})")
    for column in ("exchange", "segment", "instrument_type", "name", "expiry", "strike"):
        value = getattr(q, column)
        if value is not None:
            where.append(f"{column} = {arg(value)}")
    if not q.include_inactive:
        where.append("is_active")
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    sql = (f"SELECT {INSTRUMENT_COLUMNS}, is_active FROM instruments {clause} "
           f"ORDER BY name, expiry NULLS FIRST, strike, tradingsymbol LIMIT {arg(q.limit + 1)} OFFSET {arg(q.offset)}")
    return sql, args


@routes.get("/instruments")
async def search_instruments(request: web.Request) -> web.Response:
    svc = services(request)
    q = read_query(request, InstrumentQuery)
    sql, args = _search_sql(q)
    rows = await svc.db.fetch(sql, *args)
    return json_response(q.doc("instruments", [_doc(r) for r in rows]))


@routes.get("/instruments/{token}")
async def get_instrument(request: web.Request) -> web.Response:
    svc = services(request)
    token = path_token(request)
    row = await svc.refs.instrument_by_token(token)
    if row is None:
        raise not_found("instrument", token)
    return json_response(_doc(row))


@routes.get("/quotes")
async def quotes(request: web.Request) -> web.Response:
    """Latest tick per token as the streamer last published it; `missing` lists tokens with none yet."""
    svc = services(request)
    if "tokens" not in request.query:
        raise ApiError(422, "validation_error", "tokens: give instrument tokens, comma-separated",
                       [{"field": "tokens", "location": "query", "message": "Field required", "type": "missing"}])
    q = read_query(request, QuoteQuery)
    values = await svc.ticks.hmget(svc.names.latest, [str(t) for t in q.tokens])
    found: dict[str, Any] = {}
    missing: list[int] = []
    for token, value in zip(q.tokens, values, strict=True):
        if value is None:
            missing.append(token)
            continue
        try:
            found[str(token)] = orjson.loads(value)
        except orjson.JSONDecodeError:
            missing.append(token)
    return json_response({"quotes": found, "missing": missing})
