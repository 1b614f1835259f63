"""Corrupt feed data through the whole decode -> render path (Decoder -> buffer -> Enricher).

Frames are built from packets of every length (Kite's 8, 28, 32, 44, 184 and others) carrying
tokens of every kind (option, index, future, equity, unknown), then corrupted: truncated, a length
field pointing past the end, the packet count changed, junk appended. Whatever arrives, nothing
may raise, every good packet whose bytes survived is rendered, nothing else is, and each bad
packet is counted once as dropped, reason `malformed`.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ticker.core.instruments import SEG_INDICES, SEG_NSE, Instrument, make_token
from ticker.core.wire import encode
from ticker.streamer.stages.batch import TickBuffer
from ticker.streamer.stages.decode import Decoder
from ticker.streamer.stages.render import Outgoing

from .helpers import NIFTY_INDEX, chain, full_ticks, future, index, option
from .test_enrich import enricher

KITE_LENGTHS = (8, 28, 32, 44, 184)
INDEX_LENGTHS = frozenset({8, 28, 32})
TRADABLE_LENGTHS = frozenset({8, 44, 184})
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def equity() -> Instrument:
    return Instrument(instrument_token=make_token(2885, SEG_NSE), exchange_token=2885, tradingsymbol="RELIANCE",
                      name="RELIANCE", instrument_type="EQ", segment="NSE", exchange="NSE")


INSTRUMENTS = [index(), future(), equity(), *chain()]
OPTIONS = [i.instrument_token for i in chain()]
UNDERLYINGS = [NIFTY_INDEX, future().instrument_token, equity().instrument_token]
UNKNOWN = make_token(777_777, 2)
TOKENS = [*OPTIONS[:3], *UNDERLYINGS, UNKNOWN]


def good(packet: bytes) -> bool:
    """Would this packet, intact, be published? (a known token, in a layout Kite sends for it)"""
    if len(packet) < 4:
        return False
    token = int.from_bytes(packet[:4], "big")
    fits = INDEX_LENGTHS if token & 0xFF == SEG_INDICES else TRADABLE_LENGTHS
    return len(packet) in fits and token in set(OPTIONS) | set(UNDERLYINGS)


def misfit(packet: bytes) -> bool:
    """Counted as malformed: an unknown length, or a layout Kite never sends for this token's kind."""
    if len(packet) not in KITE_LENGTHS:
        return True
    token = int.from_bytes(packet[:4], "big")
    return len(packet) not in (INDEX_LENGTHS if token & 0xFF == SEG_INDICES else TRADABLE_LENGTHS)


@st.composite
def packets(draw: st.DrawFn) -> bytes:
    token = draw(st.sampled_from(TOKENS))
    length = draw(st.one_of(st.sampled_from(KITE_LENGTHS), st.integers(0, 200)))
    rest = draw(st.binary(min_size=max(0, length - 4), max_size=max(0, length - 4)))
    return (struct.pack(">I", token) + rest)[:length]


def frame_of(pkts: list[bytes], count: int | None = None) -> bytes:
    head = struct.pack(">H", len(pkts) if count is None else count)
    return head + b"".join(struct.pack(">H", len(p)) + p for p in pkts)


@dataclass
class Run:
    out: Outgoing
    decoder: Decoder

    def published(self) -> list[tuple[int, float]]:
        docs = [orjson.loads(b) for b in self.out.options + self.out.underlying]
        return sorted((d["instrument_token"], d["last_price"]) for d in docs)

    def malformed(self) -> float:
        return self.decoder.metrics.dropped.labels("malformed")._value.get()


def through_the_pipeline(*frames: bytes) -> Run:
    e = enricher(INSTRUMENTS)
    buffer = TickBuffer(capacity=100_000, batch_max=1000)
    decoder = Decoder(buffer, e.metrics)
    for frame in frames:
        decoder.frame("acc", frame)
    now = time.time()
    return Run(e.process(buffer.take(), now), decoder)


