"""The per-account circuit breaker on real Redis."""

from __future__ import annotations

import uuid

from ticker.infra.kite.breaker import CircuitBreaker

# Far longer than a test: an open period ends, and a probe's slot frees, only when a test says so.
OPEN_SECONDS, PROBE_SECONDS = 600.0, 1200.0


def breaker(redis, names, settings, **kw) -> CircuitBreaker:
    local = settings.model_copy(update={"breaker_failure_threshold": 3, "breaker_open_seconds": OPEN_SECONDS,
                                        **kw})
    return CircuitBreaker(redis, names, local, probe_seconds=PROBE_SECONDS)


async def end_open_period(redis, names, acct: str) -> None:
    await redis.delete(names.key("breaker", acct, "open"))


async def test_opens_after_consecutive_failures_and_blocks(redis, names, settings) -> None:
    b, acct = breaker(redis, names, settings), uuid.uuid4().hex
    assert await b.allow(acct) == 0.0
    assert [await b.record_failure(acct) for _ in range(3)] == [False, False, True]
    assert await b.state(acct) == "open"
    assert 0 < await b.allow(acct) <= OPEN_SECONDS
    assert await b.allow(uuid.uuid4().hex) == 0.0  # other accounts unaffected


async def test_success_resets_the_count(redis, names, settings) -> None:
    b, acct = breaker(redis, names, settings), uuid.uuid4().hex
    await b.record_failure(acct)
    await b.record_failure(acct)
    await b.record_success(acct)
    assert await b.record_failure(acct) is False and await b.state(acct) == "closed"


async def test_half_open_lets_one_probe_through(redis, names, settings) -> None:
    b, acct = breaker(redis, names, settings), uuid.uuid4().hex
    for _ in range(3):
        await b.record_failure(acct)
    await end_open_period(redis, names, acct)
    assert await b.state(acct) == "half_open"
    assert await b.allow(acct) == 0.0       # the probe
    # everyone else waits, looking again after an open period (not the probe's whole lifetime)
    assert 0 < await b.allow(acct) <= OPEN_SECONDS
    assert await b.record_failure(acct) is True and await b.state(acct) == "open"
    await end_open_period(redis, names, acct)
    assert await b.allow(acct) == 0.0
    await b.record_success(acct)
    assert await b.state(acct) == "closed" and await b.allow(acct) == 0.0


async def test_check_says_whether_a_success_has_anything_to_reset(redis, names, settings) -> None:
    b, acct = breaker(redis, names, settings), uuid.uuid4().hex
    assert await b.check(acct) == (0.0, False)
    await b.record_failure(acct)
    assert await b.check(acct) == (0.0, True)
    await b.record_success(acct)
    assert await b.check(acct) == (0.0, False)
