-- Secrets at rest (docs/security.md): with an encryption key configured, `credential` and
-- `refresh_token` hold `enc:v1:…` values, and two encryptions of one key never read alike. A key
-- is found, and kept from being added twice, by the SHA-256 of its plaintext. Rows already
-- stored get theirs from Rust code when this migration runs (migrate.rs), in its transaction.
ALTER TABLE accounts ADD COLUMN credential_hash TEXT;
CREATE UNIQUE INDEX accounts_credential_hash ON accounts (credential_hash);
