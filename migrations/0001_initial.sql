-- Accounts: one row per upstream credential. `revision` grows with every change a person makes
-- (add, re-add, pause, resume, rename, priority) so a running server can tell such a change from
-- its own state writes (cooldowns, counters), which never touch it.
CREATE TABLE accounts (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    name               TEXT    NOT NULL UNIQUE,
    kind               TEXT    NOT NULL CHECK (kind IN ('api_key', 'oauth')),
    credential         TEXT    NOT NULL UNIQUE,
    refresh_token      TEXT,
    expires_at         INTEGER,
    priority           INTEGER NOT NULL DEFAULT 0,
    weight             INTEGER NOT NULL DEFAULT 1,
    status             TEXT    NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused', 'invalid')),
    revision           INTEGER NOT NULL DEFAULT 1,
    rate_limited_until INTEGER,
    overloaded_until   INTEGER,
    last_ratelimit     TEXT,
    request_count      INTEGER NOT NULL DEFAULT 0,
    last_used          INTEGER,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);

-- Requests: one row per proxied request (SPEC §8). Times are epoch milliseconds.
CREATE TABLE requests (
    id                       TEXT    PRIMARY KEY,
    started_at               INTEGER NOT NULL,
    method                   TEXT    NOT NULL,
    path                     TEXT    NOT NULL,
    model                    TEXT,
    account_id               INTEGER,
    account_name             TEXT,
    status                   INTEGER NOT NULL,
    success                  INTEGER NOT NULL,
    error_type               TEXT,
    error_message            TEXT,
    attempts                 INTEGER NOT NULL,
    attempt_failures         TEXT,
    latency_ms               INTEGER NOT NULL,
    ttfb_ms                  INTEGER,
    streamed                 INTEGER NOT NULL,
    input_tokens             INTEGER NOT NULL DEFAULT 0,
    output_tokens            INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens        INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens       INTEGER NOT NULL DEFAULT 0,
    cache_write_5m_tokens    INTEGER NOT NULL DEFAULT 0,
    cache_write_1h_tokens    INTEGER NOT NULL DEFAULT 0,
    usage_incomplete         INTEGER NOT NULL DEFAULT 0,
    cost_usd                 REAL    NOT NULL DEFAULT 0,
    cost_estimated           INTEGER NOT NULL DEFAULT 0,
    output_tokens_per_second REAL,
    session_key              TEXT,
    client_key               TEXT
);

CREATE INDEX requests_started_at ON requests (started_at);
CREATE INDEX requests_account_started_at ON requests (account_id, started_at);
CREATE INDEX requests_model_started_at ON requests (model, started_at);
