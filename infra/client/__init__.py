"""`ticker.client`: ticks, order updates and chain messages as an async iterator of typed events,
resumed after every disconnect with nothing missed and nothing twice while history allows.

    from ticker.client import RedisFeed, TickBatch

    async for event in RedisFeed("redis://127.0.0.1:6379/0", tokens=[256265]):
        if isinstance(event, TickBatch):
            ...

`RedisFeed` reads the channels and their history streams in Redis; `WsFeed` the web's `/ws/ticks`.
Installed as `ticker.client` (its folder is `infra/client/`: it is an adapter to Redis and HTTP).
"""

from ticker.client.feed_events import (
    CHAIN_STREAM,
    ORDER_STREAM,
    TICK_STREAM,
    ChainUpdates,
    FeedEvent,
    OrderUpdates,
    PublishedItems,
    Snapshot,
    StreamGap,
    TickBatch,
)
from ticker.client.redis_feed import RedisFeed
from ticker.client.ws_feed import WsFeed
from ticker.core.tick_envelope import StreamPosition

__all__ = ["CHAIN_STREAM", "ORDER_STREAM", "TICK_STREAM", "ChainUpdates", "FeedEvent", "OrderUpdates",
           "PublishedItems", "RedisFeed", "Snapshot", "StreamGap", "StreamPosition", "TickBatch", "WsFeed"]
