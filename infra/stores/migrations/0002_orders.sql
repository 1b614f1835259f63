-- Order jobs: timing and Kite's view of each order on the audit row, baskets, richer dead letters.
ALTER TABLE order_requests
    ADD COLUMN started_at      TIMESTAMPTZ,
    ADD COLUMN finished_at     TIMESTAMPTZ,
    ADD COLUMN kite_updated_at TIMESTAMPTZ,
    ADD COLUMN status_message  TEXT,
    ADD COLUMN filled_quantity INTEGER,
    ADD COLUMN average_price   DOUBLE PRECISION;
CREATE INDEX order_requests_tag_idx ON order_requests (tag);
CREATE INDEX order_requests_open_idx ON order_requests (account_id)
    WHERE kite_order_id IS NOT NULL AND (kite_status IS NULL OR kite_status NOT IN ('COMPLETE', 'REJECTED', 'CANCELLED'));

-- A basket: orders submitted together. Each leg is its own place job; the row lists their ids.
CREATE TABLE order_baskets (
    basket_id       TEXT PRIMARY KEY,
    account_id      TEXT,
    idempotency_key TEXT,
    leg_job_ids     TEXT[] NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

ALTER TABLE dead_letters
    ADD COLUMN account_id   TEXT,
    ADD COLUMN attempts     INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN replay_count INTEGER NOT NULL DEFAULT 0;
CREATE INDEX dead_letters_created_idx ON dead_letters (created_at DESC);
