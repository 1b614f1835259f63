"""cleanup: rows older than the cutoff go (attempts with their order), newer ones stay."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest

from ticker.infra.queue.enqueue import create_queue
from ticker.infra.runtime.settings import Settings
from ticker.jobs.context import DEPS_KEY, build_deps, close_deps
from ticker.jobs.upkeep import maintenance


async def _seed(pool: asyncpg.Pool, tag: str, at: datetime) -> None:
    await pool.execute(
        "INSERT INTO order_requests (job_id, kind, account_id, payload, created_at, updated_at)"
        " VALUES ($1, 'place', 'a1', '{}'::jsonb, $2, $2)", f"job-{tag}", at)
    await pool.execute("INSERT INTO order_attempts (job_id, attempt, started_at, outcome) VALUES ($1, 1, $2, 'ok')",
                       f"job-{tag}", at)
    await pool.execute("INSERT INTO dead_letters (job_id, job_name, payload, reason, created_at)"
                       " VALUES ($1, 'place_order', '{}'::jsonb, 'rejected', $2)", f"dl-{tag}", at)
    await pool.execute("INSERT INTO history_cache (instrument_token, candle_interval, oi, continuous, day,"
                       " candles, fetched_at) VALUES (1, 'minute', false, false, $1, '{}'::jsonb, $2)",
                       date(2020, 1, 1) + timedelta(days=len(tag)), at)


@pytest.fixture(autouse=True)
async def _empty(private_db: asyncpg.Pool) -> None:
    await private_db.execute("TRUNCATE order_requests, order_attempts, dead_letters, history_cache")


async def test_only_rows_older_than_the_cutoff_are_deleted(private_db: asyncpg.Pool) -> None:
    now = datetime.now(UTC)
    await _seed(private_db, "old", now - timedelta(days=40))
    await _seed(private_db, "fresh", now - timedelta(days=1))
    deleted = await maintenance.delete_older_than(private_db, now - timedelta(days=30))
    assert deleted["order_requests"] == 1 and deleted["dead_letters"] == 1 and deleted["history_cache"] == 1
    assert [r[0] for r in await private_db.fetch("SELECT job_id FROM order_requests")] == ["job-fresh"]
    assert [r[0] for r in await private_db.fetch("SELECT job_id FROM order_attempts")] == ["job-fresh"]
    assert await private_db.fetchval("SELECT count(*) FROM history_cache") == 1


async def test_deletes_run_in_batches_until_done(private_db: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(maintenance, "BATCH", 2)
    old = datetime.now(UTC) - timedelta(days=90)
    for i in range(5):
        await _seed(private_db, "x" * (i + 1), old)
    deleted = await maintenance.delete_older_than(private_db, old + timedelta(days=1))
    assert deleted["order_requests"] == 5 and deleted["history_cache"] == 5
    assert await private_db.fetchval("SELECT count(*) FROM dead_letters") == 0


async def test_the_job_uses_cleanup_days(settings: Settings, private_db_url: str, private_db: asyncpg.Pool) -> None:
    local = settings.model_copy(update={"database_url": private_db_url, "cleanup_days": 10})
    queue = await create_queue(local)
    d = await build_deps(local, queue)
    try:
        now = datetime.now(UTC)
        await _seed(private_db, "old", now - timedelta(days=11))
        await _seed(private_db, "fresh", now - timedelta(days=9))
        result = await maintenance.cleanup({DEPS_KEY: d}, {})
        assert result["deleted"]["order_requests"] == 1
        with pytest.raises(ValueError, match="days"):
            await maintenance.cleanup({DEPS_KEY: d}, {"days": 0})
    finally:
        await close_deps(d)
        await queue.aclose()
