"""The tick bus on a 3-master Redis Cluster against one Redis, same run, same stand-in.

`bench_streamer`'s set-up (the stand-in, 27,000 full-mode options with their underlyings, a real
`ticker streamer` process pinned to a core of its own, the rig on the other) runs the streamer
twice, with adaptive batches and sequenced envelopes (the defaults):

- the tick bus on one embedded Redis, which also holds the queues and leases (REDIS_URL);
- the tick bus on a local Redis Cluster (`tests/redis_cluster.py`: 3 masters and 3 replicas of
  redis-server 7), TICK_REDIS_URL a node of it and TICK_REDIS_CLUSTER=true; REDIS_URL stays the
  embedded Redis. Every underlying is a shard (`Names.shard`): its options and underlying
  channels, history stream and sequence hash live on one master, and the streamer writes a flush
  as one pipeline per master, each message SPUBLISHed by the sequencing script.

The subscriber counts the ticks of every underlying's options and underlying channels straight off
raw sockets: one SUBSCRIBE connection to the single Redis, or one SSUBSCRIBE connection per master
of the cluster for the shard channels it owns. The shards are the underlyings of the subscribed
options (the streamer's shard directory is checked to name each of them). Latency at 20k ticks/s
is sampled on the same channels (`ShardSubscriber` on the cluster). Rows, each with the ratio cluster /
single: max sustained ticks/s (the streamer rows' criteria), p50/p99 latency, the streamer's CPU
per tick at 27k ticks/s, and the Redis CPU per tick (every redis-server, masters and replicas apart).

The cluster's six redis-server processes run on the rig's cores, beside the stand-in and this
subscriber: on a 2-core machine they share one core, which the single Redis shared with those two
only. Replicas also apply what their masters do (XADD, HINCRBY, and
every SPUBLISH is propagated to a shard's replicas), and a flush's ticks are split into a message
per shard and channel, so the rig does several times the Redis work per tick; the figures say what
a cluster costs on a machine this size, not what it scales to on machines of its own.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

from tests.bench.bench_streamer import (
    NAMESPACE,
    PREFIX,
    STEPS,
    Bench,
    Counter,
    _core_share,
    _latency,
    _streamer_run,
    sample_latency,
    sample_shard_latency,
)
from tests.bench.harness import percentile
from tests.redis_cluster import LocalCluster, redis_server_binary
from ticker.core.contracts import Names

PUBSUB_LIMIT = ("client-output-buffer-limit", "pubsub 1gb 512mb 60")  # as bench_streamer's Redis


def _shard_channels(names: Names, tags: Sequence[str]) -> list[str]:
    """Every shard's tick channels (options and underlying), as one Redis's two carry them all."""
    return [channel for tag in tags for channel in (names.shard(tag).options, names.shard(tag).underlying)]


def _start_cluster(binary: str, folder: Path, cores: set[int]) -> LocalCluster:
    cluster = LocalCluster(binary, folder)
    cluster.start()
    for node in cluster.nodes:
        assert node.proc is not None
        os.sched_setaffinity(node.proc.pid, cores)
        node.call("CONFIG", "SET", *PUBSUB_LIMIT)
    return cluster


def _routes(cluster: LocalCluster, channels: Sequence[str]) -> dict[int, list[str]]:
    """Master port -> the shard channels it owns."""
    routes: dict[int, list[str]] = {}
    for channel in channels:
        routes.setdefault(cluster.master_for(channel).port, []).append(channel)
    return routes


def _roles(cluster: LocalCluster) -> dict[str, list[int]]:
    """The redis-servers' pids by role (as formed: the bench fails nothing over)."""
    masters = {node.port for node in cluster.masters()}
    roles: dict[str, list[int]] = {"masters": [], "replicas": []}
    for node in cluster.nodes:
        if node.proc is not None:
            roles["masters" if node.port in masters else "replicas"].append(node.proc.pid)
    return roles


def _check_directory(cluster: LocalCluster, names: Names, tags: Sequence[str]) -> None:
    """The shards counted are the ones the streamer published to (its shard directory)."""
    members = cluster.master_for(names.shards).call("SMEMBERS", names.shards)
    missing = set(tags) - set(members)  # type: ignore[call-overload]
    if missing:
        raise RuntimeError(f"the streamer's shard directory lacks {sorted(missing)}: the bench counts other channels")


