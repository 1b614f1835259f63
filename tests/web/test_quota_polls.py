"""Status polls are free: a client told to poll a job or basket can poll as often as it likes and
still has its quota for the next order."""

from __future__ import annotations

from tests.web.seed import CALL

ORDER = {"exchange": "NFO", "tradingsymbol": CALL.tradingsymbol, "transaction_type": "BUY", "quantity": CALL.lot_size,
         "product": "NRML", "order_type": "MARKET"}
KEY = "polls-" + "p" * 40  # a quota bucket of its own


async def test_job_and_basket_polls_do_not_spend_the_quota(make_api) -> None:
    api = await make_api(api_key=KEY, http_rate_limit_per_minute=3)
    headers = {"X-API-Key": KEY}
    order = await api.post("/orders", json=ORDER, headers=headers)
    assert order.status == 202, await order.text()
    basket = await api.post("/orders/basket", json={"legs": [ORDER]}, headers=headers)
    assert basket.status == 202, await basket.text()
    job_url, basket_url = (await order.json())["status_url"], (await basket.json())["status_url"]
    for _ in range(10):  # far beyond the 3 requests a minute the quota allows
        for url in (job_url, basket_url):
            poll = await api.get(url, headers=headers)
            assert poll.status == 200, await poll.text()
            assert "X-RateLimit-Remaining" not in poll.headers  # not metered at all
    again = await api.post("/orders", json=ORDER, headers=headers)
    assert again.status == 202, await again.text()
    assert again.headers["X-RateLimit-Remaining"] == "0"  # order, basket, this order: the whole quota
    refused = await api.post("/orders", json=ORDER, headers=headers)
    assert refused.status == 429  # the quota itself still holds for everything else


async def test_other_reads_of_a_job_are_still_metered(make_api) -> None:
    key = "metered-" + "m" * 40
    api = await make_api(api_key=key, http_rate_limit_per_minute=2)
    headers = {"X-API-Key": key}
    statuses = [(await api.delete("/jobs/no-such-job", headers=headers)).status for _ in range(3)]
    assert statuses[:2] == [404, 404] and statuses[2] == 429  # only GET polls are free
