"""The error envelope for requests that never reach the application.

aiohttp answers a request it cannot parse (a request line or header over its limits, too many
headers, bytes that are not HTTP) itself, before any middleware runs, with a plain-text 400 that
quotes the start of the offending line. Our request handler answers those in the JSON envelope
instead, with the fitting status (414 for an over-long URL, 431 for over-long or too many headers,
400 otherwise) and a message that never echoes what was sent: a URL may carry a token.

`ApiRunner` is `web.AppRunner` serving through that handler; `ticker web` and the tests use it.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger("ticker.http")

# The request line (method, URL, version) may be 8 KB; one header (name and value) twice that, so
# a JWT or a long cookie fits. They differ so that a LineTooLong names which limit it broke.
MAX_REQUEST_LINE = 8 * 1024
MAX_HEADER_FIELD = 16 * 1024
MAX_HEADERS = 100


def _refusal(exc: BaseException | None, max_line_size: int) -> tuple[int, str, str]:
    """(status, code, message) for a request the parser refused."""
    if isinstance(exc, LineTooLong):
        if exc.args[1:2] == (max_line_size,):
            return 414, "uri_too_long", f"the URL is over {max_line_size} bytes; send long inputs in a request body"
        return 431, "headers_too_large", "a request header is too large"
    if isinstance(exc, BadHttpMessage) and "headers" in exc.message.lower():
        return 431, "headers_too_large", "too many request headers"
    return 400, "bad_request", f"malformed HTTP request ({type(exc).__name__ if exc else 'unreadable'})"


def _envelope(status: int, code: str, message: str) -> web.Response:
    body = orjson.dumps({"error": {"code": code, "message": message, "details": None}})
    return web.Response(body=body, status=status, content_type="application/json")


class ApiRequestHandler(RequestHandler):
    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:  # a response has started: nothing more can be said
            return super().handle_error(request, status, exc, message)
        if isinstance(exc, HttpProcessingError) or (status == 400 and exc is None):
            resp = _envelope(*_refusal(exc, self.max_line_size))
            # Debug only: anyone can send garbage, and the exception quotes what they sent.
            log.debug("refused an unparseable request: %s", type(exc).__name__)
        else:  # something escaped every middleware: a bug, logged with its traceback
            self.log_exception("unhandled error outside the middlewares", exc_info=exc)
            resp = _envelope(500, "internal_error", "internal error")
        resp.force_close()
        return resp


class ApiServer(web.Server):
    def __call__(self) -> RequestHandler:
        return ApiRequestHandler(self, loop=self._loop, **self._kwargs)


class ApiRunner(web.AppRunner):
    """An AppRunner whose connections answer unparseable requests in the JSON envelope."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        limits = {"max_line_size": MAX_REQUEST_LINE, "max_field_size": MAX_HEADER_FIELD, "max_headers": MAX_HEADERS}
        super().__init__(app, **{**limits, **kwargs})

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        return ApiServer(plain.request_handler, request_factory=plain.request_factory,
                         handler_cancellation=plain.handler_cancellation, loop=plain._loop, **plain._kwargs)
