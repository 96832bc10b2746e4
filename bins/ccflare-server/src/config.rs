//! Reading configuration from its four places — flags, environment (after loading `.env`), the
//! TOML config file, defaults — into the layers `ccflare_core::config::Settings::resolve`
//! merges. The flags are generated from the same option table, so a new option needs no
//! change here.

use anyhow::{Context, Result, bail};
use ccflare_core::config::{Layer, OPTIONS, Settings};
use clap::{Arg, ArgAction, Command};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub struct Loaded {
    /// Resolved without the database's stored settings (the database is not open yet).
    pub settings: Settings,
    pub layers: ccflare_proxy::ConfigLayers,
    pub config_file: Option<PathBuf>,
}

pub enum LoadError {
    /// `--help`, `--version` and unknown flags: clap prints and exits itself.
    Clap(clap::Error),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for LoadError {
    fn from(error: anyhow::Error) -> Self {
        LoadError::Other(error)
    }
}

fn command() -> Command {
    let mut command = Command::new("ccflare-server")
        .version(env!("CARGO_PKG_VERSION"))
        .about("A proxy for the Anthropic API that spreads requests over a pool of Claude accounts")
        .after_help(
            "Every option can also be set in the environment (shown in brackets), in a .env file \
             in the working directory, or in the config file. Precedence: flag > environment > \
             config file > default.\n\nExamples:\n  ccflare-server\n  \
             CLAUDE_API_KEYS=sk-ant-api03-… ccflare-server --port 9000\n  \
             ccflare-server --database-url file:./ccflare.db --strategy round-robin",
        )
        .arg(
            Arg::new("config").long("config").value_name("PATH").help(
                "config file [CCFLARE_CONFIG] (default: $XDG_CONFIG_HOME/ccflare/config.toml)",
            ),
        );
    for spec in OPTIONS {
        let help = if spec.default.is_empty() {
            format!("{} [{}]", spec.help, spec.env)
        } else {
            format!("{} [{}] (default: {})", spec.help, spec.env, spec.default)
        };
        command = command.arg(
            Arg::new(spec.key)
                .long(spec.flag)
                .value_name("VALUE")
                .action(ArgAction::Set)
                .help(help),
        );
    }
    command
}

pub fn load(args: impl IntoIterator<Item = OsString>) -> Result<Loaded, LoadError> {
    let matches = command()
        .try_get_matches_from(args)
        .map_err(LoadError::Clap)?;
    load_dotenv()?;

    let mut flags = Layer::new();
    let mut env = Layer::new();
    for spec in OPTIONS {
        if let Some(value) = matches.get_one::<String>(spec.key) {
            flags.insert(spec.key.to_owned(), value.clone());
        }
        match std::env::var(spec.env) {
            Ok(value) => {
                env.insert(spec.key.to_owned(), value);
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(anyhow::anyhow!("{} is not valid UTF-8", spec.env).into());
            }
            Err(std::env::VarError::NotPresent) => {}
        }
    }

    let explicit = matches
        .get_one::<String>("config")
        .cloned()
        .or_else(|| std::env::var("CCFLARE_CONFIG").ok())
        .map(PathBuf::from);
    let (file, config_file) = match explicit {
        // A file named explicitly must exist.
        Some(path) => (read_config_file(&path)?, Some(path)),
        None => match default_config_path().filter(|p| p.exists()) {
            Some(path) => (read_config_file(&path)?, Some(path)),
            None => (Layer::new(), None),
        },
    };
    let settings = Settings::resolve(&flags, &env, &file).map_err(anyhow::Error::from)?;
    let layers = ccflare_proxy::ConfigLayers { flags, env, file };
    Ok(Loaded {
        settings,
        layers,
        config_file,
    })
}

/// Loads `.env` from the working directory, without overriding variables already set.
fn load_dotenv() -> Result<()> {
    match dotenvy::dotenv() {
        Ok(_) => Ok(()),
        Err(error) if error.not_found() => Ok(()),
        Err(dotenvy::Error::LineParse(line, at)) => {
            bail!("cannot read .env: bad line {line:?} at character {at}")
        }
        Err(error) => bail!("cannot read .env: {error}"),
    }
}

fn read_config_file(path: &Path) -> Result<Layer> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("parsing config file {}", path.display()))?;
    let mut layer = Layer::new();
    for (key, value) in table {
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    toml::Value::String(s) => Ok(s),
                    other => Err(anyhow::anyhow!(
                        "config file {}: {key} must list strings, found {}",
                        path.display(),
                        other.type_str()
                    )),
                })
                .collect::<Result<Vec<_>>>()?
                .join(","),
            other => bail!(
                "config file {}: {key} has an unsupported {} value",
                path.display(),
                other.type_str()
            ),
        };
        layer.insert(key, text);
    }
    Ok(layer)
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

fn xdg(var: &str, fallback: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(fallback)))
}

fn default_config_path() -> Option<PathBuf> {
    xdg("XDG_CONFIG_HOME", ".config").map(|d| d.join("ccflare").join("config.toml"))
}

/// `$XDG_DATA_HOME/ccflare/ccflare.db`, or `~/.local/share/ccflare/ccflare.db`.
pub fn default_database_path() -> Result<PathBuf> {
    match xdg("XDG_DATA_HOME", ".local/share") {
        Some(dir) => Ok(dir.join("ccflare").join("ccflare.db")),
        None => bail!("cannot find a data directory: set DATABASE_URL, XDG_DATA_HOME or HOME"),
    }
}
