"""The streamer's pipeline, in the order ticks flow through it.

Kite sockets (`ticker.infra.kite.ticker_pool`) → `decode` (binary frames to columnar ticks) → `batch` (the
bounded buffer and the batch window) → `enrich` (validation, forwards, IV and Greeks, OHLC bars) →
`render` (subscriber JSON and the latest-tick snapshot) → `publish` (one Redis pipeline per flush,
behind the `publish_breaker`). `pipeline` joins batch to publish as owned loops, with the `outbox`
keeping flushes in order on their way to Redis.

What the stages lean on: `instrument_table` (what each streamed token is, as numpy columns),
`latest_prices` (the prices options are priced on), `bars`, `json_columns` (column-wise JSON
assembly), `latest_snapshot` (the latest-tick hash, written at most once per interval per token).
"""
