//! The server's command line: flags generated from `core::config::OPTIONS` (so a new option
//! needs no change here), merged with what `ccflare-config` reads — environment after `.env`,
//! the TOML config file — into the layers `ccflare_core::config::Settings::resolve` merges.

use ccflare_core::config::{Layer, OPTIONS, Settings};
use clap::{Arg, ArgAction, Command};
use std::ffi::OsString;
use std::path::PathBuf;

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

impl From<ccflare_config::ConfigError> for LoadError {
    fn from(error: ccflare_config::ConfigError) -> Self {
        LoadError::Other(error.into())
    }
}

fn command() -> Command {
    let mut command = Command::new("ccflare-server")
        .version(env!("CARGO_PKG_VERSION"))
        .about("A proxy for the Anthropic API that spreads requests over a pool of Claude accounts")
        .after_help(
            "Every option can also be set in the environment (shown in brackets), in a .env file \
             in the working directory, or in the config file. Precedence: flag > environment > \
             settings stored in the database (ccflare-cli config set) > config file > default.\n\nExamples:\n  ccflare-server\n  \
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
    ccflare_config::load_dotenv()?;

    let mut flags = Layer::new();
    for spec in OPTIONS {
        if let Some(value) = matches.get_one::<String>(spec.key) {
            flags.insert(spec.key.to_owned(), value.clone());
        }
    }
    let env = ccflare_config::env_layer()?;
    let explicit = matches.get_one::<String>("config").map(PathBuf::from);
    let (file, config_file) = match ccflare_config::config_file(explicit.as_deref())? {
        Some(found) => (found.layer, Some(found.path)),
        None => (Layer::new(), None),
    };
    let settings = Settings::resolve(&flags, &env, &file).map_err(anyhow::Error::from)?;
    let layers = ccflare_proxy::ConfigLayers { flags, env, file };
    Ok(Loaded {
        settings,
        layers,
        config_file,
    })
}
