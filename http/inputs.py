"""Client input → pydantic models, with every failure turned into a clear 4xx.

Malformed JSON is a 400; a well-formed body or query that breaks the model (wrong type, unknown
field, value out of range) is a 422 whose details name each field. JSON bodies are parsed in strict
mode: `"75"` is not a quantity and `0` is not a boolean. Query strings are text by nature, so their
numbers are parsed from text, but booleans, dates and times must be written out (`true`,
`2025-01-30`, `2025-01-30T09:15:00`), never as numbers that happen to convert.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, datetime
from typing import Annotated, Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from ticker.http.middleware.errors import ApiError, field_errors, validation_error

M = TypeVar("M", bound=BaseModel)

MAX_BODY_BYTES = 256 * 1024
_TOKEN_PATH = re.compile(r"^[0-9]{1,10}$")


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})?$")
DATETIME_PATTERN = _DATETIME.pattern


def _written(pattern: re.Pattern[str], what: str):
    def check(value: Any) -> Any:
        if isinstance(value, str) and not pattern.match(value):
            raise ValueError(f"write the {what}")
        return value

    return BeforeValidator(check)


def _bool_word(value: Any) -> Any:
    if isinstance(value, str):
        if value.lower() not in ("true", "false"):
            raise ValueError("use true or false")
        return value.lower() == "true"
    return value


QueryBool = Annotated[bool, BeforeValidator(_bool_word)]
QueryDate = Annotated[date, _written(_DATE, "date as YYYY-MM-DD")]
QueryDateTime = Annotated[datetime, _written(_DATETIME, "time as YYYY-MM-DDTHH:MM[:SS][offset]")]


class Strict(BaseModel):
    """Base for request models: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class Page(Strict):
    """`limit` and `offset` of a list; every list answers in the shape `doc` gives."""

    limit: int = Field(100, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=1_000_000)

    def doc(self, key: str, rows: Sequence[Any]) -> dict[str, Any]:
        """The one shape of a page: `{key: rows, limit, offset, next_offset}`, `next_offset` null on
        the last page. `rows` is what the read fetched with `limit + 1`: the extra row, dropped
        here, tells there is a next page without counting the whole table."""
        more = len(rows) > self.limit
        return {key: list(rows[: self.limit]), "limit": self.limit, "offset": self.offset,
                "next_offset": self.offset + self.limit if more else None}


async def read_body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise ApiError(413, "payload_too_large", f"request body over {MAX_BODY_BYTES} bytes")
    ctype = request.content_type
    if ctype not in ("application/json", "application/octet-stream", "text/plain") and request.body_exists:
        raise ApiError(415, "unsupported_media_type", f"send JSON (Content-Type: application/json), not {ctype}")
    body = await request.read()
    if not body.strip():
        raise ApiError(400, "malformed_json", "request body must be a JSON object")
    return body


def _storable(text: str) -> bool:
    """Postgres text cannot hold NUL, and lone surrogates cannot be encoded at all."""
    if "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def parse_json(model: type[M], body: bytes) -> M:
    if b"\\u0000" in body:
        raise ApiError(422, "validation_error", "request body: strings may not contain NUL characters",
                       [{"field": "body", "location": "body", "message": "NUL character", "type": "string_nul"}])
    try:
        return model.model_validate_json(body, strict=True)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            detail = exc.errors()[0]["msg"]
            raise ApiError(400, "malformed_json", f"request body is not valid JSON: {detail}") from None
        if any(e["type"] == "model_type" and not e["loc"] for e in exc.errors()):
            raise ApiError(422, "validation_error", "request body must be a JSON object",
                           field_errors(exc, "body")) from None
        raise validation_error(exc, "body") from None


async def read_json(request: web.Request, model: type[M]) -> M:
    return parse_json(model, await read_body(request))


def read_query(request: web.Request, model: type[M]) -> M:
    query = request.query
    bad = sorted({k for k, v in query.items() if not (_storable(k) and _storable(v))})
    if bad:
        raise ApiError(422, "validation_error", f"query parameter {bad[0]!r}: characters that are not text",
                       [{"field": k, "location": "query", "message": "NUL or unencodable character",
                         "type": "string_nul"} for k in bad])
    repeated = sorted({k for k in query if len(query.getall(k)) > 1})
    if repeated:
        raise ApiError(422, "validation_error", f"query parameter {repeated[0]} given more than once",
                       [{"field": k, "location": "query", "message": "given more than once",
                         "type": "repeated"} for k in repeated])
    try:
        return model.model_validate(dict(query))
    except ValidationError as exc:
        raise validation_error(exc, "query") from None


def path_token(request: web.Request, name: str = "token") -> int:
    """An instrument token from the URL path (a uint32)."""
    raw = request.match_info[name]
    if not _TOKEN_PATH.match(raw) or int(raw) >= 1 << 32:
        raise ApiError(422, "validation_error", f"{name} must be an instrument token (a non-negative 32-bit integer)",
                       [{"field": name, "location": "path", "message": "not a 32-bit unsigned integer",
                         "type": "int_parsing"}])
    return int(raw)


def path_int(request: web.Request, name: str) -> int:
    raw = request.match_info[name]
    if not raw.isdigit() or len(raw) > 18:
        raise ApiError(422, "validation_error", f"{name} must be a positive integer",
                       [{"field": name, "location": "path", "message": "not a positive integer",
                         "type": "int_parsing"}])
    return int(raw)
