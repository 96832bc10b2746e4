//! Why configuration could not be read, one variant per failure, each printed as one line that
//! names the file or variable at fault (never a value that may be a key).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The line's value may be a key: only the variable it sets is named.
    #[error("cannot read .env: the line setting {variable} cannot be parsed (at character {at})")]
    DotenvLine { variable: String, at: usize },
    #[error("cannot read .env: {reason}")]
    Dotenv { reason: String },
    #[error("{variable} is not valid UTF-8")]
    NotUnicode { variable: &'static str },
    #[error("reading config file {}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing config file {}", path.display())]
    ParseFile {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("config file {}: {key} must list strings, found {found}", path.display())]
    NotAStringList {
        path: PathBuf,
        key: String,
        found: &'static str,
    },
    #[error("config file {}: {key} has an unsupported {found} value", path.display())]
    UnsupportedValue {
        path: PathBuf,
        key: String,
        found: &'static str,
    },
    /// Never the file's contents: it holds a secret.
    #[error("{named}: cannot read {}", path.display())]
    SecretFile {
        named: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{option} and {file} are both set: set one of them")]
    SecretTwice { option: String, file: String },
    #[error("cannot find a data directory: set DATABASE_URL, XDG_DATA_HOME or HOME")]
    NoDataDirectory,
}
