//! The servers' command line: flags generated from `core::config::OPTIONS` (so a new option
//! needs no change here), merged with what `ccflare-config` reads — environment after `.env`,
//! the TOML config file — into the layers `ccflare_core::config::Settings::resolve` merges.
//! `ccflare-server` and `ccflare` both start from [`command`]; `ccflare` adds its own flags
//! to it, so the two take the same options in the same way.

use ccflare_core::CoreError;
use ccflare_core::config::{Layer, OPTIONS, Settings};
use clap::{Arg, ArgAction, ArgMatches, Command};
use std::ffi::OsString;
use std::path::PathBuf;

/// The configuration a server starts from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Resolved without the database's stored settings (the database is not open yet).
    pub settings: Settings,
    pub layers: ccflare_proxy::ConfigLayers,
    pub config_file: Option<PathBuf>,
}

impl Loaded {
    /// The configuration of these layers, read from nowhere else (tests use it: no `.env`,
    /// environment or config file of the machine running them can reach it).
    pub fn from_layers(flags: Layer, env: Layer, file: Layer) -> Result<Loaded, CoreError> {
        let settings = Settings::resolve(&flags, &env, &file)?;
        Ok(Loaded {
            settings,
            layers: ccflare_proxy::ConfigLayers { flags, env, file },
            config_file: None,
        })
    }
}

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// `--help`, `--version` and unknown flags: the binary lets clap print and exit.
    #[error(transparent)]
    Clap(#[from] clap::Error),
    #[error(transparent)]
    Config(#[from] ccflare_config::ConfigError),
    #[error(transparent)]
    Settings(#[from] CoreError),
}

/// The command line of a server binary named `name`: `--config` and one flag per option.
pub fn command(name: &'static str, about: &'static str) -> Command {
    let mut command = Command::new(name)
        .version(crate::version())
        .about(about)
        .after_help(format!(
            "Every option can also be set in the environment (shown in brackets), in a .env file \
             in the working directory, or in the config file. Precedence: flag > environment > \
             settings stored in the database (ccflare-cli config set) > config file > default. \
             Secrets can be files: --admin-key-file, CCFLARE_ADMIN_KEY_FILE, admin_key_file in \
             the config file, or the systemd credential admin_key (likewise api_keys).\n\nExamples:\n  {name}\n  \
             CLAUDE_API_KEYS=sk-ant-api03-… {name} --port 9000\n  \
             {name} --database-url file:./ccflare.db --strategy round-robin",
        ))
        .arg(
            Arg::new("config").long("config").value_name("PATH").global(true).help(
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
                // Subcommands (`ccflare-server healthcheck`) take the same options.
                .global(true)
                .action(ArgAction::Set)
                .help(help),
        );
        if let Some(variant) = spec.file_variant() {
            command = command.arg(
                Arg::new(variant.key)
                    .long(variant.flag)
                    .value_name("PATH")
                    .action(ArgAction::Set)
                    .global(true)
                    .help(format!(
                        "file holding --{} (one trailing newline ignored) [{}]",
                        spec.flag, variant.env
                    )),
            );
        }
    }
    command
}

/// Parses `args` with `command` (from [`command`], perhaps with more flags), then reads `.env`,
/// the environment and the config file. Returns the configuration and the parsed flags, for
/// the binary's own.
pub fn load(
    command: Command,
    args: impl IntoIterator<Item = OsString>,
) -> Result<(Loaded, ArgMatches), LoadError> {
    let matches = command.try_get_matches_from(args)?;
    ccflare_config::load_dotenv()?;

    let mut flags = Layer::new();
    for spec in OPTIONS {
        if let Some(value) = matches.get_one::<String>(spec.key) {
            flags.insert(spec.key.to_owned(), value.clone());
        }
    }
    for variant in ccflare_core::config::file_variants() {
        if let Some(path) = matches.get_one::<String>(&variant.key) {
            flags.insert(variant.key.clone(), path.clone());
        }
    }
    ccflare_config::read_secret_files(&mut flags, None, |variant, file| {
        if file {
            format!("--{}", variant.flag)
        } else {
            format!("--{}", variant.option.flag)
        }
    })?;
    let env = ccflare_config::env_layer()?;
    let explicit = matches.get_one::<String>("config").map(PathBuf::from);
    let (file, config_file) = match ccflare_config::config_file(explicit.as_deref())? {
        Some(found) => (found.layer, Some(found.path)),
        None => (Layer::new(), None),
    };
    let settings = Settings::resolve(&flags, &env, &file)?;
    let layers = ccflare_proxy::ConfigLayers { flags, env, file };
    Ok((
        Loaded {
            settings,
            layers,
            config_file,
        },
        matches,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_option_is_a_flag_and_a_binary_may_add_its_own() {
        let command = command("ccflare", "about")
            .arg(Arg::new("serve").long("serve").action(ArgAction::SetTrue));
        let matches = command
            .try_get_matches_from(["ccflare", "--serve", "--port", "9000", "--strategy", "x"])
            .unwrap();
        assert!(matches.get_flag("serve"));
        assert_eq!(matches.get_one::<String>("port").unwrap(), "9000");
        assert_eq!(matches.get_one::<String>("lb_strategy").unwrap(), "x");
        let help = super::command("ccflare-server", "about").render_long_help();
        for spec in OPTIONS {
            assert!(
                help.to_string().contains(&format!("--{}", spec.flag)),
                "{}",
                spec.flag
            );
        }
    }
}
