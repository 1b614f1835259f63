"""A real Redis Cluster for the session: 3 masters and 3 replicas of Debian's redis-server (>= 7,
for sharded pub/sub), on free loopback ports under a temporary folder (loaded from tests/conftest.py).

It is formed with plain commands, as `redis-cli --cluster create` would: each node gets a config
epoch of its own (no collisions to settle), the masters a third of the slots each, everyone is
introduced with CLUSTER MEET, and each replica follows its master with CLUSTER REPLICATE.
`cluster-node-timeout` is 1 s and replicas may always be promoted
(`cluster-replica-validity-factor 0`), so a killed master is replaced within a few seconds.

Tests may kill and restart nodes: `kill(node)` (or `freeze(node)`, SIGSTOP), then
`await wait_failover(node)` for the promoted replica, `restart(node)` (or `thaw(node)`) and
`await wait_rejoined(node)`. A test that does so leaves every node
running (`restart` them, or `await heal()`), so the next test finds 3 masters with a replica each,
though not on the same ports as before. Nothing here sleeps to order events: waits poll conditions.

Without redis-server >= 7 the tests using it are skipped, unless TICKER_TEST_REQUIRE_CLUSTER=1
(set by `.ci/run`) makes that a failure.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from tests.waiting import GENEROUS, wait_for
from ticker.infra.dev.embedded import free_port

REQUIRE_ENV = "TICKER_TEST_REQUIRE_CLUSTER"
SLOTS = 16384
MASTERS = 3
NODE_TIMEOUT_MS = 1000
PR_SET_PDEATHSIG = 1  # prctl(2)
START_SECONDS = 30.0  # a bound, not an expectation: the cluster forms in well under a second


@dataclass
class ClusterNode:
    port: int
    bus_port: int
    folder: Path
    node_id: str = ""
    proc: subprocess.Popen | None = field(default=None, repr=False)
    frozen: bool = False  # SIGSTOPped: its sockets stay open, nothing answers

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def running(self) -> bool:
        """Started and answering (not killed, not frozen)."""
        return self.proc is not None and self.proc.poll() is None and not self.frozen

    def client(self) -> redis.Redis:
        """A short-lived plain client of this node alone (close it after use)."""
        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2, decode_responses=True)

    def call(self, *args: str | int) -> object:
        with self.client() as client:
            return client.execute_command(*args)


def redis_server_binary() -> tuple[str | None, str]:
    """(path, why not): the redis-server to use, or None and the reason there is none."""
    binary = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server")
                                              else None)
    if binary is None:
        return None, "redis-server is not installed (apt-get install redis-server)"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
    version = re.search(r"v=(\d+)\.(\d+)", out)
    if version is None or int(version.group(1)) < 7:
        return None, f"{binary} is too old for sharded pub/sub (Redis >= 7 needed): {out.strip()}"
    return binary, ""


def _cluster_ok(node: ClusterNode) -> bool:
    try:
        return "cluster_state:ok" in str(node.call("CLUSTER", "INFO")).splitlines()
    except (redis.RedisError, OSError):
        return False


def _replication(node: ClusterNode) -> dict[str, object]:
    """INFO replication, as redis-py parses it (role, master_port, master_link_status, ...)."""
    return dict(node.call("INFO", "replication"))  # type: ignore[call-overload]


def _replicated_everywhere(node: ClusterNode) -> bool:
    """Whether `node` sees a replica serving every slot range (gossip has told it of them all)."""
    ranges = node.call("CLUSTER", "SLOTS")
    return all(len(r) > 3 for r in ranges)  # type: ignore[attr-defined]


def _slot_owners(node: ClusterNode) -> dict[int, int]:
    """slot -> port of its master, as `node` sees the cluster."""
    owners: dict[int, int] = {}
    for start, end, master, *_replicas in node.call("CLUSTER", "SLOTS"):  # type: ignore[attr-defined]
        for slot in range(int(start), int(end) + 1):
            owners[slot] = int(master[1])
    return owners


class LocalCluster:
    def __init__(self, binary: str, folder: Path, size: int = 2 * MASTERS) -> None:
        self.binary = binary
        self.folder = folder
        self.nodes: list[ClusterNode] = []
        for i in range(size):
            self.nodes.append(ClusterNode(free_port(), free_port(), folder / f"node{i}"))
        self._lost_slots: dict[int, set[int]] = {}  # port of a killed master -> the slots it held

    # -- what tests use -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """A running node's URL: a seed for cluster clients."""
        return self.running_nodes()[0].url

    def running_nodes(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.running]

    def node_at(self, port: int) -> ClusterNode:
        return next(n for n in self.nodes if n.port == port)

    def master_for(self, key: str | bytes) -> ClusterNode:
        """The master serving `key`'s slot (for a shard channel too), as a healthy node sees it."""
        return self.node_at(_slot_owners(self._viewer())[key_slot(_bytes(key))])

    def masters(self) -> list[ClusterNode]:
        """The masters serving slots, by port."""
        return sorted({self.node_at(p).port: self.node_at(p) for p in _slot_owners(self._viewer()).values()}
                      .values(), key=lambda n: n.port)

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL: no goodbye to clients or to the cluster; its slots are noted for `wait_failover`."""
        self._note_slots(node)
        assert node.proc is not None
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(30)
        node.proc, node.frozen = None, False

    def freeze(self, node: ClusterNode) -> None:
        """SIGSTOP: the node stops answering but its connections stay open, as a hung or
        partitioned server's do (the cluster fails it over like a dead one)."""
        self._note_slots(node)
        assert node.proc is not None
        node.proc.send_signal(signal.SIGSTOP)
        node.frozen = True

    def thaw(self, node: ClusterNode) -> None:
        """SIGCONT: a frozen node carries on, learns it was replaced and follows its successor."""
        assert node.proc is not None
        node.proc.send_signal(signal.SIGCONT)
        node.frozen = False

    def _note_slots(self, node: ClusterNode) -> None:
        if node.running:
            self._lost_slots[node.port] = {s for s, p in _slot_owners(self._viewer()).items() if p == node.port}

    def restart(self, node: ClusterNode) -> None:
        """Start a stopped node again on its port and folder: its nodes.conf brings it back into the
        cluster (a replaced master as a replica of its successor)."""
        self._start(node)
        self._await_ping(node)

    async def wait_failover(self, node: ClusterNode, timeout: float = GENEROUS) -> ClusterNode:
        """Wait until the slots `node` held when killed are served by one other master that every
        running node agrees on, and the cluster is ok everywhere; return that master (for a killed
        replica, which held none: a running master)."""
        slots = self._lost_slots.get(node.port, set())

        def failed_over() -> bool:
            views = [_slot_owners(n) for n in self.running_nodes()]
            owners = {v.get(s) for v in views for s in slots}
            return (len(owners) <= 1 and node.port not in owners and None not in owners
                    and all(_cluster_ok(n) for n in self.running_nodes()))

        await wait_for(_threaded(failed_over), timeout)
        return self.node_at(_slot_owners(self._viewer())[min(slots)]) if slots else self.masters()[0]

    async def wait_rejoined(self, node: ClusterNode, timeout: float = GENEROUS) -> ClusterNode:
        """Wait until a restarted node is a replica in sync with a master and the cluster is ok;
        return its master."""
        def rejoined() -> bool:
            replication = _replication(node)
            return (replication.get("role") == "slave" and replication.get("master_link_status") == "up"
                    and all(_cluster_ok(n) for n in self.running_nodes()))

        await wait_for(_threaded(rejoined), timeout)
        return self.node_at(int(str(_replication(node)["master_port"])))

    async def heal(self, timeout: float = GENEROUS) -> None:
        """Thaw every frozen node, restart every stopped one and wait until all are back and the
        cluster is ok."""
        for node in self.nodes:
            if node.frozen:
                self.thaw(node)
            if not node.running:
                self.restart(node)
        await wait_for(_threaded(self._all_ok), timeout)

    # -- forming and ending ---------------------------------------------------------------------

    def start(self) -> None:
        for node in self.nodes:
            self._start(node)
        for epoch, node in enumerate(self.nodes, start=1):
            self._await_ping(node)
            node.node_id = str(node.call("CLUSTER", "MYID"))
            node.call("CLUSTER", "SET-CONFIG-EPOCH", epoch)
        masters, replicas = self.nodes[:MASTERS], self.nodes[MASTERS:]
        bounds = [SLOTS * i // MASTERS for i in range(MASTERS + 1)]
        for i, master in enumerate(masters):
            master.call("CLUSTER", "ADDSLOTSRANGE", bounds[i], bounds[i + 1] - 1)
        for node in self.nodes[1:]:
            self.nodes[0].call("CLUSTER", "MEET", "127.0.0.1", node.port, node.bus_port)
        self._poll(self._all_known, "every node to know every other")
        for master, replica in zip(masters, replicas, strict=False):
            replica.call("CLUSTER", "REPLICATE", master.node_id)
        self._poll(self._all_ok, "cluster_state:ok with every replica in sync")

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGKILL)  # a frozen one too: SIGKILL needs no SIGCONT
                node.proc.wait(30)
            node.proc, node.frozen = None, False

    def _start(self, node: ClusterNode) -> None:
        node.folder.mkdir(parents=True, exist_ok=True)
        node.proc = subprocess.Popen(
            [self.binary, "--port", str(node.port), "--cluster-port", str(node.bus_port), "--bind", "127.0.0.1",
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--cluster-replica-validity-factor", "0",
             "--repl-diskless-sync-delay", "0", "--repl-ping-replica-period", "1", "--save", "", "--appendonly", "no", "--dir", str(node.folder),
             "--logfile", str(node.folder / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent)

    def _await_ping(self, node: ClusterNode) -> None:
        def answers() -> bool:
            if node.proc is None or node.proc.poll() is not None:
                log = node.folder / "redis.log"
                raise RuntimeError(f"redis-server on {node.port} exited: "
                                   f"{log.read_text()[-2000:] if log.exists() else ''}")
            try:
                return bool(node.call("PING"))
            except (redis.RedisError, OSError):
                return False

        self._poll(answers, f"redis-server to answer on {node.port}")

    def _viewer(self) -> ClusterNode:
        """A running node whose cluster is ok (else any running one)."""
        running = self.running_nodes()
        return next((n for n in running if _cluster_ok(n)), running[0])

    def _all_known(self) -> bool:
        for node in self.nodes:
            lines = str(node.call("CLUSTER", "NODES")).splitlines()
            if len(lines) < len(self.nodes) or any("handshake" in line for line in lines):
                return False
        return True

    def _all_ok(self) -> bool:
        """Every node running and ok, every master with a replica in sync."""
        if len(self.running_nodes()) < len(self.nodes) or not all(_cluster_ok(n) for n in self.nodes):
            return False
        roles = [_replication(n) for n in self.nodes]
        replicas = [r for r in roles if r.get("role") == "slave"]
        return (len(replicas) == len(self.nodes) - MASTERS
                and all(r.get("master_link_status") == "up" for r in replicas)
                and all(_replicated_everywhere(n) for n in self.nodes))

    @staticmethod
    def _poll(check: Callable[[], bool], what: str, timeout: float = START_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise RuntimeError(f"Redis Cluster: no {what} within {timeout:.0f} s")
            time.sleep(0.01)


class ShardPublisher:
    """SPUBLISHes 0, 1, 2, ... on a shard channel through redis-py's asyncio cluster client until
    stopped, as the streamer would: a failed publish (its master killed, the slot moving) is retried
    with a fresh client seeded by a running node, which reads the topology again. `acked` counts the
    publishes Redis took."""

    def __init__(self, cluster: LocalCluster, channel: bytes) -> None:
        self.cluster, self.channel = cluster, channel
        self.acked = 0
        self.failures = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop after the publish in flight (a flag, not only a cancel: redis-py may turn a
        cancellation that meets one of its own timeouts into a TimeoutError, which is retried)."""
        self._stopping = True
        if self._task is not None:
            _, pending = await asyncio.wait([self._task], timeout=GENEROUS)
            for task in pending:
                task.cancel()

    async def _run(self) -> None:
        from redis.asyncio.cluster import RedisCluster
        from redis.exceptions import RedisClusterException

        while not self._stopping:
            client = RedisCluster.from_url(self.cluster.url, socket_timeout=2, socket_connect_timeout=2)
            try:
                while not self._stopping:
                    await client.execute_command("SPUBLISH", self.channel, str(self.acked))
                    self.acked += 1
                    await asyncio.sleep(0.002)  # a steady stream, not a flood
            except (redis.RedisError, RedisClusterException, OSError):
                self.failures += 1
                await asyncio.sleep(0.05)  # pace the retries while the cluster settles
            finally:
                await client.aclose()


# prctl, looked up here: the child only calls it (no dynamic loading between fork and exec)
_PRCTL = ctypes.CDLL(None).prctl if sys.platform == "linux" else None


def _die_with_parent() -> None:
    """In the child before exec: on Linux, be killed when the thread that started it ends (the
    test process, however it ends: a runner killed by a timeout never reaches the fixture's
    teardown). So start nodes from the test's own thread, not a worker thread."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)


def _bytes(key: str | bytes) -> bytes:
    return key.encode() if isinstance(key, str) else key


def _threaded(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    """An async check running a blocking one in a thread, so the test's own tasks run meanwhile;
    a node that does not answer (killed, restarting) makes the check false, not an error."""
    async def check_async() -> bool:
        try:
            return await asyncio.to_thread(check)
        except (redis.RedisError, OSError):
            return False

    check_async.__name__ = getattr(check, "__name__", "check")
    return check_async


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    binary, why_not = redis_server_binary()
    if binary is None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(why_not)
        pytest.skip(f"{why_not}; set {REQUIRE_ENV}=1 to fail instead")
    folder = Path(tempfile.mkdtemp(prefix="ticker-cluster-"))
    cluster = LocalCluster(binary, folder)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)
