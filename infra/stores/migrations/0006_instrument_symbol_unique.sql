-- An order names its instrument by (exchange, tradingsymbol); among live instruments that pair must
-- name one row, or the web and the order job could validate an order against different rows.
-- Retired rows may share a symbol with a live one (a contract relisted under a new token), so the
-- rule holds for active rows only. Existing duplicates keep the most recently refreshed row
-- (then the highest token) and retire the rest.
UPDATE instruments i SET is_active = FALSE, retired_at = now(), updated_at = now()
FROM (
    SELECT instrument_token, row_number() OVER (
        PARTITION BY exchange, tradingsymbol ORDER BY updated_at DESC, instrument_token DESC) AS rank
    FROM instruments WHERE is_active
) ranked
WHERE ranked.instrument_token = i.instrument_token AND ranked.rank > 1;

DROP INDEX IF EXISTS instruments_symbol_idx;
CREATE UNIQUE INDEX instruments_symbol_idx ON instruments (exchange, tradingsymbol) WHERE is_active;
-- retired rows are still looked up by symbol (history of an expired contract)
CREATE INDEX instruments_symbol_all_idx ON instruments (exchange, tradingsymbol);
