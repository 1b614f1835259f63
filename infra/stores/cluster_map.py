"""Which master of a Redis Cluster owns each hash slot, read with CLUSTER SLOTS from any node we know.

`refresh` asks the seed first, then every node it learned of, so a map survives the seed itself
being the master that died. Nodes are (host, port) as the cluster announces them.
"""

from __future__ import annotations

import bisect
from urllib.parse import urlsplit, urlunsplit

from redis.exceptions import RedisError

from ticker.infra.stores.redis import connect

SLOTS = 16_384
Node = tuple[str, int]


class ClusterMap:
    def __init__(self, seed_url: str) -> None:
        self.seed_url = seed_url
        seed = urlsplit(seed_url)
        self.known: list[Node] = [(seed.hostname or "127.0.0.1", seed.port or 6379)]
        self._starts: list[int] = []  # sorted first slot of each range
        self._ranges: list[tuple[int, int, Node]] = []

    async def refresh(self) -> None:
        """Read the slot map from the first node that answers; raises when none does."""
        error: Exception | None = None
        for node in list(self.known):
            client = connect(node_url(self.seed_url, node), max_connections=1)
            try:
                reply = await client.execute_command("CLUSTER SLOTS")
            except (RedisError, OSError) as exc:
                error = exc
                continue
            finally:
                await client.aclose()
            self._load(reply)
            return
        raise ConnectionError(f"no node of the Redis Cluster answered: {error}")

    def _load(self, reply: list) -> None:
        ranges = []
        for first, last, master, *replicas in reply:
            ranges.append((int(first), int(last), _node(master)))
            for node in (master, *replicas):
                if _node(node) not in self.known:
                    self.known.append(_node(node))
        ranges.sort()
        self._ranges = ranges
        self._starts = [r[0] for r in ranges]

    def master_for(self, slot: int) -> Node:
        i = bisect.bisect_right(self._starts, slot) - 1
        if i < 0 or not self._ranges[i][0] <= slot <= self._ranges[i][1]:
            raise ConnectionError(f"slot {slot} is not served by any master of the Redis Cluster")
        return self._ranges[i][2]

    def masters(self) -> list[Node]:
        return sorted({node for _, _, node in self._ranges})


def _node(entry: list) -> Node:
    host = entry[0].decode() if isinstance(entry[0], bytes) else str(entry[0])
    return host, int(entry[1])


def node_url(seed_url: str, node: Node) -> str:
    """The URL of another node of the seed's cluster: same scheme, user, password and options."""
    parts = urlsplit(seed_url)
    credentials, _, _ = parts.netloc.rpartition("@")
    host = f"[{node[0]}]" if ":" in node[0] else node[0]
    netloc = f"{credentials}@{host}:{node[1]}" if credentials else f"{host}:{node[1]}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
