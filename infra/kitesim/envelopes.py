"""Kite's response envelopes and error types, and the middleware that turns errors into them.

kiteconnect picks the exception class from `error_type`, and the HTTP status becomes its `.code`,
so both must be what Kite sends.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiohttp import web

log = logging.getLogger(__name__)


class KiteError(Exception):
    """An error Kite would answer with: HTTP status, `error_type` and message."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


def input_error(message: str) -> KiteError:
    return KiteError(400, "InputException", message)


def token_error(message: str = "Incorrect `api_key` or `access_token`.") -> KiteError:
    return KiteError(403, "TokenException", message)


def order_error(message: str, status: int = 400) -> KiteError:
    return KiteError(status, "OrderException", message)


def general_error(message: str = "Something went wrong. Please try again.", status: int = 500) -> KiteError:
    return KiteError(status, "GeneralException", message)


def too_many_requests() -> KiteError:
    return KiteError(429, "NetworkException", "Too many requests")


def dumps(data: Any) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)


def success(data: Any, status: int = 200) -> web.Response:
    """Kite's success envelope."""
    return web.Response(body=dumps({"status": "success", "data": data}), status=status,
                        content_type="application/json")


def error_response(err: KiteError) -> web.Response:
    body = {"status": "error", "message": err.message, "data": None, "error_type": err.error_type}
    return web.Response(body=dumps(body), status=err.status, content_type="application/json")


@web.middleware
async def kite_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every failure leaves as Kite's error envelope; nothing escapes as an HTML page."""
    try:
        return await handler(request)
    except KiteError as err:
        return error_response(err)
    except web.HTTPNotFound:
        return error_response(KiteError(404, "GeneralException", "Route not found"))
    except web.HTTPMethodNotAllowed:
        return error_response(KiteError(405, "GeneralException", "Method not allowed"))
    except web.HTTPException:
        raise
    except Exception:
        log.exception("sim handler failed: %s %s", request.method, request.path)
        return error_response(general_error())
