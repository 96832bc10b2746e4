-- Rollups for analytics (SPEC §8, `ccflare-analytics`): running totals the writer keeps in the
-- same transaction as the request rows, so that `/api/analytics` reads a few thousand small rows
-- instead of scanning millions. Times are epoch milliseconds, bucket starts in UTC. The rollups
-- are filled from any rows already recorded when this migration runs (see migrate.rs).

-- Totals per hour and per day, once for all requests and once per group of each breakdown:
-- `dim` 0 is every request (`key` ''), 1 a model (`key` the model, '' for none), 2 an account
-- (`key` its id, '0' for none; `label` the name it was last recorded with in the bucket), 3 a
-- client key, 4 an error kind (`key` the error type, else `http_<status>`; failed requests
-- only). One narrow row per group keeps a 30-day breakdown at a few hundred rows. A range
-- reads whole days from the daily table and only the hours before its first whole day from the
-- hourly one, so its cost grows with days, not with rows. `bucket` is the start of the hour or
-- day.
CREATE TABLE rollup_hourly (
    bucket              INTEGER NOT NULL,
    dim                 INTEGER NOT NULL,
    key                 TEXT    NOT NULL,
    label               TEXT    NOT NULL,
    requests            INTEGER NOT NULL,
    successes           INTEGER NOT NULL,
    streamed            INTEGER NOT NULL,
    input_tokens        INTEGER NOT NULL,
    output_tokens       INTEGER NOT NULL,
    cache_read_tokens   INTEGER NOT NULL,
    cache_write_tokens  INTEGER NOT NULL,
    cost_usd            REAL    NOT NULL,
    cost_estimated      INTEGER NOT NULL,  -- requests whose cost is an estimate
    latency_ms_sum      INTEGER NOT NULL,
    ttfb_ms_sum         INTEGER NOT NULL,
    ttfb_count          INTEGER NOT NULL,
    -- Output tokens and generation time (latency - ttfb) of requests that had both, so that
    -- tokens per second over a range is a ratio of sums rather than a mean of ratios.
    generated_tokens    INTEGER NOT NULL,
    generating_ms_sum   INTEGER NOT NULL,
    PRIMARY KEY (bucket, dim, key)
) WITHOUT ROWID;

CREATE TABLE rollup_daily (
    bucket              INTEGER NOT NULL,
    dim                 INTEGER NOT NULL,
    key                 TEXT    NOT NULL,
    label               TEXT    NOT NULL,
    requests            INTEGER NOT NULL,
    successes           INTEGER NOT NULL,
    streamed            INTEGER NOT NULL,
    input_tokens        INTEGER NOT NULL,
    output_tokens       INTEGER NOT NULL,
    cache_read_tokens   INTEGER NOT NULL,
    cache_write_tokens  INTEGER NOT NULL,
    cost_usd            REAL    NOT NULL,
    cost_estimated      INTEGER NOT NULL,
    latency_ms_sum      INTEGER NOT NULL,
    ttfb_ms_sum         INTEGER NOT NULL,
    ttfb_count          INTEGER NOT NULL,
    generated_tokens    INTEGER NOT NULL,
    generating_ms_sum   INTEGER NOT NULL,
    PRIMARY KEY (bucket, dim, key)
) WITHOUT ROWID;

-- One row per minute with traffic: recent time series and "requests in the last minute/hour".
CREATE TABLE rollup_minutely (
    minute              INTEGER PRIMARY KEY,
    requests            INTEGER NOT NULL,
    successes           INTEGER NOT NULL,
    input_tokens        INTEGER NOT NULL,
    output_tokens       INTEGER NOT NULL,
    cache_read_tokens   INTEGER NOT NULL,
    cache_write_tokens  INTEGER NOT NULL,
    cost_usd            REAL    NOT NULL,
    latency_ms_sum      INTEGER NOT NULL
);

-- Latency histograms (metric 0: total latency, 1: time to first byte) per hour and per day, in
-- the bins of `storage::rollups::bin` (exact below 128 ms, then 16 bins per doubling), read
-- like the totals: whole days from the daily table, the hours before them from the hourly one.
CREATE TABLE latency_hourly (
    metric INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    bin    INTEGER NOT NULL,
    count  INTEGER NOT NULL,
    PRIMARY KEY (bucket, metric, bin)
) WITHOUT ROWID;

CREATE TABLE latency_daily (
    metric INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    bin    INTEGER NOT NULL,
    count  INTEGER NOT NULL,
    PRIMARY KEY (bucket, metric, bin)
) WITHOUT ROWID;

-- Listing requests by status code, newest first (`GET /api/requests?status=429`).
CREATE INDEX requests_status_started_at ON requests (status, started_at);