def expected(pkts: list[bytes]) -> list[tuple[int, float]]:
    return sorted((int.from_bytes(p[:4], "big"), int.from_bytes(p[4:8], "big") / 100) for p in pkts if good(p))


def trusted(pkts: list[bytes]) -> list[bytes]:
    """The packets kept when the framing is broken: those before the first unknown length."""
    out = []
    for p in pkts:
        if len(p) not in KITE_LENGTHS:
            break
        out.append(p)
    return out


@FUZZ
@given(st.lists(packets(), min_size=1, max_size=12))
def test_bad_packets_in_a_sound_frame_cost_only_themselves(pkts: list[bytes]) -> None:
    run = through_the_pipeline(frame_of(pkts))
    assert run.published() == expected(pkts)
    assert run.malformed() == sum(misfit(p) for p in pkts)


@FUZZ
@given(st.lists(packets(), min_size=1, max_size=12), st.data())
def test_a_truncated_frame_keeps_every_whole_packet_before_the_cut(pkts: list[bytes], data: st.DataObject) -> None:
    frame = frame_of(pkts)
    cut = data.draw(st.integers(0, len(frame) - 1))
    ends = [2 + sum(2 + len(p) for p in pkts[:i + 1]) for i in range(len(pkts))]
    whole = [p for p, end in zip(pkts, ends, strict=True) if end <= cut]
    run = through_the_pipeline(frame[:cut])
    assert run.published() == expected(trusted(whole) if len(whole) < len(pkts) else whole)


@FUZZ
@given(st.lists(packets(), min_size=1, max_size=12), st.data())
def test_a_length_field_past_the_end_keeps_the_packets_before_it(pkts: list[bytes], data: st.DataObject) -> None:
    bad = data.draw(st.integers(0, len(pkts) - 1))
    frame = bytearray(frame_of(pkts))
    at = 2 + sum(2 + len(p) for p in pkts[:bad])
    frame[at:at + 2] = struct.pack(">H", data.draw(st.integers(len(frame) - at - 1, 0xFFFF)))
    run = through_the_pipeline(bytes(frame))
    assert run.published() == expected(trusted(pkts[:bad]))
    assert run.malformed() >= len(pkts) - bad


@FUZZ
@given(st.lists(packets(), min_size=1, max_size=12), st.integers(0, 0xFFFF), st.binary(max_size=8))
def test_a_wrong_count_or_junk_keeps_what_the_framing_vouches_for(pkts: list[bytes], count: int,
                                                                  junk: bytes) -> None:
    frame = frame_of(pkts, count) + junk
    run = through_the_pipeline(frame)
    sound = count == len(pkts) and not junk
    kept = pkts if sound else trusted(pkts[:count])
    assert run.published() == expected(kept)


@FUZZ
@given(st.binary(max_size=600))
def test_any_bytes_never_raise_and_publish_only_known_tokens(frame: bytes) -> None:
    run = through_the_pipeline(frame)
    assert {t for t, _ in run.published()} <= set(OPTIONS) | set(UNDERLYINGS)


def test_an_index_quote_packet_with_an_option_token_is_dropped_and_its_frame_mates_kept() -> None:
    """What an operator saw: a 28-byte packet for an option used to fail the whole flush."""
    opt = option(25_000.0, "CE").instrument_token
    good_frame = encode(full_ticks([opt, NIFTY_INDEX], [120.5, 25_000.0]))
    index_quote = struct.pack(">IIIIIII", opt, 12_345, 12_400, 12_300, 12_350, 12_000, 0)
    mixed = frame_of([bytes(good_frame[4:4 + 184]), index_quote, bytes(good_frame[4 + 186:])])
    run = through_the_pipeline(good_frame, mixed)
    assert run.published() == sorted([(opt, 120.5), (NIFTY_INDEX, 25_000.0)] * 2)
    assert run.malformed() == 1
