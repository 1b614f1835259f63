"""Takes the README's picture of the option-chain page: `python -m tests.dev.chain_page_shot
[docs/chain-page.png]` starts a `ticker dev` of its own (in a temporary folder, on free ports), opens
`/` in headless Chromium with the dev API key, waits for a few live updates and saves a PNG.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import orjson

from tests.dev.headless import chromium
from tests.dev.shared_dev import RunningDev, running_dev

UPDATES = 5  # live chain messages merged before the picture: a current data age, figures that moved
BOUND = 120.0
SETTLE = 0.6  # seconds after an update: most cells' change flashes have faded, a few still show
HEIGHT = 700  # the ladder of the strikes ticking in dev, and the charts beside it

_READY = """(() => {
  const count = Number(document.getElementById("updates").dataset.count);
  return document.getElementById("conn").dataset.state === "live" && count >= %d;
})()"""


_COUNT = 'document.getElementById("updates").dataset.count'


async def shoot(dev: RunningDev, out: Path) -> None:
    async with chromium(height=HEIGHT) as browser:
        page = await browser.page()
        await page.navigate(f"{dev.web_url}/#key={dev.api_key}")
        deadline = time.monotonic() + BOUND
        while not await page.evaluate(_READY % UPDATES):
            if time.monotonic() > deadline:
                state = await page.evaluate("document.getElementById('conn').textContent")
                raise SystemExit(f"the page did not go live: {orjson.dumps(state).decode()}")
            await asyncio.sleep(0.2)
        seen = await page.evaluate(_COUNT)
        while await page.evaluate(_COUNT) == seen:
            await asyncio.sleep(0.02)
        await asyncio.sleep(SETTLE)
        await page.screenshot(out)


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/chain-page.png").resolve()
    with tempfile.TemporaryDirectory(prefix="chain-shot-") as home, running_dev(Path(home)) as dev:
        asyncio.run(shoot(dev, out))
    print(out)


if __name__ == "__main__":
    main()
