-- The prompt cache re-created because a session moved (issue 16, docs/routing.md): a request
-- whose session left the account it was pinned to (a rate limit, a failover, `headroom` moving
-- it) writes its prompt cache again on the new account. Its cache-creation tokens are kept here;
-- NULL when the request did not move (and for requests recorded before this column). The
-- hourly and daily rollups count the moves and sum those tokens for analytics.
ALTER TABLE requests ADD COLUMN moved_cache_write_tokens INTEGER;
ALTER TABLE rollup_hourly ADD COLUMN moves INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_hourly ADD COLUMN moved_cache_write_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_daily ADD COLUMN moves INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_daily ADD COLUMN moved_cache_write_tokens INTEGER NOT NULL DEFAULT 0;
