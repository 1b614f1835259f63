"""Tick JSON rendering: layouts, nulls for absent fields, exact values, static heads."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import orjson
import pytest

from ticker.core.wire import Ticks
from ticker.streamer.stages import json_columns
from ticker.streamer.stages.instrument_table import KIND_FUT, KIND_SPOT, InstrumentTable
from ticker.streamer.stages.json_columns import (
    NULL,
    Renderer,
    array_text,
    assemble_py,
    column_tokens,
    int_column,
    iso_tokens,
    json_tokens,
    price_column,
    price_columns,
    static_head,
)

from .helpers import EXPIRY, NIFTY_INDEX, STRIKES, chain, full_ticks, future, index, option

IST = ZoneInfo("Asia/Kolkata")
FIELDS = ("last_price", "volume", "depth", "exchange_timestamp", "iv")
CARRIED = {8: frozenset({"last_price", "iv"}), 44: frozenset({"last_price", "volume", "iv"}),
           184: frozenset(FIELDS)}


def test_json_tokens_turn_nan_into_null_and_keep_ints_ints():
    assert json_tokens(np.array([1.5, np.nan, 100.0])) == [b"1.5", b"null", b"100.0"]
    assert json_tokens(np.array([7, 0], dtype=np.int64)) == [b"7", b"0"]
    assert json_tokens(np.array([])) == []


def test_json_tokens_render_small_large_and_negative_integers_alike():
    values = np.array([3, 70_000, 0, 2**40, 65_535, 65_536], dtype=np.int64)
    assert json_tokens(values) == [b"3", b"70000", b"0", b"1099511627776", b"65535", b"65536"]
    assert json_tokens(np.array([5, -2], dtype=np.int64)) == [b"5", b"-2"]
    depth = np.array([[1, 2], [80_000, 4]], dtype=np.uint32)
    assert json_tokens(depth[:, 0]) == [b"1", b"80000"]  # a strided column view


def test_array_text_reads_like_orjson_for_any_float():
    prices = np.array([0.05, 123.45, 0.0, 1310.71, 98_765.4, -0.0, -2.5, np.nan, np.inf, 83.1234567, 1e-7])
    assert array_text(prices) == orjson.dumps(prices, option=orjson.OPT_SERIALIZE_NUMPY)
    assert array_text(prices[::2]) == orjson.dumps(prices[::2].copy(), option=orjson.OPT_SERIALIZE_NUMPY)
    assert orjson.loads(array_text(prices))[7:9] == [None, None]


ASSEMBLERS = [pytest.param(assemble_py, id="python")]
if json_columns.assemble is not assemble_py:
    ASSEMBLERS.append(pytest.param(json_columns.assemble, id="c"))


def test_the_c_assembler_is_built_here():
    """`make setup` compiles it; the Python fallback exists for machines without a compiler."""
    assert json_columns.assemble is not assemble_py


@pytest.mark.parametrize("assemble", ASSEMBLERS)
def test_assemble_stitches_row_i_of_every_column_between_the_pieces(assemble):
    pieces = (b'{"a":', b',"b":', b',"c":', b"}")
    columns = [[b"1", b'"x,y"'], b"[2.5,null]", array_text(np.array([7, -8]))]
    assert assemble(pieces, columns, 2) == [b'{"a":1,"b":2.5,"c":7}', b'{"a":"x,y","b":null,"c":-8}']
    assert assemble((b"[", b"]"), [b"[]"], 0) == []
    assert assemble((b"{}",), [], 2) == [b"{}", b"{}"]
    assert assemble((b"%d", b"%s"), [[b"%"]], 1) == [b"%d%%s"]  # pieces are text, not formats


@pytest.mark.parametrize("assemble", ASSEMBLERS)
@pytest.mark.parametrize("columns", [
    [[b"1"], b"[1,2]"],  # a list column one row short
    [[b"1", b"2"], b"[1]"],  # an array column one value short
    [[b"1", b"2"], b"[1,2,3]"],  # one value too many
])
def test_assemble_refuses_columns_of_the_wrong_length(assemble, columns):
    with pytest.raises(ValueError):
        assemble((b"", b"", b""), columns, 2)


@pytest.mark.parametrize("assemble", ASSEMBLERS)
def test_fixed_point_columns_read_exactly_like_orjson(assemble):
    rng = np.random.default_rng(7)
    paise = np.concatenate([rng.integers(-10**7, 10**9, 5000), [0, 5, 10, 100, -5, -100, 10**14 - 1, 99, 1]])
    prices = paise / 100
    prices[17] = np.nan
    column = price_column(prices)
    assert isinstance(column, tuple) and column[1] == 2
    rendered = assemble((b"<", b">"), [column], len(prices))
    assert [t[1:-1] for t in rendered] == json_tokens(prices)
    ints = np.concatenate([rng.integers(-2**31, 2**31, 2000), [0, 9, 10, 2**63 - 1, -2**63 + 1]]).astype(np.int64)
    got = assemble((b"", b""), [int_column(ints)], len(ints))
    assert got == [b"%d" % v for v in ints.tolist()]
    assert assemble((b"", b""), [(np.array([NULL, 5], dtype=np.int64), 0)], 2) == [b"null", b"5"]


def test_a_block_of_prices_is_converted_row_by_row_only_when_it_must_be():
    block = np.array([[101.25, np.nan, 0.05], [7.0, 1.005, 2.0]]).T.copy().T  # non-contiguous rows
    whole, odd = price_columns(block[:1]), price_columns(block)
    assert isinstance(whole[0], tuple) and whole[0][0].flags.c_contiguous
    assert isinstance(odd[0], tuple) and odd[1] == array_text(block[1])
    assert [column_tokens(c, 3) for c in odd] == [[b"101.25", b"null", b"0.05"], [b"7.0", b"1.005", b"2.0"]]


def test_prices_that_are_not_whole_paise_are_left_to_orjson():
    for odd in ([1.005, 2.0], [np.inf, 1.0], [-0.0, 1.0], [1e14, 1.0]):
        values = np.array(odd)
        assert price_column(values) == orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)
    assert int_column(np.array([2**64 - 1], dtype=np.uint64)) == b"[18446744073709551615]"


def test_the_c_assembler_refuses_what_is_not_a_flat_array():
    if json_columns.assemble is assemble_py:
        pytest.skip("built without the C assembler")
    int64 = np.array([1, 2], dtype=np.int64)
    for columns, error in (([[b"1", b"2"], b"[[1],[2]]"], ValueError), ([[b"1", 2], b"[1,2]"], TypeError),
                           ([[b"1", b"2"], "[1,2]"], TypeError), ([[b"1", b"2"], b"1,2"], ValueError),
                           ([[b"1", b"2"], (int64, 3)], ValueError), ([[b"1", b"2"], (int64[:1], 0)], ValueError),
                           ([[b"1", b"2"], (int64.astype(np.int32), 0)], ValueError),
                           ([[b"1", b"2"], (np.arange(4, dtype=np.int64)[::2], 0)], ValueError)):
        with pytest.raises(error):
            json_columns.assemble((b"", b"", b""), columns, 2)
    with pytest.raises(ValueError):
        json_columns.assemble((b"",), [], -1)


def test_iso_tokens_are_local_time_and_zero_is_null():
    ts = int(datetime(2025, 11, 20, 4, 45, 3, tzinfo=UTC).timestamp())
    assert iso_tokens(np.array([ts, 0, ts]), IST) == [b'"2025-11-20T10:15:03+05:30"', b"null",
                                                     b'"2025-11-20T10:15:03+05:30"']
    assert iso_tokens(np.array([ts + 2, ts]), IST) == [b'"2025-11-20T10:15:05+05:30"', b'"2025-11-20T10:15:03+05:30"']


def test_rendered_ticks_parse_and_carry_only_what_their_layout_has():
    tokens = [1025, 2049, 3073]
    full = full_ticks(tokens[:1], [101.25])
    quote = Ticks.build(token=tokens[1], mode="quote", last_price=55.5, volume_traded=42)
    ltp = Ticks.build(token=tokens[2], mode="ltp", last_price=9.95)
    ticks = Ticks.concat([quote, full, ltp])
    heads = [static_head({"instrument_token": t}) for t in ticks.token.tolist()]
    columns = {**ticks.columns(), "volume": ticks.volume_traded, "iv": np.array([0.2, np.nan, 0.3])}
    renderer = Renderer(FIELDS, CARRIED, b'"model":"bsm",', IST)
    docs = [orjson.loads(b) for b in renderer.render(heads, ticks.packet_length, columns, 1_763_600_000.5)]
    assert [d["instrument_token"] for d in docs] == [2049, 1025, 3073]  # row order kept
    q, f, lt = docs
    assert q == {"instrument_token": 2049, "last_price": 55.5, "volume": 42, "depth": None,
                 "exchange_timestamp": None, "iv": 0.2, "model": "bsm", "ts": 1763600000.5}
    assert f["iv"] is None and f["volume"] == 1000
    assert f["depth"]["buy"][0] == {"price": 101.2, "quantity": 75, "orders": 3}
    assert f["depth"]["sell"][4] == {"price": 101.5, "quantity": 150, "orders": 4}
    assert len(f["depth"]["buy"]) == len(f["depth"]["sell"]) == 5
    assert f["exchange_timestamp"].endswith("+05:30")
    assert lt["last_price"] == 9.95 and lt["volume"] is None and lt["iv"] == 0.3
    assert orjson.loads(b"[" + b",".join(orjson.dumps(d) for d in docs) + b"]") == docs


@pytest.mark.parametrize("assemble", ASSEMBLERS)
def test_renderer_output_is_the_same_whichever_assembler_runs(assemble, monkeypatch):
    tokens = [(4000 + i) << 8 | 2 for i in range(40)]  # NFO tokens (the low byte is the segment)
    ticks = Ticks.concat([full_ticks(tokens[:30], [100.05 + i for i in range(30)]),
                          Ticks.build(token=tokens[30], mode="quote", last_price=55.5, volume_traded=42),
                          full_ticks(tokens[31:], [0.05 * i for i in range(9)])])
    heads = [static_head({"instrument_token": t, "tradingsymbol": f"X,{t}"}) for t in ticks.token.tolist()]
    iv = np.linspace(0.1, 0.5, len(tokens))
    iv[3] = np.nan
    columns = {**ticks.columns(), "volume": ticks.volume_traded, "iv": iv}
    renderer = Renderer(FIELDS, CARRIED, b'"model":"bsm",', IST)
    monkeypatch.setattr(json_columns, "assemble", assemble)
    rendered = renderer.render(heads, ticks.packet_length, columns, 1_763_600_000.25)
    expected = []
    for i, doc in enumerate(orjson.loads(b"[" + b",".join(rendered) + b"]")):
        assert doc["instrument_token"] == tokens[i] and doc["tradingsymbol"] == f"X,{tokens[i]}"
        assert doc["iv"] == (None if i == 3 else iv[i])
        expected.append(orjson.dumps(doc))
    assert [orjson.dumps(orjson.loads(r)) for r in rendered] == expected
    monkeypatch.setattr(json_columns, "assemble", assemble_py)
    assert renderer.render(heads, ticks.packet_length, columns, 1_763_600_000.25) == rendered


def test_registry_links_options_to_spot_future_and_chain():
    reg = InstrumentTable([index(), future(), *chain()])
    assert len(reg) == 12 and (np.diff(reg.tokens) > 0).all()
    rows = reg.rows_of(np.array([NIFTY_INDEX, 12345, future().instrument_token]))
    assert rows[1] == -1 and reg.kind[rows[0]] == KIND_SPOT and reg.kind[rows[2]] == KIND_FUT
    opts = np.flatnonzero(reg.is_option)
    assert (reg.spot_row[opts] == rows[0]).all() and (reg.fut_row[opts] == rows[2]).all()
    assert reg.chain_start.tolist() == [0, 5] and reg.chain_strike.tolist() == list(STRIKES)
    assert reg.is_call[reg.chain_ce].all() and not reg.is_call[reg.chain_pe].any()
    assert (reg.strike[reg.chain_ce] == reg.chain_strike).all() and (reg.strike[reg.chain_pe] == reg.chain_strike).all()
    head = orjson.loads(reg.option_head[opts[0]] + b'"x":1}')
    assert head["name"] == "NIFTY" and head["expiry"] == EXPIRY.isoformat()
    assert head["instrument_type"] in ("CE", "PE") and head["strike"] == 24800.0
    idx_head = orjson.loads(reg.tick_head[rows[0]] + b'"x":1}')
    assert idx_head["type"] == "tick" and idx_head["instrument_type"] == "INDEX" and idx_head["name"] == "NIFTY"


def test_registry_reuses_heads_of_unchanged_instruments():
    first = InstrumentTable([index(), *chain()])
    second = InstrumentTable([index(), future(), *chain()], previous=first)
    row = int(second.rows_of(np.array([NIFTY_INDEX]))[0])
    assert second.tick_head[row] is first.tick_head[int(first.rows_of(np.array([NIFTY_INDEX]))[0])]


def test_chains_are_laid_out_per_underlying_and_expiry_with_missing_legs_marked():
    later = EXPIRY.replace(day=1) if EXPIRY.day > 1 else EXPIRY.replace(day=2)
    reg = InstrumentTable([*chain(), option(25_000.0, "CE", later), option(24_900.0, "PE", later)])
    assert len(reg.chain_start) == 3
    cid = int(reg.chain_id[reg.rows_of(np.array([option(25_000.0, "CE", later).instrument_token]))[0]])
    second = slice(reg.chain_start[cid], reg.chain_start[cid + 1])
    assert reg.chain_strike[second].tolist() == [24_900.0, 25_000.0]
    assert reg.chain_ce[second][0] == -1 and reg.chain_pe[second][1] == -1
    assert len({int(c) for c in reg.chain_id[reg.is_option]}) == 2


def test_bid_and_ask_are_the_best_depth_levels_and_null_when_that_level_is_empty():
    ticks = full_ticks([1025, 2049], [101.25, 0.05])  # the second tick's book has no buy price
    heads = [static_head({"instrument_token": t}) for t in ticks.token.tolist()]
    fields = ("bid", "ask", "depth")
    renderer = Renderer(fields, {184: frozenset(fields)}, b"", IST)
    bids = []
    for cols in (ticks.columns(), full_ticks([1025], [101.25]).columns()):  # with and without an empty level
        n = len(cols["token"])
        docs = [orjson.loads(b) for b in renderer.render(heads[:n], cols["packet_length"], cols, 1.0)]
        for doc in docs:
            buy, sell = doc["depth"]["buy"][0]["price"], doc["depth"]["sell"][0]["price"]
            assert doc["bid"] == (buy if buy > 0 else None) and doc["ask"] == sell
        bids.append([d["bid"] for d in docs])
    assert bids == [[101.2, None], [101.2]]
