-- OAuth accounts: when the access token was last refreshed (shown next to its expiry).
-- `refresh_token` and `expires_at` have been in `accounts` since 0001.
ALTER TABLE accounts ADD COLUMN refreshed_at INTEGER;
