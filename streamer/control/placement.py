"""Which account streams which instrument.

Placement is capacity-bounded rendezvous hashing: every (token, account) pair gets a pseudo-random
score and a token goes to its best-scoring healthy account that still has room. The result is a
pure function of its inputs, so two streamer replicas reading the same Postgres rows agree on the
whole plan without talking to each other; and it churns little by construction: adding or removing
a token moves no other token, and an account that drops out (bad token) only hands over its own
tokens, which come back when it returns. Spread across accounts is even in expectation.
A pinned `account_id` wins while that account is healthy and has room.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ticker.core.wire_layout import Mode


@dataclass(frozen=True, slots=True)
class Wanted:
    """One instrument to stream, in a mode, optionally pinned to an account."""

    token: int
    mode: Mode
    account_id: str | None = None


@dataclass(frozen=True, slots=True)
class Slot:
    """An account that could stream: how many tokens it can hold and whether its token works."""

    account_id: str
    capacity: int
    healthy: bool = True


@dataclass
class Plan:
    assignment: dict[str, dict[int, Mode]] = field(default_factory=dict)
    unplaced: list[int] = field(default_factory=list)

    def tokens_of(self, account_id: str) -> dict[int, Mode]:
        return self.assignment.get(account_id, {})

    def account_of(self) -> dict[int, str]:
        return {tok: acc for acc, toks in self.assignment.items() for tok in toks}

    @property
    def placed(self) -> int:
        return sum(len(t) for t in self.assignment.values())


_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a cheap, well-spread 64-bit hash, vectorised (uint64 wraps)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return (x ^ (x >> np.uint64(31))) & _MASK


def _seed(account_id: str) -> np.uint64:
    return np.uint64(int.from_bytes(hashlib.blake2b(account_id.encode(), digest_size=8).digest(), "big"))


def preferences(tokens: np.ndarray, account_ids: Sequence[str]) -> np.ndarray:
    """(n, m) account indices per token, best first."""
    seeds = np.array([_seed(a) for a in account_ids], dtype=np.uint64)
    scores = _mix(tokens.astype(np.uint64)[:, None] ^ seeds[None, :])
    return np.argsort(scores, axis=1, kind="stable")[:, ::-1]


def plan_assignments(wanted: Sequence[Wanted], slots: Sequence[Slot]) -> Plan:
    """Assign each wanted token (first occurrence wins) to one healthy slot, within capacity."""
    first: dict[int, Wanted] = {}
    for w in wanted:
        first.setdefault(w.token, w)
    unique = list(first.values())
    live = [s for s in slots if s.healthy and s.capacity > 0]
    if not unique:
        return Plan({s.account_id: {} for s in live})
    if not live:
        return Plan({}, sorted(w.token for w in unique))
    ids = [s.account_id for s in live]
    index = {a: i for i, a in enumerate(ids)}
    tokens = np.fromiter((w.token for w in unique), np.int64, len(unique))
    pref = preferences(tokens, ids)
    pinned = np.fromiter((index.get(w.account_id, -1) if w.account_id else -1 for w in unique),
                         np.int64, len(unique))
    capacity = np.array([s.capacity for s in live])
    choice = np.where(pinned >= 0, pinned, pref[:, 0])
    if not (np.bincount(choice, minlength=len(ids)) <= capacity).all():
        choice = _place_bounded(tokens, pref, pinned, capacity)
    plan = Plan({a: {} for a in ids})
    for w, c in zip(unique, choice.tolist(), strict=True):
        if c < 0:
            plan.unplaced.append(w.token)
        else:
            plan.assignment[ids[c]][w.token] = w.mode
    return plan


def _place_bounded(tokens: np.ndarray, pref: np.ndarray, pinned: np.ndarray,
                   capacity: np.ndarray) -> np.ndarray:
    """Capacity binds somewhere: place pinned tokens first, then the rest in token order, each to
    its best account with room (-1 when every account is full)."""
    load = np.zeros(len(capacity), np.int64)
    choice = np.full(len(tokens), -1, np.int64)
    order = np.lexsort((tokens, pinned < 0))  # pinned first, then ascending token
    for i in order.tolist():
        candidates = ([int(pinned[i])] if pinned[i] >= 0 else []) + pref[i].tolist()
        for c in candidates:
            if load[c] < capacity[c]:
                choice[i] = c
                load[c] += 1
                break
    return choice