async def _single(bench: Bench, channels: list[str]) -> dict:
    async with Counter.single(bench.redis_url, channels) as sub:
        return await _streamer_run(bench, sub, adaptive=True, label="tick bus on one Redis", steps=STEPS,
                                   sampler=lambda seconds: sample_latency(bench.redis_url, seconds, channels),
                                   redis_pids={"redis": [pid for pid in [bench.redis_server.pid] if pid]})


async def _clustered(bench: Bench, cluster: LocalCluster, channels: list[str]) -> dict:
    env = {"TICK_REDIS_URL": cluster.url, "TICK_REDIS_CLUSTER": "true"}
    async with Counter(_routes(cluster, channels), b"SSUBSCRIBE") as sub:
        return await _streamer_run(bench, sub, adaptive=True, label="tick bus on a cluster", steps=STEPS,
                                   extra_env=env, redis_pids=_roles(cluster),
                                   sampler=lambda seconds: sample_shard_latency(cluster.url, channels, seconds))


def _p99(run: dict) -> float:
    return percentile(sorted(run["lat"]), 99) * 1000


async def _measure(report) -> None:
    binary, why_not = redis_server_binary()
    if binary is None:
        report.row("tick bus on a 3-master Redis Cluster vs one Redis", f"not measured: {why_not}")
        return
    share = _core_share()
    names = Names(PREFIX, NAMESPACE)
    async with Bench() as bench:
        tags = sorted({row["name"] for row in bench.options})
        single = await _single(bench, [names.options, names.underlying])
        cluster = await asyncio.to_thread(_start_cluster, binary, bench.folder / "cluster", bench.rig_cores)
        try:
            clustered = await _clustered(bench, cluster, _shard_channels(names, tags))
            _check_directory(cluster, names, tags)
        finally:
            cluster.stop()
        placement = (f"streamer on core {min(bench.tested_core)}; the Redis side, stand-in and subscriber on "
                     f"{sorted(bench.rig_cores)}" if bench.tested_core != bench.rig_cores else "one core shared by all")
    share = min(share, _core_share())

    (best, got), (base, base_got) = clustered["ramp"], single["ramp"]
    shards = f"{len(tags)} shards"
    report.row(f"tick bus: max sustained ticks/s, 3-master Redis Cluster + 3 replicas ({shards}, SPUBLISH, "
               "a pipeline per master) vs one Redis",
               f"{best:,.0f} ticks/s (subscriber got {got:,.0f}/s; {placement}: 6 redis-servers there)",
               anchor=f"one Redis {base:,.0f} ticks/s (got {base_got:,.0f}/s)",
               ratio=best / base if base else None, goal="info")
    report.row("tick bus: frame receipt -> subscriber latency @ 20k ticks/s, cluster vs one Redis",
               _latency(clustered), anchor=f"one Redis: {_latency(single)}",
               ratio=_p99(clustered) / _p99(single) if single["lat"] and clustered["lat"] else None,
               goal="info (ratio: p99 cluster / one Redis)")
    per_tick, base_tick = clustered["per_tick"], single["per_tick"]
    report.row("tick bus: streamer CPU per tick @ 27k ticks/s (whole process), cluster vs one Redis",
               f"{per_tick * 1e6:.1f} µs/tick, {clustered['cpu']:.0f}% of a core",
               anchor=f"one Redis {base_tick * 1e6:.1f} µs/tick, {single['cpu']:.0f}% of a core",
               ratio=per_tick / base_tick if base_tick else None, goal="info (ratio: cluster / one Redis)")
    masters, replicas = clustered["redis_per_tick"]["masters"], clustered["redis_per_tick"]["replicas"]
    redis, base_redis = masters + replicas, single["redis_per_tick"]["redis"]
    report.row("tick bus: Redis CPU per tick @ 27k ticks/s (every redis-server: the cluster's 3 masters and "
               "3 replicas; the one Redis, which also holds queues and leases)",
               f"{redis * 1e6:.1f} µs/tick (masters {masters * 1e6:.1f}, replicas {replicas * 1e6:.1f})",
               anchor=f"one Redis {base_redis * 1e6:.1f} µs/tick",
               ratio=redis / base_redis if base_redis else None, goal="info (ratio: cluster / one Redis)")
    report.row("tick cluster bench: share of a core a busy loop got on this machine during the run", f"{share:.0%}")


def run(report):
    return _measure(report)
