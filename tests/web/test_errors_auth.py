"""Cross-cutting behaviour: the error envelope, request ids, the API key, the rate limit, metrics."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from tests.web.conftest import API_KEY
from tests.web.seed import CALL

ORDER = {"exchange": "NFO", "tradingsymbol": CALL.tradingsymbol, "transaction_type": "BUY", "quantity": CALL.lot_size,
         "product": "NRML", "order_type": "MARKET"}


async def _error(resp, status: int) -> dict:
    assert resp.status == status, await resp.text()
    doc = await resp.json()
    assert set(doc) == {"error"} and set(doc["error"]) == {"code", "message", "details"}
    return doc["error"]


async def test_malformed_json_is_a_400(api) -> None:
    err = await _error(await api.post("/orders", data=b'{"exchange": ', headers={"Content-Type": "application/json"}),
                       400)
    assert err["code"] == "malformed_json"


async def test_empty_body_and_non_object_bodies(api) -> None:
    assert (await _error(await api.post("/orders", data=b""), 400))["code"] == "malformed_json"
    err = await _error(await api.post("/orders", json=[1, 2]), 422)
    assert "JSON object" in err["message"]


@pytest.mark.parametrize(("change", "field", "kind"), [
    ({"quantity": "many"}, "quantity", "int_type"),
    ({"quantity": "75"}, "quantity", "int_type"),  # JSON bodies are strict: a string is not a number
    ({"quantity": 0}, "quantity", "greater_than"),
    ({"price": -5}, "price", "greater_than_equal"),
    ({"exchange": "NYSE"}, "exchange", "literal_error"),
    ({"colour": "blue"}, "colour", "extra_forbidden"),
])
async def test_bad_fields_are_422s_that_name_the_field(api, change, field, kind) -> None:
    err = await _error(await api.post("/orders", json={**ORDER, **change}), 422)
    assert err["code"] == "validation_error"
    assert field in err["message"]
    assert any(d["field"] == field and d["type"] == kind for d in err["details"]), err["details"]


async def test_bad_query_parameters_name_the_parameter(api) -> None:
    err = await _error(await api.get("/instruments?limit=0"), 422)
    assert err["details"][0]["field"] == "limit" and err["details"][0]["location"] == "query"
    err = await _error(await api.get("/instruments?lmit=5"), 422)
    assert err["details"][0]["field"] == "lmit"
    err = await _error(await api.get("/subscriptions?status=a&status=b"), 422)
    assert "more than once" in err["message"]


async def test_unknown_route_wrong_method_too_large_and_wrong_media_type(api) -> None:
    assert (await _error(await api.get("/no/such/thing"), 404))["code"] == "not_found"
    resp = await api.patch("/orders")
    err = await _error(resp, 405)
    assert "POST" in resp.headers["Allow"] and err["code"] == "method_not_allowed"
    for fixed in ("/orders/basket", "/orders/margins"):  # resources of their own, not order ids
        resp = await api.put(fixed, json={})
        await _error(resp, 405)
        assert resp.headers["Allow"] == "POST", fixed
    huge = b'{"x": "' + b"a" * 300_000 + b'"}'
    assert (await _error(await api.post("/orders", data=huge, headers={"Content-Type": "application/json"}),
                         413))["code"] == "payload_too_large"
    err = await _error(await api.post("/orders", data=b"a=1", headers={"Content-Type": "text/csv"}), 415)
    assert "application/json" in err["message"]


async def _raw(api, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are to the app's real port; (status, headers, body) of the answer."""
    reader, writer = await asyncio.open_connection(api.host, api.port)
    try:
        writer.write(request)
        await writer.drain()
        head, _, body = (await reader.read()).partition(b"\r\n\r\n")
    finally:
        writer.close()
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), {k.lower(): v for k, v in headers.items()}, body


def _envelope(body: bytes) -> dict:
    doc = orjson.loads(body)
    assert set(doc) == {"error"} and set(doc["error"]) == {"code", "message", "details"}
    return doc["error"]


@pytest.mark.parametrize(("request_bytes", "status", "code"), [
    (b"GET /instruments?q=" + b"A" * 20_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414, "uri_too_long"),
    (b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"B" * 20_000 + b"\r\n\r\n", 431, "headers_too_large"),
    (b"GET /health HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X-H%d: 1\r\n" % i for i in range(150)) + b"\r\n",
     431, "headers_too_large"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n", 400, "bad_request"),
    (b"GET /health HTTP/1.1\r\nHost: t\r\nContent-Length: nope\r\n\r\n", 400, "bad_request"),
])
async def test_requests_aiohttp_cannot_parse_get_the_envelope_without_an_echo(api, request_bytes, status,
                                                                               code) -> None:
    got, headers, body = await _raw(api, request_bytes)
    assert got == status, body
    assert headers["content-type"].startswith("application/json")
    assert _envelope(body)["code"] == code
    assert b"AAAA" not in body and b"BBBB" not in body and b"not http" not in body  # nothing sent is echoed
    assert (await api.get("/health")).status == 200  # and the server carries on


async def test_a_long_url_just_under_the_limit_is_served(api) -> None:
    resp = await api.get("/instruments?q=" + "A" * 60 + "&name=" + "N" * 64 + "&x=" + "y" * 7_500)
    assert (await _error(resp, 422))["details"][0]["field"] == "x"  # reached the app, not refused at the door


