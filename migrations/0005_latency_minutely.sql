-- Latency histograms per minute (total latency only, in the bins of `storage::rollups::bin`),
-- so that the series of the short ranges (`/api/analytics?range=1h` and `6h`, whose points are
-- minutes) can show p50/p95 per point as the hourly and daily histograms do for the longer
-- ranges. Filled from the rows already recorded when this migration runs (see migrate.rs);
-- pruned with the other rollups.
CREATE TABLE latency_minutely (
    minute INTEGER NOT NULL,
    bin    INTEGER NOT NULL,
    count  INTEGER NOT NULL,
    PRIMARY KEY (minute, bin)
) WITHOUT ROWID;
