"""Exponential back-off with full jitter, shared by everything that retries on its own."""

from __future__ import annotations

import random


def jittered(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Uniform in [d/2, d], d = base * 2^attempt capped at `cap`, so retries of many parts (or
    replicas) do not fall on the same service in step."""
    ceiling = min(cap, base * 2 ** min(attempt, 30))
    uniform = rng.uniform if rng is not None else random.uniform
    return uniform(ceiling / 2, ceiling)
