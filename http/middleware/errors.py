"""The JSON error envelope and the middleware that guarantees it.

Every failure leaves the process as `{"error": {"code", "message", "details"}}` with a fitting 4xx
(or a 5xx for our own faults). Bad input must never surface as a 500: handlers raise `ApiError`,
input parsing turns pydantic errors into 422s that name the field, and aiohttp's own routing errors
(404, 405, 413) are re-dressed in the same envelope.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from asyncpg.exceptions import (
    ConnectionDoesNotExistError,
    OperatorInterventionError,
    PostgresConnectionError,
    TooManyConnectionsError,
)
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ticker.http.dependency_watch import OUTAGES, POSTGRES, REDIS, dependencies_of
from ticker.http.keys import REQUEST_ID, Handler

log = logging.getLogger("ticker.http")

# aiohttp's HTTP errors mapped to our stable error codes.
_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}


# Redis or Postgres out of reach: the request may well succeed in a moment, so a 503 with Retry-After,
# not a 500 (OSError covers refused and reset sockets, TimeoutError the hot path's call deadline;
# OperatorInterventionError is a server shutting down or starting up, ConnectionDoesNotExistError
# a connection that died under a query).
DEPENDENCY_ERRORS = (OSError, TimeoutError, RedisConnectionError, RedisTimeoutError, PostgresConnectionError,
                     OperatorInterventionError, ConnectionDoesNotExistError, TooManyConnectionsError)
_DEPENDENCY_NAMES: dict[tuple[str, ...], str] = {(REDIS,): "Redis", (POSTGRES,): "PostgreSQL"}


class ApiError(Exception):
    """A failure to report to the client as it is."""

    def __init__(self, status: int, code: str, message: str, details: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}


def not_found(what: str, key: object) -> ApiError:
    return ApiError(404, "not_found", f"{what} {key} not found")


def json_response(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """orjson-encoded response: several times faster than aiohttp's json_response for our payloads."""
    return web.Response(body=orjson.dumps(doc), status=status, headers=headers,
                        content_type="application/json")


def error_response(status: int, code: str, message: str, details: Any = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"code": code, "message": message, "details": details}}
    return json_response(body, status=status, headers=headers)


def field_errors(exc: ValidationError, location: str) -> list[dict[str, str]]:
    """One entry per problem, each naming the offending field by its dotted path."""
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        field = ".".join(str(p) for p in err["loc"]) or location
        out.append({"field": field, "location": location, "message": err["msg"], "type": err["type"]})
    return out


def validation_error(exc: ValidationError, location: str) -> ApiError:
    details = field_errors(exc, location)
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
    return ApiError(422, "validation_error", f"invalid {location}: {summary}", details)


def _from_http(exc: web.HTTPException) -> web.Response:
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    message = exc.reason
    if exc.status == 404:
        message = "no such route"
    elif exc.status == 405:
        message = f"method not allowed; allowed: {exc.headers.get('Allow', '')}"
    elif exc.text and not exc.text.startswith(f"{exc.status}:"):
        message = exc.text
    return error_response(exc.status, _CODES.get(exc.status, f"http_{exc.status}"), message, None, headers)


def dependency_unavailable(request: web.Request, exc: BaseException) -> web.Response:
    """503 for a request that failed on Redis or Postgres. Logged once per outage, by the watcher."""
    suspects = dependencies_of(exc)
    outages = request.app.get(OUTAGES)
    if outages is not None:
        outages.suspect(exc)
        known = tuple(d for d in suspects if d in outages.current)
        suspects = known if len(known) == 1 else suspects  # a bare socket error, during a known outage
    log.debug("dependency unavailable: %s", type(exc).__name__,
              extra={"path": request.path, "request_id": request.get(REQUEST_ID)})
    which = _DEPENDENCY_NAMES.get(suspects, "a backing service (Redis or PostgreSQL)")
    return error_response(503, "unavailable", f"{which} is unavailable; retry shortly", None, {"Retry-After": "1"})


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _from_http(exc)
    except ValidationError as exc:  # a model built inside a handler from client data
        err = validation_error(exc, "request")
        return error_response(err.status, err.code, err.message, err.details)
    except DEPENDENCY_ERRORS as exc:
        return dependency_unavailable(request, exc)
    except HttpProcessingError as exc:  # the body broke off or broke the framing after the headers
        return error_response(400, "bad_request", f"malformed request body ({type(exc).__name__})")
    except Exception:
        log.exception("unhandled error", extra={"path": request.path, "method": request.method,
                                                "request_id": request.get(REQUEST_ID)})
        return error_response(500, "internal_error", "internal error; the request id is in X-Request-ID")
