"""The latest-tick snapshot: held back one interval per token, newest tick wins, nothing lost on a
registry reload or at shutdown."""

from __future__ import annotations

import numpy as np

from ticker.streamer.stages.latest_snapshot import LatestSnapshot

FIELDS = np.array([b"101", b"202", b"303"], dtype=object)


def snapshot(interval: float = 0.5) -> LatestSnapshot:
    snap = LatestSnapshot(interval)
    snap.rebind(FIELDS)
    return snap


def test_a_token_is_written_once_per_interval_with_its_newest_tick():
    snap = snapshot()
    snap.put(np.array([0, 1]), [b"a1", b"b1"], now=10.0)
    assert snap.take(10.0) == {} and snap.pending == 2
    snap.put(np.array([0, 0]), [b"a2", b"a3"], now=10.2)  # a repeated row keeps its last tick
    assert snap.take(10.4) == {}
    assert snap.take(10.5) == {b"101": b"a3", b"202": b"b1"}
    assert snap.pending == 0 and snap.take(11.0) == {}


def test_each_token_waits_its_own_interval():
    snap = snapshot()
    snap.put(np.array([0]), [b"a1"], now=10.0)
    snap.put(np.array([1]), [b"b1"], now=10.3)
    assert snap.take(10.6) == {b"101": b"a1"}
    snap.put(np.array([0]), [b"a2"], now=10.6)  # pending again: due one interval later
    assert snap.take(10.8) == {b"202": b"b1"}
    assert snap.take(11.1) == {b"101": b"a2"}


def test_zero_interval_writes_every_flush():
    snap = snapshot(0.0)
    snap.put(np.array([2]), [b"c1"], now=5.0)
    assert snap.take(5.0) == {b"303": b"c1"}


def test_pending_ticks_survive_a_registry_reload_and_shutdown_forces_the_rest():
    snap = snapshot()
    snap.put(np.array([0, 2]), [b"a1", b"c1"], now=10.0)
    snap.rebind(np.array([b"303", b"404"], dtype=object))  # rows move; what was pending is kept
    snap.put(np.array([1]), [b"d1"], now=10.1)
    assert snap.take(10.2) == {b"101": b"a1", b"303": b"c1"}  # carried over, written at once
    assert snap.take(10.2, force=True) == {b"404": b"d1"}
    assert snap.pending == 0


def test_fields_of_a_lost_flush_go_out_again_unless_a_newer_tick_did():
    snap = snapshot()
    snap.put(np.array([0, 1, 2]), [b"a1", b"b1", b"c1"], now=10.0)
    lost = snap.take(10.5)  # this flush never reaches Redis
    snap.put(np.array([1]), [b"b2"], now=10.6)  # a newer tick of 202 is waiting
    snap.put(np.array([2]), [b"c2"], now=10.6)
    newer = snap.take(11.1)  # ... and 303's newer tick was taken by a later flush already
    assert newer == {b"202": b"b2", b"303": b"c2"}
    assert snap.restore(lost, taken_at=10.5) == 1  # only 101 comes back
    assert snap.take(11.2) == {b"101": b"a1"}
    assert snap.restore(newer, taken_at=11.1) == 2  # that later flush was lost too: both come back
    assert snap.take(11.3) == {b"202": b"b2", b"303": b"c2"}
    assert snap.restore({b"999": b"x"}, taken_at=11.3) == 0  # a token no longer in the registry
