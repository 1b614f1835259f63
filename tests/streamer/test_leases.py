"""Account leases across replicas on real Redis: membership is one sorted set read by name (no
keyspace scan), shares follow the members alive, and a replica that stops renewing drops out."""

from __future__ import annotations

from tests.waiting import wait_for
from ticker.streamer.control.leases import Leases

ACCOUNTS = [f"acc{i}" for i in range(6)]
LEASE_MS = 1000


async def test_replicas_split_accounts_and_a_silent_one_drops_out(redis, names) -> None:
    one = Leases(redis, names, "one", LEASE_MS)
    two = Leases(redis, names, "two", LEASE_MS)
    await one.refresh(ACCOUNTS)
    assert one.members == 1 and one.held == set(ACCOUNTS)
    await two.refresh(ACCOUNTS)
    assert two.members == 2
    await one.refresh(ACCOUNTS)  # hands its surplus back
    await two.refresh(ACCOUNTS)
    assert len(one.held) == len(two.held) == 3 and one.held.isdisjoint(two.held)
    members = names.key("streamer", "members")
    assert set(await redis.zrange(members, 0, -1)) == {b"one", b"two"}

    async def two_alone() -> bool:  # `one` stops renewing: its membership and leases run out
        await two.refresh(ACCOUNTS)
        return two.members == 1 and two.held == set(ACCOUNTS)

    await wait_for(two_alone)
    assert await redis.zrange(members, 0, -1) == [b"two"]
    await two.release_all()
    assert await redis.zcard(members) == 0 and two.held == set()
    assert not [k async for k in redis.scan_iter(match=names.lease("*"))]


async def test_membership_expires_with_the_last_replica(redis, names) -> None:
    leases = Leases(redis, names, "only", LEASE_MS)
    await leases.refresh(["a"])
    ttl = await redis.pttl(names.key("streamer", "members"))
    assert 0 < ttl <= LEASE_MS
