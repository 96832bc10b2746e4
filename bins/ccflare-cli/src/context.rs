//! What every command starts from: the global flags, the configuration layers read the way the
//! server reads them (`ccflare-config`), the database, the clock and the output style.

use crate::output::Style;
use anyhow::{Context as _, Result};
use ccflare_core::config::{Layer, Settings};
use ccflare_core::{Clock, Millis, SystemClock};
use ccflare_storage::{Db, EncryptionKey};
use std::path::{Path, PathBuf};

/// The variable tests set to fix "now" (epoch milliseconds), so that "2 min ago" and "resets in
/// 4m 10s" in snapshots do not depend on when the test runs. Not shown in `--help`.
pub const NOW_VARIABLE: &str = "CCFLARE_NOW_MS";

/// Flags every command accepts. Their help stays short: clap here does not wrap, and every
/// line of `--help` fits 80 columns.
#[derive(Debug, Clone, clap::Args)]
pub struct GlobalArgs {
    /// Database, as for the server [env: DATABASE_URL]
    #[arg(
        long,
        global = true,
        value_name = "URL",
        help_heading = "Global options"
    )]
    pub database_url: Option<String>,

    /// Config file [env: CCFLARE_CONFIG]
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        help_heading = "Global options"
    )]
    pub config: Option<PathBuf>,

    /// Print JSON instead of a table
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,

    /// Show and group times in UTC, not local time
    #[arg(long, global = true, help_heading = "Global options")]
    pub utc: bool,
}

/// The configuration sources the CLI sees: its own flag (`--database-url`), the environment
/// (after `.env`), and the config file.
#[derive(Debug, Clone)]
pub struct Sources {
    pub flags: Layer,
    pub env: Layer,
    pub file: Layer,
    pub config_file: Option<PathBuf>,
}

pub struct Context {
    pub global: GlobalArgs,
    pub style: Style,
    now_override: Option<Millis>,
}

impl Context {
    pub fn new(global: GlobalArgs) -> Result<Context> {
        let now_override = match std::env::var(NOW_VARIABLE) {
            Ok(text) => Some(
                text.trim()
                    .parse()
                    .with_context(|| format!("{NOW_VARIABLE} must be epoch milliseconds"))?,
            ),
            Err(_) => None,
        };
        Ok(Context {
            global,
            style: Style::detect(),
            now_override,
        })
    }

    pub fn now(&self) -> Millis {
        self.now_override.unwrap_or_else(|| SystemClock.now_ms())
    }

    pub fn json(&self) -> bool {
        self.global.json
    }

    pub fn zone(&self) -> ccflare_analytics::stats::Zone {
        if self.global.utc {
            ccflare_analytics::stats::Zone::Utc
        } else {
            ccflare_analytics::stats::Zone::Local
        }
    }

    /// Reads the environment and the config file (`.env` was loaded at start).
    pub fn sources(&self) -> Result<Sources> {
        let mut flags = Layer::new();
        if let Some(url) = &self.global.database_url {
            flags.insert("database_url".to_owned(), url.clone());
        }
        let env = ccflare_config::env_layer()?;
        let (file, config_file) = match ccflare_config::config_file(self.global.config.as_deref())?
        {
            Some(found) => (found.layer, Some(found.path)),
            None => (Layer::new(), None),
        };
        Ok(Sources {
            flags,
            env,
            file,
            config_file,
        })
    }

    /// The database URL: flag > environment > config file > the default path. Only this option
    /// is read, so a bad value of another option (which `config show` and `doctor` report)
    /// does not stop `accounts list`.
    pub fn database_url(&self, sources: &Sources) -> Result<String> {
        let configured = [&sources.flags, &sources.env, &sources.file]
            .into_iter()
            .find_map(|layer| layer.get("database_url"))
            .map(|url| url.trim())
            .filter(|url| !url.is_empty());
        match configured {
            Some(url) => Ok(url.to_owned()),
            None => Ok(ccflare_config::default_database_path()?
                .display()
                .to_string()),
        }
    }

    /// Opens the database the server uses (creating it and applying migrations if needed, as
    /// the server does), with the encryption key the server would use. A locked or unreadable
    /// file is one clear error.
    pub async fn open_db(&self) -> Result<Db> {
        let sources = self.sources()?;
        let url = self.database_url(&sources)?;
        let key = self.encryption_key(&sources)?;
        Ok(Db::open(&url).await?.with_encryption_key(key))
    }

    /// The encryption key as the server finds it: `encryption_key` or `encryption_key_file`
    /// (flag > environment > config file; never stored), else systemd's credential. Only these
    /// options are read, as for the database URL.
    pub fn encryption_key(&self, sources: &Sources) -> Result<Option<EncryptionKey>> {
        let pick = |key: &str| {
            [&sources.flags, &sources.env, &sources.file]
                .into_iter()
                .find_map(|layer| layer.get(key))
                .cloned()
                .unwrap_or_default()
        };
        let setting = ccflare_core::config::encryption_key_setting(
            &pick("encryption_key"),
            &pick("encryption_key_file"),
        )?;
        let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
        Ok(EncryptionKey::configured(&setting, credentials.as_deref())?)
    }
}

/// Resolves every option with the stored settings at their rank, as a server started now
/// would.
pub fn resolve(sources: &Sources, stored: &Layer) -> Result<Settings> {
    Ok(Settings::resolve_with_database(
        &sources.flags,
        &sources.env,
        stored,
        &sources.file,
    )?)
}

/// Where a server started with `settings` answers on this machine: `http://host:port`, with
/// a wildcard address (`0.0.0.0`, `::`) replaced by loopback.
pub fn server_base(settings: &Settings) -> String {
    let host = match settings.host.as_str() {
        "0.0.0.0" => "127.0.0.1".to_owned(),
        "::" | "[::]" => "[::1]".to_owned(),
        host if host.contains(':') && !host.starts_with('[') => format!("[{host}]"),
        host => host.to_owned(),
    };
    format!("http://{host}:{}", settings.port)
}

/// A path for messages, as given.
pub fn show_path(path: &Path) -> String {
    path.display().to_string()
}
