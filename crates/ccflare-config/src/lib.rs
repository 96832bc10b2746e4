//! Reading ccflare's configuration from the places outside the command line: a `.env` file in
//! the working directory, the environment, the TOML config file, and the platform's default
//! paths. Both binaries that need a configuration (`ccflare-server`, `ccflare-cli`) read it
//! through here, so they agree on every path and every rule; each keeps its own flags.
//!
//! The result is plain [`Layer`]s that `ccflare_core::config::Settings::resolve_with_database`
//! merges (flag > environment > database > config file > default). The functions that read
//! the process environment have a `_with` twin taking a lookup function, which is what the
//! unit tests use (setting process variables in a test is unsound while other threads run).

mod error;
mod secrets;

pub use error::ConfigError;
pub use secrets::{CREDENTIALS_DIRECTORY, read_secret, read_secret_files};

use ccflare_core::config::{Layer, OPTIONS, Settings};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The variable that names the config file.
pub const CONFIG_ENV: &str = "CCFLARE_CONFIG";

/// Loads `.env` from the working directory into the process environment, without replacing
/// variables already set (the usual dotenv rule). A missing file is fine.
pub fn load_dotenv() -> Result<(), ConfigError> {
    match dotenvy::dotenv() {
        Ok(_) => Ok(()),
        Err(error) if error.not_found() => Ok(()),
        Err(dotenvy::Error::LineParse(line, at)) => Err(ConfigError::DotenvLine {
            variable: dotenv_variable(&line),
            at,
        }),
        Err(error) => Err(ConfigError::Dotenv {
            reason: error.to_string(),
        }),
    }
}

/// The variable a `.env` line sets, for an error that must not show the line itself (its value
/// may be a key): the name before `=` when it is one, else a neutral description.
fn dotenv_variable(line: &str) -> String {
    let name = line
        .trim_start()
        .trim_start_matches("export ")
        .split('=')
        .next()
        .unwrap_or("")
        .trim();
    let is_name = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && line.contains('=');
    if is_name {
        name.to_owned()
    } else {
        "a variable".to_owned()
    }
}

/// The environment layer: every option of `core::config::OPTIONS` whose variable is set, and
/// the secrets given as files (`<ENV>_FILE`, `$CREDENTIALS_DIRECTORY/<key>`).
pub fn env_layer() -> Result<Layer, ConfigError> {
    env_layer_with(|name| std::env::var_os(name))
}

/// [`env_layer`] over any lookup.
pub fn env_layer_with(lookup: impl Fn(&str) -> Option<OsString>) -> Result<Layer, ConfigError> {
    let mut layer = Layer::new();
    for spec in OPTIONS {
        if let Some(value) = lookup(spec.env) {
            let value = value
                .into_string()
                .map_err(|_| ConfigError::NotUnicode { variable: spec.env })?;
            layer.insert(spec.key.to_owned(), value);
        }
    }
    secrets::env_secret_files(&mut layer, &lookup)?;
    Ok(layer)
}

/// A config file that was found and read.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub layer: Layer,
}

/// Finds and reads the config file: `explicit` (a `--config` flag), else `CCFLARE_CONFIG`,
/// else [`default_config_path`] when that file exists. A file named explicitly (by flag or
/// variable) must exist; the default one is optional.
pub fn config_file(explicit: Option<&Path>) -> Result<Option<ConfigFile>, ConfigError> {
    config_file_with(explicit, |name| std::env::var_os(name))
}

/// [`config_file`] over any lookup.
pub fn config_file_with(
    explicit: Option<&Path>,
    lookup: impl Fn(&str) -> Option<OsString>,
) -> Result<Option<ConfigFile>, ConfigError> {
    let named = explicit
        .map(Path::to_path_buf)
        .or_else(|| lookup(CONFIG_ENV).map(PathBuf::from));
    let path = match named {
        Some(path) => path,
        None => match default_config_path_with(&lookup).filter(|p| p.exists()) {
            Some(path) => path,
            None => return Ok(None),
        },
    };
    let layer = read_config_file(&path)?;
    Ok(Some(ConfigFile { path, layer }))
}

