-- Why Kite refused an account's automated login for good (wrong password, TOTP secret or api_secret)
-- and when; cleared by a successful login or by storing new credentials. A refused login is not
-- tried again in a loop: Kite locks accounts after repeated wrong passwords.
ALTER TABLE kite_accounts
    ADD COLUMN login_error    TEXT,
    ADD COLUMN login_error_at TIMESTAMPTZ;
