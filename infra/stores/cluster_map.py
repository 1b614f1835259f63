"""Which master of a Redis Cluster serves which hash slot, read with CLUSTER SLOTS.

redis-py's asyncio cluster client routes commands but has no pub/sub, so code that talks to the
nodes itself (the sharded subscriber) needs the slot map on its own: `ClusterMap(seed_url)`,
`await refresh()`, then `master_for(key)` / `master_for_slot(slot)` give a master's (host, port),
and `node_connection(address)` a connection to any node with the seed URL's credentials and TLS.

`refresh` asks the node that answered last time first, then every other node it has heard of (the
seed and all nodes of the last reply), each bounded by `timeout`. During a failover nodes may
disagree, and one still noticing the failure may not list every slot: the first complete map wins,
else the most complete one. A shard channel's slot is a key's (`key_slot`, hash tags included).
"""

from __future__ import annotations

import bisect
from typing import Any

from redis.asyncio.connection import AbstractConnection, Connection, parse_url
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import RedisError

__all__ = ["Address", "ClusterMap", "ClusterUnavailable", "key_slot"]

Address = tuple[str, int]
Range = tuple[int, int, Address]  # first slot, last slot, master


class ClusterUnavailable(ConnectionError):
    """No node answered CLUSTER SLOTS with any slot."""


class ClusterMap:
    def __init__(self, seed_url: str, *, timeout: float = 3.0) -> None:
        kwargs: dict[str, Any] = parse_url(seed_url)
        self._connection_class = kwargs.pop("connection_class", None)
        seed: Address = (str(kwargs.pop("host", "localhost")), int(kwargs.pop("port", 6379)))
        kwargs.pop("db", None)  # a cluster has db 0 only
        self._kwargs = {**kwargs, "socket_connect_timeout": timeout, "socket_timeout": timeout,
                        "health_check_interval": 0}
        self._known: list[Address] = [seed]
        self._ranges: list[Range] = []
        self._starts: list[int] = []

    @property
    def known(self) -> list[Address]:
        """Nodes to ask, the one that answered last first."""
        return list(self._known)

    @property
    def masters(self) -> set[Address]:
        return {master for _, _, master in self._ranges}

    def master_for_slot(self, slot: int) -> Address | None:
        i = bisect.bisect_right(self._starts, slot) - 1
        if i < 0 or self._ranges[i][1] < slot:
            return None
        return self._ranges[i][2]

    def master_for(self, key: bytes | str) -> Address | None:
        return self.master_for_slot(key_slot(key.encode() if isinstance(key, str) else key))

    def node_connection(self, address: Address, **overrides: Any) -> AbstractConnection:
        """An unconnected connection to one node, with the seed URL's user, password and TLS."""
        cls = self._connection_class or Connection
        return cls(**{**self._kwargs, "host": address[0], "port": address[1], **overrides})

    async def refresh(self) -> None:
        """Read the slot map again; raises ClusterUnavailable when no known node gives one."""
        best: tuple[int, list[Range], list[Address], Address] | None = None
        errors: list[str] = []
        for address in list(self._known):
            try:
                reply = await self._cluster_slots(address)
            except (OSError, RedisError) as exc:  # unreachable, or an error reply (not a cluster, loading)
                errors.append(f"{address[0]}:{address[1]} {type(exc).__name__}")
                continue
            ranges, nodes = _parse(reply, address)
            covered = sum(last - first + 1 for first, last, _ in ranges)
            if best is None or covered > best[0]:
                best = (covered, ranges, nodes, address)
            if covered == REDIS_CLUSTER_HASH_SLOTS:
                break
        if best is None or best[0] == 0:
            raise ClusterUnavailable(f"no Redis Cluster node gave a slot map ({', '.join(errors) or 'none known'})")
        _, ranges, nodes, answered = best
        self._ranges = sorted(ranges)
        self._starts = [first for first, _, _ in self._ranges]
        others = [a for a in dict.fromkeys([*self._known, *nodes]) if a != answered]
        self._known = [answered, *others]

    async def _cluster_slots(self, address: Address) -> list[Any]:
        conn = self.node_connection(address)
        try:
            await conn.connect()
            await conn.send_command("CLUSTER", "SLOTS", check_health=False)
            return list(await conn.read_response())
        finally:
            await conn.disconnect(nowait=True)


def _parse(reply: list[Any], asked: Address) -> tuple[list[Range], list[Address]]:
    """(slot ranges with their master, every node named) from a CLUSTER SLOTS reply. An empty
    host means the node asked; '?' an unknown endpoint (that range is left out)."""
    ranges: list[Range] = []
    nodes: list[Address] = []
    for first, last, *serving in reply:
        addresses = [_address(node, asked) for node in serving]
        nodes.extend(a for a in addresses if a is not None)
        if addresses and addresses[0] is not None:
            ranges.append((int(first), int(last), addresses[0]))
    return ranges, nodes


def _address(node: list[Any], asked: Address) -> Address | None:
    host = node[0].decode() if isinstance(node[0], bytes) else str(node[0])
    if host == "?":
        return None
    return (host or asked[0], int(node[1]))
