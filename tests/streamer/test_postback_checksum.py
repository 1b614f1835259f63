"""Order postbacks on the ticker WebSocket's text path (Decoder), before anything reaches Redis: a
genuine one is relayed, a forged or damaged one is dropped and counted by reason, and an account
with no stored api_secret has its postbacks relayed and reported once."""

from __future__ import annotations

import logging

import orjson
import pytest

from ticker.core.postbacks import check_postback, postback_checksum
from ticker.streamer.process.stream_metrics import StreamerMetrics
from ticker.streamer.stages.batch import TickBuffer
from ticker.streamer.stages.decode import Decoder

SECRET = "account-one-secret"


def update(order_id: str, secret: str | None = SECRET, **change: object) -> dict:
    doc = {"order_id": order_id, "order_timestamp": "2026-11-20 10:15:02", "status": "COMPLETE",
           "tradingsymbol": "NIFTY26NOV24450CE", "filled_quantity": 65}
    if secret is not None:
        doc["checksum"] = postback_checksum(order_id, doc["order_timestamp"], secret)
    return {**doc, **change}


def message(data: dict) -> bytes:
    return orjson.dumps({"type": "order", "id": "", "data": data})


@pytest.fixture
def ingest() -> Decoder:
    stage = Decoder(TickBuffer(1000, 100), StreamerMetrics())
    stage.set_secrets({"one": SECRET, "bare": None})
    return stage


def relayed(ingest: Decoder) -> list[dict]:
    return [orjson.loads(doc) for doc in ingest.buffer.take().orders]


def rejected(ingest: Decoder, reason: str) -> float:
    return ingest.metrics.registry.get_sample_value("ticker_streamer_postbacks_rejected_total", {"reason": reason}) or 0


def test_a_genuine_postback_is_relayed_with_its_account(ingest: Decoder) -> None:
    ingest.text("one", message(update("A1")))
    assert [(d["order_id"], d["account_id"]) for d in relayed(ingest)] == [("A1", "one")]
    assert rejected(ingest, "bad_checksum") == 0


@pytest.mark.parametrize(("data", "reason"), [
    (update("B1", secret="someone-else"), "bad_checksum"),
    (update("B2", status="CANCELLED"), None),  # the checksum does not cover status: still genuine
    ({**update("B3"), "order_timestamp": "2026-11-20 10:15:03"}, "bad_checksum"),
    ({**update("B4"), "order_id": "B5"}, "bad_checksum"),
    (update("B6", secret=None), "missing_checksum"),
    ({**update("B7"), "checksum": 12345}, "missing_checksum"),
    ({**update("B8"), "checksum": update("B8")["checksum"].upper()}, None),  # hex case does not matter
    ({**update("B9"), "checksum": "\u00f8#\U0001f600"}, "bad_checksum"),  # not hex at all
])
def test_a_postback_is_relayed_only_when_its_checksum_verifies(ingest: Decoder, data: dict, reason: str | None,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ticker.streamer.stages.decode"):
        ingest.text("one", message(data))
        ingest.text("one", message(data))
    out = relayed(ingest)
    if reason is None:
        assert [d["order_id"] for d in out] == [data["order_id"]] * 2
        return
    assert out == []
    assert rejected(ingest, reason) == 2
    dropped = [r for r in caplog.records if "checksum does not verify" in r.getMessage()]
    assert len(dropped) == 1  # logged once, not once per postback


def test_an_account_without_a_secret_passes_unverified_and_is_reported_once(
        ingest: Decoder, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ticker.streamer.stages.decode"):
        for n in range(3):
            ingest.text("bare", message(update(f"C{n}", secret="anything")))
    assert [d["order_id"] for d in relayed(ingest)] == ["C0", "C1", "C2"]
    assert ingest.unverified == {"bare"}
    assert len([r for r in caplog.records if "unverified" in r.getMessage()]) == 1
    assert ingest.metrics.registry.get_sample_value("ticker_streamer_postbacks_unverified_total") == 3

    ingest.set_secrets({"one": SECRET, "bare": "now-stored"})  # a secret stored later: verified from then on
    assert ingest.unverified == set()
    ingest.text("bare", message(update("C3", secret="anything")))
    assert relayed(ingest) == [] and rejected(ingest, "bad_checksum") == 1


def test_text_that_no_codec_takes_is_a_bad_checksum_not_a_crash() -> None:
    assert check_postback({**update("D1"), "order_id": "\ud800x"}, SECRET) == "bad_checksum"
    assert check_postback({**update("D2"), "checksum": "\udc00" * 64}, SECRET) == "bad_checksum"