/// Reads a TOML config file into a layer. Keys are the option keys (`port`, `lb_strategy`);
/// numbers and booleans become their text, and a list of strings (`api_keys = ["…", "…"]`)
/// becomes one comma-separated value. Unknown keys are kept: resolving rejects them by name.
/// A secret's `<key>_file` (a path, relative to the config file's directory) is replaced by
/// the secret it holds.
pub fn read_config_file(path: &Path) -> Result<Layer, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    let mut layer = parse_config_file(path, &text)?;
    read_secret_files(&mut layer, path.parent(), |variant, file| {
        let key = if file {
            &variant.key
        } else {
            variant.option.key
        };
        format!("{key} in {}", path.display())
    })?;
    Ok(layer)
}

/// [`read_config_file`] for text already read from `path` (which errors name).
pub fn parse_config_file(path: &Path, text: &str) -> Result<Layer, ConfigError> {
    let table: toml::Table = text.parse().map_err(|source| ConfigError::ParseFile {
        path: path.to_owned(),
        source,
    })?;
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
                    other => Err(ConfigError::NotAStringList {
                        path: path.to_owned(),
                        key: key.clone(),
                        found: other.type_str(),
                    }),
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            other => {
                return Err(ConfigError::UnsupportedValue {
                    path: path.to_owned(),
                    key,
                    found: other.type_str(),
                });
            }
        };
        layer.insert(key, text);
    }
    Ok(layer)
}

