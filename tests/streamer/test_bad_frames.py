"""End to end: the stand-in streams good ticks while 50 bad frames are injected through
`POST /_sim/ws/inject` (28-byte index packets with option tokens, frames cut short, length fields
past the end, unknown lengths, a full packet for an index, counts the bytes do not hold, junk):
every good tick the stand-in sent meanwhile, and every good packet riding in a bad frame, is
published; only the bad packets are lost, each counted as dropped, reason `malformed`."""

from __future__ import annotations

from collections import Counter

import pytest

from .conftest import Recorder, option_tokens, running_streamer, subscribe, wait_for
from .reliability import Key, doc_key, lost_to_bad_frames

pytestmark = pytest.mark.timeout(300)


def published_keys(rec: Recorder, channels: list[str]) -> Counter[Key]:
    return Counter(doc_key(t) for ch in channels for t in rec.ticks(ch) if t.get("type") != "bar")


async def test_bad_frames_cost_only_their_bad_packets(market, sdb, ssettings, snames, sredis):
    tokens = await option_tokens(sdb, 20)
    await subscribe(sdb, tokens)
    index_token = await sdb.fetchval("SELECT instrument_token FROM instruments WHERE tradingsymbol = 'NIFTY 50'")
    channels = [snames.options, snames.underlying]
    async with Recorder(sredis, channels) as rec, running_streamer(ssettings) as streamer:
        await wait_for(lambda: rec.tokens(snames.options) >= set(tokens))
        loss = await lost_to_bad_frames(market, streamer, lambda: published_keys(rec, channels), tokens,
                                        index_token, frames=50)
        status, health = streamer.health()
        failures = sum(s.value for m in streamer.metrics.stage_failures.collect() for s in m.samples
                       if s.name.endswith("_total"))
    print(loss.describe())
    assert loss.bad_frames == 50 and loss.sent_good > 100
    assert loss.lost_good == 0, f"good ticks lost: {loss.missing}"
    assert loss.malformed == loss.bad_packets == 50
    assert status == 200 and health["status"] == "streaming" and "reason" not in health
    assert failures == 0 and streamer.supervisor.failures == 0
