-- Mutual-fund writes (orders and SIPs) are audited like order jobs, under kinds of their own.
ALTER TABLE order_requests DROP CONSTRAINT IF EXISTS order_requests_kind_check;
ALTER TABLE order_requests ADD CONSTRAINT order_requests_kind_check
    CHECK (kind IN ('place', 'modify', 'cancel', 'gtt_place', 'gtt_modify', 'gtt_delete',
                    'mf_place', 'mf_cancel', 'sip_place', 'sip_modify', 'sip_cancel'));