fn xdg_with(
    lookup: &impl Fn(&str) -> Option<OsString>,
    variable: &str,
    fallback: &str,
) -> Option<PathBuf> {
    let set = |name: &str| lookup(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    set(variable).or_else(|| set("HOME").map(|home| home.join(fallback)))
}

/// `$XDG_CONFIG_HOME/ccflare/config.toml`, or `~/.config/ccflare/config.toml`.
pub fn default_config_path() -> Option<PathBuf> {
    default_config_path_with(&|name: &str| std::env::var_os(name))
}

fn default_config_path_with(lookup: &impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    xdg_with(lookup, "XDG_CONFIG_HOME", ".config").map(|d| d.join("ccflare").join("config.toml"))
}

/// `$XDG_DATA_HOME/ccflare/ccflare.db`, or `~/.local/share/ccflare/ccflare.db`.
pub fn default_database_path() -> Result<PathBuf, ConfigError> {
    default_database_path_with(|name| std::env::var_os(name))
}

/// [`default_database_path`] over any lookup.
pub fn default_database_path_with(
    lookup: impl Fn(&str) -> Option<OsString>,
) -> Result<PathBuf, ConfigError> {
    xdg_with(&lookup, "XDG_DATA_HOME", ".local/share")
        .map(|dir| dir.join("ccflare").join("ccflare.db"))
        .ok_or(ConfigError::NoDataDirectory)
}

/// The database to open: the configured `database_url`, else the default path.
pub fn database_url(settings: &Settings) -> Result<String, ConfigError> {
    match &settings.database_url {
        Some(url) => Ok(url.clone()),
        None => Ok(default_database_path()?.display().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + use<> {
        let map: BTreeMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn a_bad_dotenv_line_is_named_by_its_variable_never_shown() {
        let key = "sk-ant-api03-Zx81kQ_pL0vN3mT7yR2wS9uB4cD6eF8gH1iJ5kL7mN9oP2qR4sT6uV8wX0yZ-wxyz";
        for (line, variable) in [
            (format!("CLAUDE_API_KEYS='{key}"), "CLAUDE_API_KEYS"),
            (format!("export CLAUDE_API_KEYS=\"{key}"), "CLAUDE_API_KEYS"),
            (format!("{key} oops"), "a variable"),
        ] {
            let error = ConfigError::DotenvLine {
                variable: dotenv_variable(&line),
                at: 3,
            }
            .to_string();
            assert!(error.contains(variable), "{error}");
            assert!(!error.contains("Zx81kQ"), "{error}");
        }
    }

    #[test]
    fn the_environment_layer_holds_only_options_that_are_set() {
        let layer = env_layer_with(env(&[
            ("PORT", "9000"),
            ("LB_STRATEGY", "priority"),
            ("UNRELATED", "x"),
        ]))
        .unwrap();
        assert_eq!(
            layer.into_iter().collect::<Vec<_>>(),
            [
                ("lb_strategy".to_owned(), "priority".to_owned()),
                ("port".to_owned(), "9000".to_owned())
            ]
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_variable_that_is_not_utf8_is_named() {
        use std::os::unix::ffi::OsStringExt;
        let err = env_layer_with(|name| (name == "HOST").then(|| OsString::from_vec(vec![0xff])))
            .unwrap_err();
        assert_eq!(err.to_string(), "HOST is not valid UTF-8");
    }

    #[test]
    fn default_paths_follow_xdg_then_home() {
        let with_xdg = env(&[("XDG_DATA_HOME", "/data"), ("HOME", "/home/u")]);
        assert_eq!(
            default_database_path_with(with_xdg).unwrap(),
            PathBuf::from("/data/ccflare/ccflare.db")
        );
        let home_only = env(&[("HOME", "/home/u"), ("XDG_DATA_HOME", "")]);
        assert_eq!(
            default_database_path_with(home_only).unwrap(),
            PathBuf::from("/home/u/.local/share/ccflare/ccflare.db")
        );
        assert!(matches!(
            default_database_path_with(env(&[])),
            Err(ConfigError::NoDataDirectory)
        ));
        assert_eq!(
            default_config_path_with(&env(&[("HOME", "/home/u")])),
            Some(PathBuf::from("/home/u/.config/ccflare/config.toml"))
        );
    }

    #[test]
    fn config_files_read_numbers_strings_and_lists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "port = 9000\nlb_strategy = \"priority\"\napi_keys = [\"sk-ant-a\", \"sk-ant-b\"]\n",
        )
        .unwrap();
        let found = config_file_with(None, env(&[(CONFIG_ENV, path.to_str().unwrap())]))
            .unwrap()
            .unwrap();
        assert_eq!(found.path, path);
        assert_eq!(found.layer["port"], "9000");
        assert_eq!(found.layer["lb_strategy"], "priority");
        assert_eq!(found.layer["api_keys"], "sk-ant-a,sk-ant-b");
    }

    #[test]
    fn an_explicit_file_must_exist_and_the_default_one_need_not() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().to_str().unwrap();
        assert!(
            config_file_with(None, env(&[("HOME", home)]))
                .unwrap()
                .is_none()
        );
        let missing = dir.path().join("missing.toml");
        let err = config_file_with(Some(&missing), env(&[])).unwrap_err();
        assert!(err.to_string().starts_with("reading config file "), "{err}");

        let default = dir.path().join(".config/ccflare/config.toml");
        std::fs::create_dir_all(default.parent().unwrap()).unwrap();
        std::fs::write(&default, "host = \"::1\"\n").unwrap();
        let found = config_file_with(None, env(&[("HOME", home)]))
            .unwrap()
            .unwrap();
        assert_eq!((found.path, &found.layer["host"][..]), (default, "::1"));
    }

    #[test]
    fn unusable_file_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "api_keys = [1, 2]\n").unwrap();
        let err = read_config_file(&path).unwrap_err().to_string();
        assert!(
            err.ends_with("api_keys must list strings, found integer"),
            "{err}"
        );
        std::fs::write(&path, "[port]\nx = 1\n").unwrap();
        let err = read_config_file(&path).unwrap_err().to_string();
        assert!(
            err.ends_with("port has an unsupported table value"),
            "{err}"
        );
        std::fs::write(&path, "port = \n").unwrap();
        assert!(matches!(
            read_config_file(&path),
            Err(ConfigError::ParseFile { .. })
        ));
    }

    mod properties {
        use super::*;
        use ccflare_core::config::Settings;
        use proptest::prelude::*;

        fn path() -> &'static Path {
            Path::new("/etc/ccflare/config.toml")
        }

        /// A TOML basic string holding `text`: quotes, backslashes and control characters
        /// escaped.
        fn toml_string(text: &str) -> String {
            let mut out = String::from('"');
            for c in text.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }

        proptest! {
            #[test]
            fn any_text_reads_or_fails_without_panicking(text in "\\PC{0,200}") {
                if let Ok(layer) = parse_config_file(path(), &text) {
                    // Whatever was read resolves or is refused by name, never a panic.
                    let _ = Settings::resolve(&Layer::new(), &Layer::new(), &layer);
                }
            }

            #[test]
            fn toml_shaped_text_reads_or_fails_without_panicking(
                lines in proptest::collection::vec(
                    (
                        "[a-z_]{1,16}",
                        prop_oneof![
                            any::<i64>().prop_map(|n| n.to_string()),
                            any::<f64>().prop_map(|f| format!("{f:?}")),
                            "(true|false|inf|nan|-inf|\\[\\]|\\{\\}|\\[1, \"a\"\\]|\\[\"a\", \"b\"\\])",
                            "\\PC{0,20}".prop_map(|s| toml_string(&s)),
                            "\\PC{0,20}",
                        ],
                    ),
                    0..8,
                ),
            ) {
                let text: String = lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
                if let Ok(layer) = parse_config_file(path(), &text) {
                    let _ = Settings::resolve(&Layer::new(), &Layer::new(), &layer);
                }
            }

            #[test]
            fn a_written_file_reads_back_as_the_same_settings_as_the_environment(
                port in any::<u16>(),
                timeout in any::<i64>().prop_map(|n| n.unsigned_abs() / 2),
                strategy in proptest::sample::select(&ccflare_core::config::Strategy::ALL[..]),
                host in "[a-z]{1,10}(\\.[a-z]{1,5})?",
                keys in proptest::collection::vec("sk-ant-[A-Za-z0-9_-]{13,40}", 0..3),
                scopes in "[a-z:_]{1,12}( [a-z:_]{1,12}){0,3}",
                spacing in "[ \t]{0,2}",
            ) {
                // Numbers as TOML integers, strings quoted, the keys as a list.
                let list: Vec<String> = keys.iter().map(|k| toml_string(k)).collect();
                let text = format!(
                    "port{spacing}={spacing}{port}\nsession_timeout = {timeout}\n\
                     lb_strategy = {}\nhost = {}\napi_keys = [{}]\noauth_scopes = {}\n",
                    toml_string(strategy.as_str()),
                    toml_string(&host),
                    list.join(", "),
                    toml_string(&scopes),
                );
                let file = parse_config_file(path(), &text)
                    .map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
                let env: Layer = [
                    ("port", port.to_string()),
                    ("session_timeout", timeout.to_string()),
                    ("lb_strategy", strategy.as_str().to_owned()),
                    ("host", host.clone()),
                    ("api_keys", keys.join(",")),
                    ("oauth_scopes", scopes.clone()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
                prop_assert_eq!(&file, &env);
                let from_file = Settings::resolve(&Layer::new(), &Layer::new(), &file).unwrap();
                let from_env = Settings::resolve(&Layer::new(), &env, &Layer::new()).unwrap();
                prop_assert_eq!(from_file.port, port);
                prop_assert_eq!(from_file.session_timeout_s, timeout);
                prop_assert_eq!(from_file.strategy, strategy);
                prop_assert_eq!(&from_file.host, &host);
                prop_assert_eq!(&from_file.api_keys, &keys);
                prop_assert_eq!(&from_file.oauth.scopes, &scopes);
                // Everything but where the values came from is the same.
                let (mut from_file, mut from_env) = (from_file, from_env);
                from_file.sources.clear();
                from_env.sources.clear();
                prop_assert_eq!(from_file, from_env);
            }
        }
    }
}
