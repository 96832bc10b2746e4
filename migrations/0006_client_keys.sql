-- Client keys (SPEC §11): who may use /v1, and their limits. The key itself is never stored:
-- only its SHA-256 (keys carry 256 random bits, so no slow hash is needed) and, for logs and
-- listings, the first eight characters after `ccf_`.
-- AUTOINCREMENT: request rows keep a key's id in `requests.client_key` after the key is
-- deleted, so an id is never given to another key.
CREATE TABLE client_keys (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    name           TEXT    NOT NULL UNIQUE,
    prefix         TEXT    NOT NULL,
    hash           BLOB    NOT NULL UNIQUE,
    status         TEXT    NOT NULL DEFAULT 'active',
    expires_at     INTEGER,
    rpm            INTEGER,
    max_concurrent INTEGER,
    budget_usd     REAL,
    budget_tokens  INTEGER,
    budget_period  TEXT    NOT NULL DEFAULT 'month',
    revision       INTEGER NOT NULL DEFAULT 1,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    last_used      INTEGER
);
