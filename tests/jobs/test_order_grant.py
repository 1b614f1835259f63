"""An order job draws on Kite's rate limits only once it knows it will call Kite: one that ends
before the call (here: its audit row says it was cancelled) is never judged by those limits."""

from __future__ import annotations

import uuid

from ticker.core.orders import kite_tag
from ticker.infra.queue.status import job_status

from .conftest import run_burst
from .test_order_limits import market


async def test_a_job_that_will_not_call_kite_takes_no_grant(world_factory, db) -> None:
    world = await world_factory(accounts=1, overrides={"order_rate_per_day": 1})
    first = await world.api.place_id(market(world, "sim1"), uuid.uuid4().hex)
    await run_burst(world)
    assert (await job_status(world.arq, db, world.names, first)).status == "complete"  # the day's one order

    second = await world.api.place_id(market(world, "sim1"), uuid.uuid4().hex)
    await db.execute("UPDATE order_requests SET status = 'cancelled', last_error = 'cancelled elsewhere'"
                     " WHERE job_id = $1", second)
    await run_burst(world)
    status = await job_status(world.arq, db, world.names, second)
    assert status.status == "cancelled"
    assert "daily order limit" not in (status.error or "")  # the day's budget never came into it
    assert world.orders_with_tag(kite_tag(second)) == 0
