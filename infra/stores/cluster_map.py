"""Which master of a Redis Cluster serves which hash slot, read with CLUSTER SHARDS (Redis >= 7).

redis-py's asyncio cluster client routes commands but has no pub/sub, so code that talks to the
nodes itself (the sharded subscriber) needs the slot map on its own: `ClusterMap(seed_url)`,
`await refresh()`, then `master_for(key)` / `master_for_slot(slot)` give a master's (host, port),
and `node_connection(address)` a connection to any node with the seed URL's credentials and TLS.

`refresh` asks the node that answered last time first, then every other node it has heard of (the
seed and all nodes of the last reply), each bounded by `timeout`. CLUSTER SHARDS, unlike CLUSTER
SLOTS, names every replica, also one that has not reported a replication offset yet, so all of
them are there to ask when masters are gone. During a failover nodes may
disagree, and one still noticing the failure may not list every slot: the first complete map wins,
else the most complete one. A shard channel's slot is a key's (`key_slot`, hash tags included).
"""

from __future__ import annotations

import bisect
from typing import Any

from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection, parse_url
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import RedisError

__all__ = ["Address", "ClusterMap", "ClusterUnavailable", "key_slot"]

Address = tuple[str, int]
Range = tuple[int, int, Address]  # first slot, last slot, master


class ClusterUnavailable(ConnectionError):
    """No node answered CLUSTER SHARDS with any slot."""


class ClusterMap:
    def __init__(self, seed_url: str, *, timeout: float = 3.0) -> None:
        kwargs: dict[str, Any] = parse_url(seed_url)
        self._connection_class = kwargs.pop("connection_class", None)
        seed: Address = (str(kwargs.pop("host", "localhost")), int(kwargs.pop("port", 6379)))
        kwargs.pop("db", None)  # a cluster has db 0 only
        self._kwargs = {**kwargs, "socket_connect_timeout": timeout, "socket_timeout": timeout,
                        "health_check_interval": 0}
        self._seed = seed
        self._known: list[Address] = [seed]
        self._ranges: list[Range] = []
        self._starts: list[int] = []

    @property
    def known(self) -> list[Address]:
        """Nodes to ask: the one that answered last, every node it named, the seed."""
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

    async def refresh(self, ask_first: Address | None = None) -> None:
        """Read the slot map again; raises ClusterUnavailable when no known node gives one.
        `ask_first`: a node known to have the news (one that just gave up a slot, or the target of
        a MOVED), since others may not have heard yet."""
        best: tuple[int, list[Range], list[Address], Address] | None = None
        errors: list[str] = []
        for address in dict.fromkeys([*([ask_first] if ask_first else []), *self._known]):
            try:
                reply = await self._cluster_shards(address)
            except (OSError, RedisError) as exc:  # unreachable, or an error reply (not a cluster, loading)
                errors.append(f"{address[0]}:{address[1]} {type(exc).__name__}")
                continue
            ranges, nodes = _parse(reply, address, self._connection_class is SSLConnection)
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
        self._known = list(dict.fromkeys([answered, *nodes, self._seed]))  # nodes gone from the cluster drop out

    async def _cluster_shards(self, address: Address) -> list[Any]:
        conn = self.node_connection(address)
        try:
            await conn.connect()
            await conn.send_command("CLUSTER", "SHARDS", check_health=False)
            return list(await conn.read_response())
        finally:
            await conn.disconnect(nowait=True)


def _parse(reply: list[Any], asked: Address, tls: bool) -> tuple[list[Range], list[Address]]:
    """(slot ranges with their master, every node named) from a CLUSTER SHARDS reply (RESP2: each
    shard and node a flat list of names and values)."""
    ranges: list[Range] = []
    nodes: list[Address] = []
    for shard in reply:
        fields = _pairs(shard)
        master: Address | None = None
        for node in fields.get("nodes", []):
            described = _pairs(node)
            address = _address(described, asked, tls)
            if address is None:
                continue
            nodes.append(address)
            if described.get("role") in (b"master", "master"):
                master = address
        bounds = [int(b) for b in fields.get("slots", [])]  # [first, last, first, last, ...]
        if master is not None:
            ranges.extend((first, last, master) for first, last in zip(bounds[::2], bounds[1::2], strict=True))
    return ranges, nodes


def _pairs(flat: list[Any]) -> dict[str, Any]:
    return {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in zip(flat[::2], flat[1::2], strict=True)}


def _address(node: dict[str, Any], asked: Address, tls: bool) -> Address | None:
    """Where to reach a node: its preferred endpoint (an empty one means the node asked, '?' an
    unknown one: its IP then), on its TLS port when we speak TLS."""
    port = node.get("tls-port" if tls else "port") or node.get("port") or node.get("tls-port")
    if not port:
        return None
    endpoint = node.get("endpoint", b"")
    host = endpoint.decode() if isinstance(endpoint, bytes) else str(endpoint)
    if host == "?":
        ip = node.get("ip", b"")
        host = ip.decode() if isinstance(ip, bytes) else str(ip)
    return (host or asked[0], int(port))
