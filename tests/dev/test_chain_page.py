"""The option-chain page at `/`, in headless Chromium against the shared `ticker dev`: it asks for the
API key, paints a ladder of numbers from `GET /chain`, keeps it live over `/ws/ticks` with a JWT,
reconnects when the socket drops and switches underlyings.

Chromium is driven over its DevTools protocol (tests/dev/headless.py). Without a `chromium` binary
the module is skipped, unless TICKER_TEST_REQUIRE_CHROMIUM is set (CI sets it): then it fails.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import pytest_asyncio

from tests.dev.headless import REQUIRE_ENV, Browser, Page, chromium, chromium_path
from tests.dev.shared_dev import RunningDev
from tests.waiting import GENEROUS, wait_for

pytestmark = pytest.mark.skipif(
    chromium_path() is None and not os.environ.get(REQUIRE_ENV),
    reason=f"chromium is not installed (Debian: apt-get install chromium); set {REQUIRE_ENV}=1 to fail instead")

# The page promises an update within 3 s of the streamer's (CHAIN_INTERVAL_MS = 1 s) chain messages;
# the wait is bounded generously so a busy machine cannot fail it, as a broken page still would.
UPDATE_BOUND = 20.0

# What the tests read of the page, in one evaluation.
PROBE = """JSON.stringify((() => {
  const conn = document.getElementById("conn");
  const rows = [...document.querySelectorAll("#ladder tbody tr")].filter((tr) => tr.offsetParent !== null);
  const num = (td) => td !== null && /^-?[0-9][0-9,]*(\\.[0-9]+)?$/.test(td.textContent);
  return {
    state: conn.dataset.state, connects: Number(conn.dataset.connects || 0),
    updates: Number(document.getElementById("updates").dataset.count),
    rows: rows.length,
    priced: rows.filter((tr) => num(tr.querySelector("td.ltp.ce")) && num(tr.querySelector("td.ltp.pe"))).length,
    ltps: rows.map((tr) => [...tr.querySelectorAll("td.ltp")].map((td) => td.textContent).join("|")),
    atm: document.querySelectorAll("#ladder tr.atm").length,
    atm_strike: document.getElementById("f-atm").textContent,
    expiries: [...document.querySelectorAll("#expiry option")].map((o) => o.value),
    strikes: rows.map((tr) => Number(tr.dataset.strike)),
    itm_ce: document.querySelectorAll("#ladder td.itm-ce").length,
    itm_pe: document.querySelectorAll("#ladder td.itm-pe").length,
    smile: [...document.querySelectorAll("#smile polyline")].map((p) => p.getAttribute("points").split(" ").length),
    spot: document.getElementById("f-spot").textContent,
    atm_iv: document.getElementById("f-atmiv").textContent,
    asking: document.getElementById("keydialog").open,
    key_error: document.getElementById("keyerror").textContent,
    hash: location.hash,
    key_kept: sessionStorage.getItem("ticker.apiKey") !== null,
  };
})())"""


async def _look(page: Page) -> dict[str, Any]:
    return orjson.loads(await page.evaluate(PROBE))


async def _until(page: Page, holds: Any, timeout: float = GENEROUS) -> dict[str, Any]:
    """Waits for `holds(view)` and answers the view that satisfied it."""
    seen: dict[str, Any] = {}

    async def page_shows_it() -> bool:
        seen.update(await _look(page))
        return bool(holds(seen))

    await wait_for(page_shows_it, timeout=timeout, every=0.1)
    return seen


def _live(view: dict[str, Any]) -> bool:
    return view["state"] == "live" and view["priced"] >= 5


@pytest_asyncio.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as running:
        yield running


async def test_the_page_asks_for_the_key_and_refuses_a_wrong_one(ticker_dev: RunningDev, browser: Browser) -> None:
    page = await browser.page()
    await page.navigate(ticker_dev.web_url + "/")
    view = await _until(page, lambda v: v["asking"] and v["state"] == "key")
    assert not view["key_kept"] and view["rows"] == 0
    typed = "document.getElementById('keyinput').value = %s; document.getElementById('keyform').requestSubmit()"
    await page.evaluate(typed % orjson.dumps("not-the-key").decode())
    view = await _until(page, lambda v: v["asking"] and v["key_error"])
    assert "key" in view["key_error"].lower() and not view["key_kept"]
    await page.evaluate(typed % orjson.dumps(ticker_dev.api_key).decode())
    view = await _until(page, _live)
    assert not view["asking"] and view["key_kept"]


async def test_the_ladder_is_painted_and_kept_live(ticker_dev: RunningDev, browser: Browser) -> None:
    page = await browser.page()
    await page.navigate(f"{ticker_dev.web_url}/#key={ticker_dev.api_key}")
    first = await _until(page, _live)
    assert first["hash"] == "" and first["key_kept"] and not first["asking"]  # the key left the address bar
    assert first["atm"] == 1 and first["itm_ce"] > 0 and first["itm_pe"] > 0
    assert float(first["spot"].replace(",", "")) > 0 and first["atm_iv"].endswith("%")
    assert len(first["smile"]) == 2 and min(first["smile"]) >= 2  # calls' and puts' IV by strike
    # The streamer's updates arrive and change what the ladder shows.
    moved = await _until(page, lambda v: v["updates"] > first["updates"] and v["ltps"] != first["ltps"],
                         timeout=UPDATE_BOUND)
    assert moved["state"] == "live" and moved["priced"] >= 5


async def test_a_dropped_socket_is_reopened_and_updates_resume(ticker_dev: RunningDev, browser: Browser) -> None:
    page = await browser.page()
    await page.navigate(f"{ticker_dev.web_url}/#key={ticker_dev.api_key}")
    before = await _until(page, lambda v: _live(v) and v["connects"] == 1)
    await page.evaluate("window.tickerChain.dropConnection()")
    after = await _until(page, lambda v: v["connects"] == 2 and v["state"] == "live")
    resumed = await _until(page, lambda v: v["updates"] > after["updates"], timeout=UPDATE_BOUND)
    assert before["connects"] == 1 and resumed["priced"] >= 5 and resumed["state"] == "live"


async def test_another_underlying_replaces_the_ladder_and_stays_live(ticker_dev: RunningDev, browser: Browser) -> None:
    page = await browser.page()
    await page.navigate(f"{ticker_dev.web_url}/?underlying=NIFTY#key={ticker_dev.api_key}")
    nifty = await _until(page, _live)
    assert nifty["expiries"] and nifty["expiries"] == sorted(nifty["expiries"])
    await page.evaluate("const box = document.getElementById('underlying'); box.value = 'BANKNIFTY';"
                        "box.dispatchEvent(new Event('change'))")
    bank = await _until(page, lambda v: _live(v) and v["atm_strike"] != nifty["atm_strike"]
                        and not set(v["strikes"]) & set(nifty["strikes"]))
    # Only BANKNIFTY's updates are merged from now on: NIFTY's strikes do not come back.
    later = await _until(page, lambda v: v["updates"] > bank["updates"] and v["ltps"] != bank["ltps"],
                         timeout=UPDATE_BOUND)
    assert not set(later["strikes"]) & set(nifty["strikes"]) and later["priced"] >= 5
