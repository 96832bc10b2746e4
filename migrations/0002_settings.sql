-- Settings changed at run time (`ccflare-cli config set`, `PATCH /api/config`). They rank
-- between the environment and the config file: flag > env > these > config file > default.
-- Keys are the config-file keys of core::config::OPTIONS; values are text as in the file.
CREATE TABLE settings (
    key        TEXT    PRIMARY KEY,
    value      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
);
