"""The README's mutual-fund examples against a running `ticker dev` (two simulated accounts, so reads
name `account_id=sim1`; writes default to it): funds read, a bad amount refused, a purchase completed
at the NAV the stand-in publishes and shown in the holdings, a SIP registered and cancelled."""

from __future__ import annotations

import time
import uuid

import requests

from tests.dev.shared_dev import RunningDev

FUND = "INF000S01013"  # the README's fund
WAIT = 120.0


def _call(dev: RunningDev, method: str, path: str, **kw) -> requests.Response:
    return requests.request(method, dev.web_url + path, headers={"X-API-Key": dev.api_key, **kw.pop("headers", {})},
                            timeout=30, **kw)


def _job(dev: RunningDev, accepted: dict) -> dict:
    """The finished job (long-polling its status URL)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        job = _call(dev, "GET", f"{accepted['status_url']}?wait=10").json()
        if job["status"] not in ("queued", "in_progress"):
            assert job["status"] == "complete", job
            return job["result"]
    raise AssertionError(f"job {accepted['job_id']} did not finish")


def _fresh(dev: RunningDev, path: str) -> list:
    r = _call(dev, "GET", f"{path}?account_id=sim1&refresh=true")
    assert r.status_code == 202, r.text
    _job(dev, r.json())
    r = _call(dev, "GET", f"{path}?account_id=sim1")
    assert r.status_code == 200, r.text
    return r.json()["data"]


def test_the_readmes_mutual_fund_examples(ticker_dev: RunningDev) -> None:
    dev = ticker_dev
    assert FUND in {f["tradingsymbol"] for f in _fresh(dev, "/mf/instruments")}

    bad = _call(dev, "POST", "/mf/orders", json={"tradingsymbol": FUND, "transaction_type": "BUY", "amount": 499})
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"] == "amount", bad.text

    key = {"Idempotency-Key": f"readme-mf-{uuid.uuid4().hex}"}
    r = _call(dev, "POST", "/mf/orders", headers=key,
              json={"tradingsymbol": FUND, "transaction_type": "BUY", "amount": 5000})
    assert r.status_code == 202, r.text
    order_id = _job(dev, r.json())["order_id"]

    nav = requests.post(f"{dev.info['sim_url']}/_sim/mf/nav", json={}, timeout=30)
    assert nav.status_code == 200 and nav.json()["completed"] >= 1, nav.text
    assert any(o["order_id"] == order_id and o["status"] == "COMPLETE" for o in _fresh(dev, "/mf/orders"))
    assert any(h["tradingsymbol"] == FUND and h["quantity"] > 0 for h in _fresh(dev, "/mf/holdings"))

    r = _call(dev, "POST", "/mf/sips", headers={"Idempotency-Key": f"readme-sip-{uuid.uuid4().hex}"},
              json={"tradingsymbol": FUND, "amount": 1000, "instalments": 12, "frequency": "monthly",
                    "instalment_day": 5})
    assert r.status_code == 202, r.text
    sip_id = _job(dev, r.json())["sip_id"]
    assert any(s["sip_id"] == sip_id and s["status"] == "ACTIVE" for s in _fresh(dev, "/mf/sips"))
    r = _call(dev, "DELETE", f"/mf/sips/{sip_id}")
    assert r.status_code == 202 and _job(dev, r.json())["kite_status"] == "CANCELLED"
