-- Historical candles as Kite returned them, one row per instrument, interval, flags and calendar
-- day (IST). Only days that are over are stored, so a cached day never changes; columnar JSON
-- ({"t": epoch seconds, "o", "h", "l", "c", "v", "oi"}) keeps rows compact and quick to load.
CREATE TABLE history_cache (
    instrument_token BIGINT NOT NULL,
    candle_interval  TEXT NOT NULL,
    oi               BOOLEAN NOT NULL,
    continuous       BOOLEAN NOT NULL,
    day              DATE NOT NULL,
    candles          JSONB NOT NULL,
    fetched_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (instrument_token, candle_interval, oi, continuous, day)
);
CREATE INDEX history_cache_fetched_idx ON history_cache (fetched_at);
