"""The Kite wire codec against kiteconnect's own parser, and against itself (round trips)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kiteconnect import KiteTicker

from ticker.core.wire import (
    MODE_FULL,
    MODE_LTP,
    MODE_NAMES,
    MODE_QUOTE,
    PACKET_LENGTHS,
    Ticks,
    WireError,
    decode,
    encode,
    packet_fits,
    price_divisor,
    salvage,
    to_kite_ticks,
)

KITE = KiteTicker("k", "t")  # never connects: only its parser is used
SEGMENTS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 12]  # every EXCHANGE_MAP value, so every divisor and indices
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def frame_of(packets: list[bytes], count: int | None = None) -> bytes:
    head = struct.pack(">H", len(packets) if count is None else count)
    return head + b"".join(struct.pack(">H", len(p)) + p for p in packets)


@st.composite
def packets(draw: st.DrawFn, lengths: tuple[int, ...] = PACKET_LENGTHS) -> bytes:
    """A packet of random bytes; usually its token gets a known segment so all divisors show up."""
    length = draw(st.sampled_from(lengths))
    body = bytearray(draw(st.binary(min_size=length, max_size=length)))
    if draw(st.booleans()):
        body[3] = draw(st.sampled_from(SEGMENTS))
    return bytes(body)


def canonical(packet: bytes) -> bytes:
    """The packet with the bytes our codec does not carry (index net change, depth padding) zeroed."""
    body = bytearray(packet)
    if len(body) in (28, 32):
        body[24:28] = bytes(4)
    if len(body) == 184:
        for level in range(10):
            pad = 64 + 12 * level + 10
            body[pad:pad + 2] = bytes(2)
    return bytes(body)


packet_lists = st.one_of(
    st.lists(packets(), min_size=1, max_size=12),  # mixed lengths
    st.sampled_from(PACKET_LENGTHS).flatmap(  # one length: the single-view fast path
        lambda n: st.lists(packets((n,)), min_size=1, max_size=12)),
)


# --- equality with kiteconnect -------------------------------------------------------------------

@FAST
@given(packet_lists)
def test_dicts_identical_to_kiteconnect(pkts: list[bytes]) -> None:
    frame = frame_of(pkts)
    ours, theirs = to_kite_ticks(frame), KITE._parse_binary(frame)
    assert ours == theirs
    assert repr(ours) == repr(theirs)  # same key order and same value types (int 0 vs 0.0 too)


def test_every_segment_divisor_and_tradable_match_kiteconnect() -> None:
    price = 1_234_567_891
    pkts = [struct.pack(">II", (77 << 8) | seg, price) for seg in range(256)]
    frame = frame_of(pkts)
    ticks = decode(frame)
    theirs = KITE._parse_binary(frame)
    assert ticks.last_price.tolist() == [t["last_price"] for t in theirs]
    assert ticks.tradable.tolist() == [t["tradable"] for t in theirs]
    assert ticks.tradable.sum() == 255 and not ticks.tradable[9]
    assert sorted(set(price_divisor(ticks.token).tolist())) == [100.0, 1e4, 1e7]


def test_full_packet_fields_land_in_their_columns() -> None:
    depth = b"".join(struct.pack(">IIHH", 10 + i, 2000 + i, 3 + i, 0) for i in range(10))
    body = struct.pack(">16I", 408065, 150025, 25, 149900, 1_000_000, 5000, 6000,
                       148000, 151000, 147500, 149000, 1_700_000_000, 700, 900, 600, 1_700_000_005)
    ticks = decode(frame_of([body + depth]))
    assert len(ticks) == 1
    assert ticks.mode.tolist() == [MODE_FULL] and ticks.packet_length.tolist() == [184]
    assert ticks.last_price[0] == 1500.25 and ticks.average_traded_price[0] == 1499.0
    assert (ticks.open[0], ticks.high[0], ticks.low[0], ticks.close[0]) == (1480.0, 1510.0, 1475.0, 1490.0)
    assert ticks.change[0] == pytest.approx((1500.25 - 1490.0) * 100 / 1490.0)
    assert ticks.volume_traded[0] == 1_000_000 and ticks.oi_day_low[0] == 600
    assert ticks.last_trade_time[0] == 1_700_000_000 and ticks.exchange_timestamp[0] == 1_700_000_005
    assert ticks.depth_buy_quantity[0].tolist() == [10, 11, 12, 13, 14]
    assert ticks.depth_sell_price[0].tolist() == [20.05, 20.06, 20.07, 20.08, 20.09]
    assert ticks.depth_sell_orders[0].tolist() == [8, 9, 10, 11, 12]


# --- decode paths and Ticks helpers -------------------------------------------------------------

@FAST
@given(st.lists(packets(), min_size=1, max_size=12))
def test_mixed_frame_equals_its_packets_decoded_one_by_one(pkts: list[bytes]) -> None:
    whole = decode(frame_of(pkts))
    assert whole == Ticks.concat(decode(frame_of([p])) for p in pkts)
    assert whole.packet_length.tolist() == [len(p) for p in pkts]  # packet order kept


@FAST
@given(st.lists(packets(), min_size=1, max_size=12), st.data())
def test_take_selects_the_same_rows_as_decoding_those_packets(pkts: list[bytes], data: st.DataObject) -> None:
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=len(pkts), max_size=len(pkts))))
    chosen = [p for p, keep in zip(pkts, mask, strict=True) if keep]
    expected = decode(frame_of(chosen)) if chosen else Ticks.empty()
    assert decode(frame_of(pkts)).take(mask) == expected
    assert decode(frame_of(pkts)).take(np.flatnonzero(mask)) == expected


def test_heartbeats_and_empty_frames_decode_to_nothing() -> None:
    for frame in (b"", b"\x00", b"\x07", b"\x00\x00"):
        ticks = decode(frame)
        assert len(ticks) == 0 and ticks == Ticks.empty()
        assert to_kite_ticks(frame) == KITE._parse_binary(frame) == []
    assert encode(Ticks.empty()) == b"\x00\x00"


def test_mode_names_are_kites() -> None:
    assert MODE_NAMES[MODE_LTP] == KITE.MODE_LTP
    assert MODE_NAMES[MODE_QUOTE] == KITE.MODE_QUOTE
    assert MODE_NAMES[MODE_FULL] == KITE.MODE_FULL


# --- encode -------------------------------------------------------------------------------------

@FAST
@given(packet_lists)
def test_encode_of_decode_gives_the_same_bytes(pkts: list[bytes]) -> None:
    frame = frame_of([canonical(p) for p in pkts])
    assert encode(decode(frame)) == frame


@st.composite
def built_ticks(draw: st.DrawFn) -> Ticks:
    """Ticks made with `build` from representable values (integers on the wire grid)."""
    n = draw(st.integers(1, 20))
    u4 = st.integers(0, 2**32 - 1)

    def col(shape: tuple[int, ...] = ()) -> np.ndarray:
        size = int(np.prod((n, *shape)))
        return np.array(draw(st.lists(u4, min_size=size, max_size=size)), dtype=np.int64).reshape(n, *shape)

    seg = np.array(draw(st.lists(st.sampled_from(SEGMENTS), min_size=n, max_size=n)))
    token = (col() & ~0xFF) | seg
    div = price_divisor(token)
    mode = draw(st.lists(st.sampled_from(["ltp", "quote", "full"]), min_size=n, max_size=n))
    orders = np.array(draw(st.lists(st.integers(0, 2**16 - 1), min_size=n * 5, max_size=n * 5))).reshape(n, 5)
    return Ticks.build(
        token=token, mode=mode, last_price=col() / div, average_traded_price=col() / div,
        open=col() / div, high=col() / div, low=col() / div, close=col() / div,
        last_traded_quantity=col(), volume_traded=col(), total_buy_quantity=col(),
        total_sell_quantity=col(), last_trade_time=col(), exchange_timestamp=col(), oi=col(),
        oi_day_high=col(), oi_day_low=col(), depth_buy_quantity=col((5,)),
        depth_buy_price=col((5,)) / div[:, None], depth_buy_orders=orders,
        depth_sell_quantity=col((5,)), depth_sell_price=col((5,)) / div[:, None],
        depth_sell_orders=orders[:, ::-1],
    )


@FAST
@given(built_ticks())
def test_decode_inverts_encode(ticks: Ticks) -> None:
    frame = encode(ticks)
    assert decode(frame) == ticks
    assert to_kite_ticks(frame) == KITE._parse_binary(frame)


def test_build_fills_defaults_and_follows_kite_rules() -> None:
    nifty, option = 256265, 12_345_602  # segment 9 (index) and 2 (NFO)
    ticks = Ticks.build(token=[nifty, option, option], mode=["full", "quote", "ltp"],
                        last_price=[22010.5, 101.25, 99.5], close=[22000.0, 100.0, 98.0], oi=7)
    assert ticks.packet_length.tolist() == [32, 44, 8]
    assert ticks.tradable.tolist() == [False, True, True]
    assert ticks.close.tolist() == [22000.0, 100.0, 0.0]  # an LTP packet carries no close
    assert ticks.oi.tolist() == [0, 0, 0]  # only 184-byte packets carry open interest
    assert ticks.change.tolist() == pytest.approx([(22010.5 - 22000) * 100 / 22000, 1.25, 0.0])
    assert decode(encode(ticks)) == ticks


def test_build_takes_mode_codes_and_explicit_lengths() -> None:
    ticks = Ticks.build(token=[1, 2], mode=MODE_QUOTE, last_price=1.5, packet_length=[28, 44])
    assert ticks.mode.tolist() == [MODE_QUOTE, MODE_QUOTE]
    assert decode(encode(ticks)).packet_length.tolist() == [28, 44]


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"mode": "fast"}, ValueError, "mode must be one of"),
    ({"mode": 3}, ValueError, "mode must be one of"),
    ({"mode": "ltp", "packet_length": 44}, ValueError, "does not match mode"),
    ({"mode": "ltp", "packet_length": 12}, ValueError, "packet_length must be one of"),
    ({"mode": "ltp", "volume": 5}, TypeError, "unknown Ticks column"),
])
def test_build_rejects_bad_arguments(kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        Ticks.build(token=[1], last_price=1.0, **kwargs)


@pytest.mark.parametrize(("ticks", "message"), [
    (Ticks.build(token=1, mode="ltp", last_price=-0.01), "last_price does not fit"),
    (Ticks.build(token=1, mode="ltp", last_price=float("nan")), "last_price does not fit"),
    (Ticks.build(token=1, mode="ltp", last_price=2**32 / 100), "last_price does not fit"),
    (Ticks.build(token=3, mode="ltp", last_price=500.0), "last_price does not fit"),  # CDS: 1e7
    (Ticks.build(token=2**32, mode="ltp", last_price=1.0), "token does not fit"),
    (Ticks.build(token=1, mode="full", last_price=1.0, depth_sell_orders=2**16), "depth orders does not fit"),
    (Ticks.build(token=1, mode="full", last_price=1.0, oi=-1), "oi does not fit"),
    (Ticks.build(token=np.arange(2**16), mode="ltp", last_price=1.0), "at most 65535 packets"),
])
def test_encode_refuses_values_the_wire_cannot_carry(ticks: Ticks, message: str) -> None:
    with pytest.raises(WireError, match=message):
        encode(ticks)


def test_encode_refuses_unknown_packet_lengths() -> None:
    ticks = Ticks.build(token=1, mode="ltp", last_price=1.0)
    ticks.packet_length[0] = 12
    with pytest.raises(WireError, match="cannot encode packet length"):
        encode(ticks)


# --- malformed frames ---------------------------------------------------------------------------

LTP_PACKET = struct.pack(">II", 408065, 150025)
FULL_PACKET = canonical(bytes(range(184)))


@pytest.mark.parametrize(("frame", "message"), [
    (frame_of([LTP_PACKET, LTP_PACKET])[:-1], "packet 1 at byte 12 is truncated: declares 8 bytes, 7 remain"),
    (frame_of([FULL_PACKET, LTP_PACKET])[:-3], "packet 1 .* is truncated"),
    (frame_of([FULL_PACKET])[:100], "packet 0 at byte 2 is truncated: declares 184 bytes, 96 remain"),
    (frame_of([LTP_PACKET, LTP_PACKET], count=3), "declares 3 packets but ends after 2"),
    (frame_of([LTP_PACKET, FULL_PACKET], count=5), "declares 5 packets but ends after 2"),
    (frame_of([LTP_PACKET])[:3], "declares 1 packets but ends after 0"),
    (frame_of([LTP_PACKET, LTP_PACKET + b"\x00\x00"]), "packet 1 at byte 12 has unknown length 10"),
    (frame_of([b"\x00" * 30]), "unknown length 30"),
    (frame_of([LTP_PACKET, LTP_PACKET]) + b"\x00\x08", "2 trailing bytes after 2 packets"),
    (frame_of([FULL_PACKET, LTP_PACKET]) + b"\x01", "1 trailing bytes after 2 packets"),
    (b"\x00\x00\x00", "declares 0 packets but has 1 trailing bytes"),
])
def test_malformed_frames_raise_wire_error(frame: bytes, message: str) -> None:
    with pytest.raises(WireError, match=message):
        decode(frame)
    with pytest.raises(WireError):
        to_kite_ticks(frame)


@FAST
@given(st.one_of(
    st.binary(max_size=400),
    packet_lists.map(frame_of).flatmap(lambda f: st.tuples(st.just(f), st.integers(0, len(f) + 3),
                                                            st.binary(max_size=3))
                                       .map(lambda t: t[0][:t[1]] + t[2])),
))
def test_any_bytes_either_decode_like_kiteconnect_or_raise_wire_error(frame: bytes) -> None:
    try:
        ours = to_kite_ticks(frame)
    except WireError:
        return
    assert ours == KITE._parse_binary(frame)


@pytest.mark.parametrize(("frame", "kept", "lost"), [
    (frame_of([LTP_PACKET, LTP_PACKET])[:-1], 1, 1),  # the truncated packet
    (frame_of([FULL_PACKET, LTP_PACKET], count=5), 2, 3),  # three declared packets are missing
    (frame_of([LTP_PACKET, b"\x00" * 30, FULL_PACKET]), 2, 1),  # sound framing: step over the unknown length
    (frame_of([LTP_PACKET, b"\x00" * 30, FULL_PACKET])[:-1], 1, 2),  # broken framing: trust nothing after it
    (frame_of([LTP_PACKET, LTP_PACKET]) + b"\x00\x08", 2, 1),  # trailing bytes count as one lost packet
    (b"\x00\x00\x00", 0, 1),
])
def test_salvage_keeps_the_intact_packets_of_a_malformed_frame(frame: bytes, kept: int, lost: int) -> None:
    saved = salvage(frame)
    assert (len(saved.ticks), saved.lost) == (kept, lost) and saved.problem


@FAST
@given(packet_lists)
def test_salvage_of_a_sound_frame_is_its_decode(pkts: list[bytes]) -> None:
    saved = salvage(frame_of(pkts))
    assert saved.ticks == decode(frame_of(pkts)) and saved.lost == 0


def test_packet_fits_follows_the_token_kind_and_mode() -> None:
    index, option = (256265, 12_800_002)
    tokens = np.array([index, index, index, option, option, option, option, index])
    lengths = np.array([8, 28, 44, 8, 184, 28, 44, 32], dtype=np.uint16)
    modes = np.array([MODE_LTP, MODE_QUOTE, MODE_QUOTE, MODE_LTP, MODE_FULL, MODE_QUOTE, MODE_FULL, MODE_FULL])
    assert packet_fits(tokens, lengths, modes).tolist() == [True, True, False, True, True, False, False, True]


def test_decode_accepts_bytearray_and_memoryview() -> None:
    frame = frame_of([FULL_PACKET, LTP_PACKET])
    assert decode(bytearray(frame)) == decode(memoryview(frame)) == decode(frame)


@pytest.mark.parametrize("pkts", [[FULL_PACKET, FULL_PACKET], [FULL_PACKET, LTP_PACKET]])
def test_decoded_ticks_do_not_alias_the_frame(pkts: list[bytes]) -> None:
    buffer = bytearray(frame_of(pkts))
    ticks = decode(buffer)
    expected = decode(bytes(buffer))
    buffer[4:] = bytes(len(buffer) - 4)  # a reused receive buffer gets overwritten
    assert ticks == expected and ticks.token[0] != 0
