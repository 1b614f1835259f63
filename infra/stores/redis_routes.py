"""Where the publisher's flushes go: one Redis, or every master of a Redis Cluster.

A flush is a list of commands packed by `redis_fast`, each with the key that places it (its slot
on a cluster). `SingleRoute` writes them all on one `Lane`; `ClusterRoute` groups them by the
master that owns each key's slot and writes each group on that master's lane, so a flush costs one
write per master. Replies are read back per lane in the order flushes were written.

A `Ticket` says where a flush went (lane, the lane's epoch at write, replies due). It is current
while none of its lanes has been reset since; a failure anywhere resets every lane of the flush
whose replies were not all read, so no reply can leak into a later flush. On a cluster any failure
also marks the slot map stale: the next write reads the topology again first (a master was killed
and a replica promoted, or a slot moved and answered MOVED).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.crc import key_slot

from ticker.infra.stores.cluster_map import ClusterMap
from ticker.infra.stores.redis import connect
from ticker.infra.stores.redis_fast import Lane, Packed

log = logging.getLogger(__name__)

Routed = tuple[bytes, Packed]  # the key that places a command (its slot), and the command


@dataclass(slots=True)
class Ticket:
    parts: list[tuple[Lane, int, int]] = field(default_factory=list)  # lane, its epoch at write, replies

    @property
    def replies(self) -> int:
        return sum(n for _, _, n in self.parts)


class _Route:
    """What both routes share: reading, checking and resetting a flush's lanes."""

    def lanes(self) -> list[Lane]:
        raise NotImplementedError

    @property
    def taken_at(self) -> float:
        """The outage clock (time.monotonic()) when the newest connection in use was taken."""
        return max((lane.taken_at for lane in self.lanes()), default=0.0)

    def current(self, ticket: Ticket) -> bool:
        """Whether every lane the flush went on still holds the connection it was written on."""
        return all(lane.epoch == epoch for lane, epoch, _ in ticket.parts)

    async def read(self, ticket: Ticket) -> None:
        """Read the flush's replies (an error reply raises); a failure resets its unread lanes."""
        done = 0
        try:
            for lane, _, count in ticket.parts:
                await lane.read(count)
                done += 1
        except BaseException:
            await self.reset(Ticket(ticket.parts[done:]))
            self.failed()
            raise

    async def reset(self, ticket: Ticket) -> None:
        for lane, epoch, _ in ticket.parts:
            if lane.epoch == epoch:
                await lane.reset()

    def failed(self) -> None:
        """Told of any failure (a cluster reads its topology again before the next write)."""

    async def close(self) -> None:
        for lane in self.lanes():
            await lane.close()


class SingleRoute(_Route):
    def __init__(self, redis: Redis, preamble: Sequence[Packed] = ()) -> None:
        self.lane = Lane(redis, preamble)

    def lanes(self) -> list[Lane]:
        return [self.lane]

    async def write(self, commands: list[Routed]) -> Ticket:
        if not commands:
            return Ticket()
        epoch = await self.lane.write([packed for _, packed in commands])
        return Ticket([(self.lane, epoch, len(commands))])


class ClusterRoute(_Route):
    """Lanes to the masters of the cluster `seed_url` names one node of (TLS, user and password
    are the seed's for every node)."""

    def __init__(self, seed_url: str, preamble: Sequence[Packed] = (), *, name: str | None = None) -> None:
        self.seed_url = seed_url
        self.preamble = list(preamble)
        self.name = name
        self.map = ClusterMap(seed_url)
        self.stale = True
        self._lanes: dict[tuple[str, int], tuple[Redis, Lane]] = {}  # one per master: bounded by the cluster
        self._slots: dict[bytes, int] = {}  # key -> slot, for the keys a publisher writes (bounded by shards)

    def lanes(self) -> list[Lane]:
        return [lane for _, lane in self._lanes.values()]

    def failed(self) -> None:
        self.stale = True

    async def write(self, commands: list[Routed]) -> Ticket:
        if self.stale:
            await self._refresh()
        groups: dict[tuple[str, int], list[Packed]] = {}
        for key, packed in commands:
            groups.setdefault(self._master(key), []).append(packed)
        ticket = Ticket()
        try:
            for node, group in groups.items():
                lane = self._lane(node)
                ticket.parts.append((lane, await lane.write(group), len(group)))
        except BaseException:
            await self.reset(ticket)
            self.failed()
            raise
        return ticket

    def _master(self, key: bytes) -> tuple[str, int]:
        master = self.map.master_for_slot(self._slot(key))
        if master is None:
            self.stale = True
            raise ConnectionError("a slot of the tick bus has no master (a failover under way)")
        return master

    def _slot(self, key: bytes) -> int:
        slot = self._slots.get(key)
        if slot is None:
            if len(self._slots) > 65_536:
                self._slots.clear()
            slot = self._slots[key] = key_slot(key)
        return slot

    async def _refresh(self) -> None:
        await self.map.refresh()
        self.stale = False
        masters = self.map.masters
        for node in [n for n in self._lanes if n not in masters]:  # a master lost (failed over)
            client, lane = self._lanes.pop(node)
            await lane.reset()
            await client.aclose()

    def _lane(self, node: tuple[str, int]) -> Lane:
        held = self._lanes.get(node)
        if held is None:
            client = connect(node_url(self.seed_url, node), max_connections=2, name=self.name)
            held = self._lanes[node] = (client, Lane(client, self.preamble))
            log.info("publishing to cluster master %s:%d", *node)
        return held[1]

    async def close(self) -> None:
        await super().close()
        for client, _ in self._lanes.values():
            await client.aclose()
        self._lanes.clear()


def node_url(seed_url: str, node: tuple[str, int]) -> str:
    """The URL of another node of the seed's cluster: same scheme, user, password and options."""
    parts = urlsplit(seed_url)
    credentials, _, _ = parts.netloc.rpartition("@")
    host = f"[{node[0]}]" if ":" in node[0] else node[0]
    netloc = f"{credentials}@{host}:{node[1]}" if credentials else f"{host}:{node[1]}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
