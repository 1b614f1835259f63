"""The streamer's Prometheus metrics (one registry per streamer, so tests can build many)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from ticker.infra.runtime.prometheus import new_registry

_BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 50_000)
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class StreamerMetrics:
    def __init__(self) -> None:
        self.registry = r = new_registry()
        self.received = Counter("ticker_streamer_ticks_received", "Ticks decoded from Kite frames", registry=r)
        self.published = Counter("ticker_streamer_ticks_published", "Ticks published to Redis",
                                 ["channel"], registry=r)
        self.dropped = Counter("ticker_streamer_ticks_dropped", "Ticks not published, by reason",
                               ["reason"], registry=r)
        self.frames = Counter("ticker_streamer_frames", "WebSocket frames received, by kind",
                              ["kind"], registry=r)
        self.snapshot_fields = Counter("ticker_streamer_snapshot_fields", "Latest-tick hash fields written",
                                       registry=r)
        self.orders = Counter("ticker_streamer_order_updates", "Order postbacks relayed", registry=r)
        self.postbacks_rejected = Counter("ticker_streamer_postbacks_rejected",
                                          "Order postbacks dropped before the orders channel, by reason "
                                          "(bad_checksum, missing_checksum, malformed)", ["reason"], registry=r)
        self.postbacks_unverified = Counter("ticker_streamer_postbacks_unverified",
                                            "Order postbacks relayed unverified (the account has no api_secret)",
                                            registry=r)
        self.batch_size = Histogram("ticker_streamer_batch_size", "Ticks per flush",
                                    buckets=_BATCH_BUCKETS, registry=r)
        self.publish_seconds = Histogram("ticker_streamer_publish_seconds", "Redis pipeline time per flush",
                                         buckets=_LATENCY_BUCKETS, registry=r)
        self.enrich_seconds = Histogram("ticker_streamer_enrich_seconds", "Greeks + rendering time per flush",
                                        buckets=_LATENCY_BUCKETS, registry=r)
        self.pipeline_seconds = Histogram("ticker_streamer_pipeline_seconds",
                                          "Oldest tick's receipt to end of its flush",
                                          buckets=_LATENCY_BUCKETS, registry=r)
        self.greeks_failures = Counter("ticker_streamer_greeks_failures", "Option ticks without Greeks",
                                       ["reason"], registry=r)
        self.reconnects = Counter("ticker_streamer_reconnects", "WebSocket reconnects, by cause",
                                  ["reason"], registry=r)
        self.connections = Gauge("ticker_streamer_connections", "Open Kite WebSocket connections", registry=r)
        self.tokens = Gauge("ticker_streamer_tokens", "Tokens this streamer streams", registry=r)
        self.unplaced = Gauge("ticker_streamer_unplaced_tokens", "Wanted tokens with no account capacity",
                              registry=r)
        self.buffer_ticks = Gauge("ticker_streamer_buffer_ticks", "Ticks waiting for the next flush", registry=r)
        self.breaker_state = Gauge("ticker_streamer_redis_breaker_state", "0 closed, 1 half-open, 2 open",
                                   registry=r)
        self.accounts_owned = Gauge("ticker_streamer_accounts_owned", "Accounts leased by this streamer",
                                    registry=r)
        self.control = Counter("ticker_streamer_control_messages", "Control messages, by kind",
                               ["kind"], registry=r)
        self.reconciles = Counter("ticker_streamer_reconciles", "Reconcile passes, by outcome",
                                  ["outcome"], registry=r)
        self.stage_failures = Counter("ticker_streamer_stage_failures",
                                      "Pipeline stages or loops that failed and were restarted at once, by stage",
                                      ["stage"], registry=r)
        self.redis_up = Gauge("ticker_streamer_redis_up", "1 while Redis answers, 0 during an outage", registry=r)
        self.redis_up.set(1)
        self.tick_redis_up = Gauge("ticker_streamer_tick_redis_up", "1 while the tick bus's Redis (TICK_REDIS_URL, "
                                   "else REDIS_URL's) answers the publisher, 0 during an outage", registry=r)
        self.tick_redis_up.set(1)
        self.redis_outages = Counter("ticker_streamer_redis_outages", "Redis outages (each logged once)",
                                     registry=r)
        self.degraded = Gauge("ticker_streamer_degraded", "1 while /health reports degraded", registry=r)
        self.token_rejections = Counter("ticker_streamer_token_rejections", "403s from the Kite ticker",
                                        registry=r)
