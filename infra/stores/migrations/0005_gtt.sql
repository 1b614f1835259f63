-- GTT writes are audited like order jobs: their own kinds, and the Kite trigger id they act on.
ALTER TABLE order_requests DROP CONSTRAINT IF EXISTS order_requests_kind_check;
ALTER TABLE order_requests ADD CONSTRAINT order_requests_kind_check
    CHECK (kind IN ('place', 'modify', 'cancel', 'gtt_place', 'gtt_modify', 'gtt_delete'));
ALTER TABLE order_requests ADD COLUMN gtt_id BIGINT;
CREATE INDEX order_requests_gtt_idx ON order_requests (gtt_id) WHERE gtt_id IS NOT NULL;
