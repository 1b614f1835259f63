"""The streamer's pipeline, in the order ticks flow through it.

Kite sockets (`ticker.streamer.pool`) → `decode` (binary frames to columnar ticks) → `batch` (the
bounded buffer and the batch window) → `enrich` (validation, forwards, IV and Greeks, OHLC bars) →
`render` (subscriber JSON and the latest-tick snapshot) → `publish` (one Redis pipeline per flush,
kept in order by the `outbox`, behind the `publish_breaker`).

Supporting modules: `instrument_table` (what each streamed token is, as numpy columns),
`latest_prices` (the prices options are priced on), `bars`, `latest_snapshot`.
"""