async def test_unknown_routes_and_wrong_methods_on_the_real_server(api) -> None:
    status, headers, body = await _raw(api, b"GET /no/such/route HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert status == 404 and _envelope(body)["code"] == "not_found"
    status, headers, body = await _raw(api, b"PATCH /orders HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert status == 405 and "POST" in headers["allow"] and _envelope(body)["code"] == "method_not_allowed"


async def test_request_ids_are_echoed_or_made(api) -> None:
    resp = await api.get("/health", headers={"X-Request-ID": "trace-123"})
    assert resp.headers["X-Request-ID"] == "trace-123"
    made = (await api.get("/health", headers={"X-Request-ID": "bad id with spaces"})).headers["X-Request-ID"]
    assert made != "bad id with spaces" and len(made) == 32
    err_resp = await api.get("/no/such/thing")
    assert len(err_resp.headers["X-Request-ID"]) == 32


async def test_api_key_guards_everything_but_the_open_paths(make_api) -> None:
    api = await make_api(api_key=API_KEY)
    for path in ("/health", "/metrics", "/openapi.json"):
        assert (await api.get(path)).status == 200, path
    err = await _error(await api.get("/subscriptions"), 401)
    assert "X-API-Key" in err["message"]
    err = await _error(await api.get("/subscriptions", headers={"X-API-Key": API_KEY[:-1] + "x"}), 401)
    assert err["message"] == "invalid API key"
    assert (await api.post("/orders", json=ORDER)).status == 401
    ok = await api.get("/subscriptions", headers={"X-API-Key": API_KEY})
    assert ok.status == 200


async def test_rate_limit_per_key(make_api) -> None:
    api = await make_api(api_key=API_KEY, http_rate_limit_per_minute=3)
    headers = {"X-API-Key": API_KEY}
    seen = [await api.get("/subscriptions", headers=headers) for _ in range(3)]
    assert [r.status for r in seen] == [200, 200, 200]
    assert [r.headers["X-RateLimit-Remaining"] for r in seen] == ["2", "1", "0"]
    refused = await api.get("/subscriptions", headers=headers)
    err = await _error(refused, 429)
    assert int(refused.headers["Retry-After"]) >= 1 and err["details"]["retry_after_seconds"] >= 1
    assert (await api.get("/health")).status == 200  # probes are never limited
    metrics = await (await api.get("/metrics")).text()
    assert "ticker_http_rate_limited_total 1.0" in metrics


async def test_metrics_count_requests_by_route_template(api) -> None:
    await api.get("/instruments/408065")
    await api.get("/instruments/999")
    text = await (await api.get("/metrics")).text()
    assert 'ticker_http_requests_total{method="GET",route="/instruments/{token}",status="200"} 1.0' in text
    assert 'ticker_http_requests_total{method="GET",route="/instruments/{token}",status="404"} 1.0' in text


async def test_openapi_is_served_and_covers_every_route(api) -> None:
    doc = await (await api.get("/openapi.json")).json()
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops if m != "parameters"}
    served = {(r.method, r.resource.canonical) for r in api.app.router.routes() if r.method != "HEAD"}
    assert served == documented


async def test_text_postgres_cannot_store_is_refused_not_a_500(api) -> None:
    err = await _error(await api.get("/orders?basket_id=a%00b"), 422)
    assert err["details"][0]["field"] == "basket_id"
    assert (await api.get("/instruments?q=%ED%A0%80")).status == 200  # undecodable bytes arrive replaced
    body = b'{"exchange": "NFO", "tradingsymbol": "A\\u0000B", "transaction_type": "BUY", "quantity": 1,' \
           b' "product": "NRML", "order_type": "MARKET"}'
    err = await _error(await api.post("/orders", data=body, headers={"Content-Type": "application/json"}), 422)
    assert "NUL" in err["message"]
    assert (await api.get("/baskets/a%00b")).status == 404


async def test_a_backing_service_out_of_reach_is_a_503_not_a_500(api) -> None:
    from ticker.http.state import SERVICES
    from ticker.infra.stores.redis import connect

    svc = api.app[SERVICES]
    healthy_pipe, svc.pipe.redis = svc.pipe.redis, connect("redis://127.0.0.1:1/0")  # refused: nothing listens
    try:
        resp = await api.post("/orders", json=ORDER)
        err = await _error(resp, 503)
        assert err["code"] == "unavailable" and resp.headers["Retry-After"] == "1"
    finally:
        await svc.pipe.redis.aclose()
        svc.pipe.redis = healthy_pipe
    healthy_redis, svc.redis = svc.redis, connect("redis://127.0.0.1:1/0")
    try:
        health = await api.get("/health")
        assert health.status == 503
        doc = await health.json()
        assert doc["status"] == "down" and doc["checks"]["redis"]["ok"] is False
        assert doc["checks"]["postgres"]["ok"] is True
    finally:
        await svc.redis.aclose()
        svc.redis = healthy_redis


async def test_high_limits_take_tokens_in_small_leases(make_api, redis, names) -> None:
    import asyncio
    import hashlib

    key = "lease-" + "l" * 40  # a bucket of its own
    api = await make_api(api_key=key, http_rate_limit_per_minute=60_000)  # lease: 50 tokens
    headers = {"X-API-Key": key}
    responses = await asyncio.gather(*(api.get("/subscriptions", headers=headers) for _ in range(30)))
    assert all(r.status == 200 for r in responses)
    bucket = names.key("http-rl", "key:" + hashlib.sha256(key.encode()).hexdigest()[:16])
    left = float(await redis.hget(bucket, "tokens"))
    assert 60_000 - 50 <= left < 60_000 - 49.5  # one lease of 50 paid for all 30 requests (plus refill)
    remaining = sorted(int(r.headers["X-RateLimit-Remaining"]) for r in responses)
    assert remaining[-1] - remaining[0] == 29  # each request still spent exactly one token
