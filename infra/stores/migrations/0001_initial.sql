-- Instruments: Kite's instrument dump, kept current by the refresh job.
CREATE TABLE instruments (
    instrument_token BIGINT PRIMARY KEY,
    exchange_token   BIGINT NOT NULL,
    tradingsymbol    TEXT NOT NULL,
    name             TEXT NOT NULL DEFAULT '',
    last_price       DOUBLE PRECISION NOT NULL DEFAULT 0,
    expiry           DATE,
    strike           DOUBLE PRECISION NOT NULL DEFAULT 0,
    tick_size        DOUBLE PRECISION NOT NULL DEFAULT 0.05,
    lot_size         INTEGER NOT NULL DEFAULT 1,
    instrument_type  TEXT NOT NULL,
    segment          TEXT NOT NULL,
    exchange         TEXT NOT NULL,
    is_active        BOOLEAN NOT NULL DEFAULT TRUE,
    retired_at       TIMESTAMPTZ,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX instruments_symbol_idx ON instruments (exchange, tradingsymbol);
CREATE INDEX instruments_chain_idx ON instruments (name, expiry, instrument_type) WHERE is_active;
CREATE INDEX instruments_search_idx ON instruments (lower(tradingsymbol) text_pattern_ops);

-- Kite accounts; every secret column holds Fernet ciphertext, never plain text.
CREATE TABLE kite_accounts (
    account_id        TEXT PRIMARY KEY,
    api_key           TEXT NOT NULL,
    api_secret_enc    BYTEA,
    access_token_enc  BYTEA,
    user_id_enc       BYTEA,
    password_enc      BYTEA,
    totp_secret_enc   BYTEA,
    auto_login        BOOLEAN NOT NULL DEFAULT FALSE,
    token_state       TEXT NOT NULL DEFAULT 'unknown' CHECK (token_state IN ('unknown', 'valid', 'invalid')),
    token_updated_at  TIMESTAMPTZ,
    is_active         BOOLEAN NOT NULL DEFAULT TRUE,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- What the streamer should stream.
CREATE TABLE subscriptions (
    instrument_token   BIGINT PRIMARY KEY,
    requested_mode     TEXT NOT NULL DEFAULT 'FULL' CHECK (requested_mode IN ('FULL', 'QUOTE', 'LTP')),
    account_id         TEXT,
    status             TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'inactive')),
    source             TEXT NOT NULL DEFAULT 'api',
    deactivated_reason TEXT,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX subscriptions_status_idx ON subscriptions (status);

-- Order audit: one row per order job, one per attempt.
CREATE TABLE order_requests (
    job_id           TEXT PRIMARY KEY,
    kind             TEXT NOT NULL CHECK (kind IN ('place', 'modify', 'cancel')),
    idempotency_key  TEXT,
    account_id       TEXT NOT NULL,
    basket_id        TEXT,
    tag              TEXT,
    payload          JSONB NOT NULL,
    status           TEXT NOT NULL DEFAULT 'queued',
    kite_order_id    TEXT,
    kite_status      TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    result           JSONB,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX order_requests_created_idx ON order_requests (created_at DESC);
CREATE INDEX order_requests_kite_idx ON order_requests (kite_order_id);
CREATE INDEX order_requests_basket_idx ON order_requests (basket_id) WHERE basket_id IS NOT NULL;

CREATE TABLE order_attempts (
    id             BIGSERIAL PRIMARY KEY,
    job_id         TEXT NOT NULL REFERENCES order_requests (job_id) ON DELETE CASCADE,
    attempt        INTEGER NOT NULL,
    started_at     TIMESTAMPTZ NOT NULL,
    latency_ms     DOUBLE PRECISION,
    outcome        TEXT NOT NULL,
    error          TEXT,
    kite_order_id  TEXT
);
CREATE INDEX order_attempts_job_idx ON order_attempts (job_id);

-- Dead letters: jobs that failed for good, visible over HTTP and replayable.
CREATE TABLE dead_letters (
    id              BIGSERIAL PRIMARY KEY,
    job_id          TEXT NOT NULL UNIQUE,
    job_name        TEXT NOT NULL,
    payload         JSONB NOT NULL,
    reason          TEXT NOT NULL,
    errors          JSONB NOT NULL DEFAULT '[]',
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    replayed_job_id TEXT,
    replayed_at     TIMESTAMPTZ
);
