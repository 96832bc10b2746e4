//! Secrets from files (`ccflare_core::config::FileVariant`): `<ENV>_FILE`, `--<flag>-file`,
//! `<key>_file` in the config file, and systemd's `$CREDENTIALS_DIRECTORY/<key>`
//! (`LoadCredential=`). Each layer's file variants are replaced by the values read, so
//! resolving sees only options. A file that cannot be read is an error naming the variant and
//! the path, never the contents.

use crate::ConfigError;
use ccflare_core::config::{FileVariant, Layer, file_variants, secret_file_value};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The variable systemd sets to the directory of a unit's credentials.
pub const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

/// Reads the secret in `path`; `named` is how the user named the file (for the error).
pub fn read_secret(named: &str, path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
        named: named.to_owned(),
        path: path.to_owned(),
        source,
    })?;
    Ok(secret_file_value(&text).to_owned())
}

/// Replaces every file variant in `layer` (keyed by its config-file key) by the option's value
/// read from the file; relative paths are taken from `base`. `name` says how the user wrote a
/// variant and its option in this layer (`CCFLARE_ADMIN_KEY_FILE`, `--admin-key-file`).
pub fn read_secret_files(
    layer: &mut Layer,
    base: Option<&Path>,
    name: impl Fn(&FileVariant, bool) -> String,
) -> Result<(), ConfigError> {
    for variant in file_variants() {
        let Some(path) = layer.remove(&variant.key) else {
            continue;
        };
        if layer.contains_key(variant.option.key) {
            return Err(ConfigError::SecretTwice {
                option: name(&variant, false),
                file: name(&variant, true),
            });
        }
        let path = match base {
            Some(base) => base.join(path.trim()),
            None => PathBuf::from(path.trim()),
        };
        let value = read_secret(&name(&variant, true), &path)?;
        layer.insert(variant.option.key.to_owned(), value);
    }
    Ok(())
}

/// Adds to the environment layer `layer` the secrets given as `<ENV>_FILE` variables, then
/// those in `$CREDENTIALS_DIRECTORY/<key>` for options the environment sets in neither way.
pub(crate) fn env_secret_files(
    layer: &mut Layer,
    lookup: &impl Fn(&str) -> Option<OsString>,
) -> Result<(), ConfigError> {
    let variants: Vec<FileVariant> = file_variants().collect();
    for variant in &variants {
        if let Some(path) = lookup(&variant.env) {
            let path = path.into_string().map_err(|_| ConfigError::NotUnicode {
                variable: variant.option.env,
            })?;
            layer.insert(variant.key.clone(), path);
        }
    }
    read_secret_files(layer, None, |variant, file| {
        if file {
            variant.env.clone()
        } else {
            variant.option.env.to_owned()
        }
    })?;
    let Some(directory) = lookup(CREDENTIALS_DIRECTORY).filter(|d| !d.is_empty()) else {
        return Ok(());
    };
    for variant in &variants {
        let path = Path::new(&directory).join(variant.option.key);
        if layer.contains_key(variant.option.key) || !path.exists() {
            continue;
        }
        let named = format!("the credential {}", variant.option.key);
        layer.insert(variant.option.key.to_owned(), read_secret(&named, &path)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{env_layer_with, read_config_file};
    use std::collections::BTreeMap;

    const ADMIN: &str = "0123456789abcdef-from-a-file";

    fn env(pairs: &[(&str, &Path)]) -> impl Fn(&str) -> Option<OsString> + use<> {
        let map: BTreeMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_os_str().to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn env_file_variables_and_credentials_fill_the_environment_layer() {
        let dir = tempfile::tempdir().unwrap();
        let admin = dir.path().join("admin");
        std::fs::write(&admin, format!("{ADMIN}\n")).unwrap();
        let credentials = dir.path().join("credentials");
        std::fs::create_dir(&credentials).unwrap();
        std::fs::write(credentials.join("api_keys"), "sk-ant-one\nsk-ant-two\n").unwrap();
        std::fs::write(credentials.join("admin_key"), "not-this-one-0123456789").unwrap();
        let layer = env_layer_with(env(&[
            ("CCFLARE_ADMIN_KEY_FILE", &admin),
            (CREDENTIALS_DIRECTORY, &credentials),
        ]))
        .unwrap();
        // The variable wins over the credential; the credential fills what is not set.
        assert_eq!(layer["admin_key"], ADMIN);
        assert_eq!(layer["api_keys"], "sk-ant-one\nsk-ant-two");
        assert!(!layer.contains_key("admin_key_file"));
    }

    #[test]
    fn an_unreadable_file_is_named_by_variable_and_path_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let err = env_layer_with(env(&[("CLAUDE_API_KEYS_FILE", &missing)]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!("CLAUDE_API_KEYS_FILE: cannot read {}", missing.display())
        );
        // A directory cannot be read as a file either; its contents are never shown.
        let err = env_layer_with(env(&[("CCFLARE_ADMIN_KEY_FILE", dir.path())]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("CCFLARE_ADMIN_KEY_FILE: cannot read "),
            "{err}"
        );
    }

    #[test]
    fn a_secret_and_its_file_together_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let admin = dir.path().join("admin");
        std::fs::write(&admin, ADMIN).unwrap();
        let err = env_layer_with(env(&[
            ("CCFLARE_ADMIN_KEY_FILE", &admin),
            ("CCFLARE_ADMIN_KEY", Path::new("0123456789abcdef-env")),
        ]))
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "CCFLARE_ADMIN_KEY and CCFLARE_ADMIN_KEY_FILE are both set: set one of them"
        );
    }

    #[test]
    fn a_config_file_names_secret_files_relative_to_itself() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("admin"), format!("{ADMIN}\r\n")).unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "port = 9000\nadmin_key_file = \"admin\"\n").unwrap();
        let layer = read_config_file(&path).unwrap();
        assert_eq!(layer["admin_key"], ADMIN);
        assert!(!layer.contains_key("admin_key_file"));
        std::fs::write(&path, "api_keys_file = \"nope\"\n").unwrap();
        let err = read_config_file(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "api_keys_file in {}: cannot read ",
                path.display()
            )),
            "{err}"
        );
    }
}
