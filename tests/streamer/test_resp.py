"""The publisher's RESP pipeline against real Redis: what it packs is what Redis stores."""

from __future__ import annotations

import pytest
from redis.exceptions import ResponseError

from ticker.infra.stores import redis_fast as resp


def test_packing_is_resp():
    publish = b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$5\r\n[1,2]\r\n"
    assert b"".join(resp.command(b"PUBLISH", b"ch", b"[1,2]")) == publish
    assert b"".join(resp.publish_array(b"ch", [b"1", b"2"])) == publish
    assert b"".join(resp.publish_array(b"ch", [b'{"a":1}'])) == b'*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$9\r\n[{"a":1}]\r\n'
    assert b"".join(resp.publish_array(b"ch", [])) == b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$2\r\n[]\r\n"
    assert b"".join(resp.hset(b"k", {b"1": b"{}", b"22": b""})) == (
        b"*6\r\n$4\r\nHSET\r\n$1\r\nk\r\n$1\r\n1\r\n$2\r\n{}\r\n$2\r\n22\r\n$0\r\n\r\n")
    big = b"x" * 10_000  # longer than the header table
    assert b"".join(resp.hset(b"k", {b"7": big})) == b"*4\r\n$4\r\nHSET\r\n$1\r\nk\r\n$1\r\n7\r\n$10000\r\n" + big + b"\r\n"


async def test_execute_runs_commands_in_order_and_recovers_from_an_error_reply(redis, names):
    key = names.key("resp-test").encode()
    values = {str(i).encode(): b'{"v":%d,"x":"\xe2\x82\xb9"}' % i for i in range(2000)}
    replies = await resp.execute(redis, [resp.hset(key, values), resp.command(b"HLEN", key)])
    assert replies == [2000, 2000]
    assert await redis.hget(key, b"1999") == values[b"1999"]
    with pytest.raises(ResponseError):
        await resp.execute(redis, [resp.command(b"INCR", key), resp.command(b"PING")])
    assert await resp.execute(redis, [resp.command(b"PING")]) == [b"PONG"]  # the pool is healthy
    await redis.delete(key)


async def test_lane_reads_replies_of_flushes_written_ahead_in_order(redis, names):
    key = names.key("lane-test").encode()
    lane = resp.Lane(redis)
    first = await lane.write([resp.command(b"INCR", key), resp.command(b"INCR", key)])
    second = await lane.write([resp.command(b"INCRBY", key, b"10")])  # before reading the first's replies
    assert first == second == lane.epoch
    assert await lane.read(2) == [1, 2]
    assert await lane.read(1) == [12]
    await lane.close()
    await redis.delete(key)


async def test_lane_error_resets_the_socket_and_marks_flushes_written_before(redis, names):
    key = names.key("lane-err").encode()
    await redis.set(key, b"not a number")
    lane = resp.Lane(redis)
    failing = await lane.write([resp.command(b"INCR", key)])
    behind = await lane.write([resp.command(b"PING")])
    with pytest.raises(ResponseError):
        await lane.read(1)
    assert lane.epoch != failing and lane.epoch != behind  # the second flush's reply is gone with the socket
    assert await lane.write([resp.command(b"PING")]) == lane.epoch
    assert await lane.read(1) == [b"PONG"]
    await lane.close()
    await redis.delete(key)
