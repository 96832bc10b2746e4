//! The configuration model (SPEC §3): every option, its environment variable, flag and
//! default, and the resolution of flag > environment > config file > default. The binaries do
//! the reading (env, `.env`, TOML file, argv) and hand the values here as plain maps, so the
//! precedence rules and every validation message are unit-tested without IO.

use crate::error::CoreError;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// How a new session (or a request without a session key) picks an account (SPEC §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// One account serves until it is unavailable or its turn (SESSION_TIMEOUT) ends.
    #[default]
    Session,
    RoundRobin,
    LeastRequests,
    Priority,
    Headroom,
}

impl Strategy {
    pub const ALL: [Strategy; 5] = [
        Strategy::Session,
        Strategy::RoundRobin,
        Strategy::LeastRequests,
        Strategy::Priority,
        Strategy::Headroom,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Session => "session",
            Strategy::RoundRobin => "round-robin",
            Strategy::LeastRequests => "least-requests",
            Strategy::Priority => "priority",
            Strategy::Headroom => "headroom",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Strategy {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let s = s.trim().to_ascii_lowercase().replace('_', "-");
        Strategy::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or(())
    }
}

/// Where an option's value came from, for `config show` and start-up messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env,
    /// Stored in the database by `ccflare-cli config set` or `PATCH /api/config`.
    Database,
    File,
    Default,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Flag => "flag",
            Source::Env => "env",
            Source::Database => "database",
            Source::File => "file",
            Source::Default => "default",
        }
    }
}

/// One configurable option.
#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    /// Key in the config file, e.g. `session_timeout`.
    pub key: &'static str,
    /// Environment variable, e.g. `SESSION_TIMEOUT`.
    pub env: &'static str,
    /// Command-line flag without dashes, e.g. `session-timeout`.
    pub flag: &'static str,
    /// Default as text; empty means "none" (or computed by the binary, for the database).
    pub default: &'static str,
    pub help: &'static str,
    /// Whether the value is a secret that must be masked when shown.
    pub secret: bool,
}

const fn opt(
    key: &'static str,
    env: &'static str,
    flag: &'static str,
    default: &'static str,
    help: &'static str,
) -> OptionSpec {
    OptionSpec {
        key,
        env,
        flag,
        default,
        help,
        secret: false,
    }
}

/// Every option the server understands.
pub const OPTIONS: &[OptionSpec] = &[
    opt("port", "PORT", "port", "8080", "listen port"),
    opt("host", "HOST", "host", "127.0.0.1", "listen address"),
    opt(
        "database_url",
        "DATABASE_URL",
        "database-url",
        "",
        "SQLite database: file:./x.db, sqlite://path or a path (default: $XDG_DATA_HOME/ccflare/ccflare.db)",
    ),
    OptionSpec {
        secret: true,
        ..opt(
            "api_keys",
            "CLAUDE_API_KEYS",
            "api-keys",
            "",
            "API keys to add as accounts at start, separated by commas, spaces or newlines",
        )
    },
    opt(
        "session_timeout",
        "SESSION_TIMEOUT",
        "session-timeout",
        "18000",
        "seconds a session stays on its account after its last request",
    ),
    opt(
        "log_level",
        "LOG_LEVEL",
        "log-level",
        "info",
        "error, warn, info, debug or trace (RUST_LOG overrides)",
    ),
    opt(
        "log_format",
        "LOG_FORMAT",
        "log-format",
        "text",
        "text or json",
    ),
    opt(
        "log_file",
        "CCFLARE_LOG_FILE",
        "log-file",
        "",
        "file the log lines are appended to as well (with the terminal UI open, the one place \
         besides its Logs tab)",
    ),
    opt(
        "lb_strategy",
        "LB_STRATEGY",
        "strategy",
        "session",
        "session, round-robin, least-requests, priority or headroom",
    ),
    opt(
        "upstream_url",
        "CCFLARE_UPSTREAM_URL",
        "upstream-url",
        "https://api.anthropic.com",
        "where requests are forwarded",
    ),
    opt(
        "max_body_bytes",
        "CCFLARE_MAX_BODY_BYTES",
        "max-body-bytes",
        "33554432",
        "largest request body accepted (bigger ones get 413)",
    ),
    opt(
        "body_timeout",
        "CCFLARE_BODY_TIMEOUT",
        "body-timeout",
        "60",
        "seconds a client gets to send a whole request body (slower uploads get 408)",
    ),
    opt(
        "max_body_memory",
        "CCFLARE_MAX_BODY_MEMORY",
        "max-body-memory",
        "268435456",
        "bytes of request bodies held in memory at once, all requests together (over it: 503; \
         at least max_body_bytes)",
    ),
    opt(
        "allow_all_paths",
        "CCFLARE_ALLOW_ALL_PATHS",
        "allow-all-paths",
        "false",
        "forward every /v1/* path, not only the API's documented routes (others get 404)",
    ),
    opt(
        "pool_rate_limit_headers",
        "CCFLARE_POOL_RATE_LIMIT_HEADERS",
        "pool-rate-limit-headers",
        "false",
        "subscription answers carry the pool's five-hour utilisation and reset instead of the \
         serving account's, so a client's usage warnings describe the pool (docs/routing.md)",
    ),
    opt(
        "connect_timeout",
        "CCFLARE_CONNECT_TIMEOUT",
        "connect-timeout",
        "10",
        "seconds to connect to the upstream",
    ),
    opt(
        "idle_timeout",
        "CCFLARE_IDLE_TIMEOUT",
        "idle-timeout",
        "300",
        "seconds without a byte from the upstream before giving up",
    ),
    opt(
        "shutdown_timeout",
        "CCFLARE_SHUTDOWN_TIMEOUT",
        "shutdown-timeout",
        "30",
        "seconds in-flight requests get to finish at shutdown",
    ),
    opt(
        "max_attempts",
        "CCFLARE_MAX_ATTEMPTS",
        "max-attempts",
        "0",
        "most accounts tried for one request (0 = every account)",
    ),
    opt(
        "max_connections",
        "CCFLARE_MAX_CONNECTIONS",
        "max-connections",
        "0",
        "client connections served at once; more wait (0 = what the open-files limit allows, \
         at most 10000)",
    ),
    opt(
        "retention_days",
        "CCFLARE_RETENTION_DAYS",
        "retention-days",
        "0",
        "days request rows are kept before they are deleted (0 = keep forever)",
    ),
    OptionSpec {
        secret: true,
        ..opt(
            "encryption_key",
            "CCFLARE_ENCRYPTION_KEY",
            "encryption-key",
            "",
            "key that encrypts account keys and OAuth tokens in the database: 32 bytes as 64 hex \
             characters or base64 (a file keeps it out of the environment: encryption_key_file)",
        )
    },
    opt(
        "encryption_key_file",
        "CCFLARE_ENCRYPTION_KEY_FILE",
        "encryption-key-file",
        "",
        "file holding the encryption key (default under systemd's LoadCredential: \
         $CREDENTIALS_DIRECTORY/ccflare-encryption-key)",
    ),
    OptionSpec {
        secret: true,
        ..opt(
            "admin_key",
            "CCFLARE_ADMIN_KEY",
            "admin-key",
            "",
            "key the management API (/api/*, /metrics) requires; required when HOST is not loopback",
        )
    },
    opt(
        "require_client_keys",
        "REQUIRE_CLIENT_KEYS",
        "require-client-keys",
        "auto",
        "whether /v1 requires a client key (ccf_…): auto (required unless HOST is loopback), \
         true or false",
    ),
    // OAuth endpoints (protocol doc §6): configuration, so a change on Anthropic's side needs
    // no release and tests point them at the mock upstream.
    opt(
        "oauth_client_id",
        "CCFLARE_OAUTH_CLIENT_ID",
        "oauth-client-id",
        "9d1c250a-e61b-44d9-88ed-5944d1962f5e",
        "OAuth client id (Claude Code's)",
    ),
    opt(
        "oauth_authorize_url",
        "CCFLARE_OAUTH_AUTHORIZE_URL",
        "oauth-authorize-url",
        "https://claude.ai/oauth/authorize",
        "login page for Pro/Max subscriptions",
    ),
    opt(
        "oauth_console_authorize_url",
        "CCFLARE_OAUTH_CONSOLE_AUTHORIZE_URL",
        "oauth-console-authorize-url",
        "https://console.anthropic.com/oauth/authorize",
        "login page for Console accounts",
    ),
    opt(
        "oauth_token_url",
        "CCFLARE_OAUTH_TOKEN_URL",
        "oauth-token-url",
        "https://platform.claude.com/v1/oauth/token",
        "OAuth token endpoint (code exchange and refresh)",
    ),
    opt(
        "oauth_redirect_uri",
        "CCFLARE_OAUTH_REDIRECT_URI",
        "oauth-redirect-uri",
        "https://platform.claude.com/oauth/code/callback",
        "OAuth redirect URI (the page that shows the code)",
    ),
    opt(
        "oauth_scopes",
        "CCFLARE_OAUTH_SCOPES",
        "oauth-scopes",
        "org:create_api_key user:profile user:inference user:sessions:claude_code user:mcp_servers user:file_upload",
        "OAuth scopes, space-separated",
    ),
    opt(
        "oauth_api_key_url",
        "CCFLARE_OAUTH_API_KEY_URL",
        "oauth-api-key-url",
        "https://api.anthropic.com/api/oauth/claude_cli/create_api_key",
        "where a Console login mints an API key",
    ),
    opt(
        "oauth_user_agent",
        "CCFLARE_OAUTH_USER_AGENT",
        "oauth-user-agent",
        "claude-cli/2.1.197 (external, cli)",
        "User-Agent for the token endpoint, which refuses unknown clients",
    ),
];

// ---- Secrets from files (docs/configuration.md, "Secrets from files") ----
//
// Every secret option (`secret: true`) can also be given as a path to a file holding it, so
// that keys stay out of the environment and `ps`: `<ENV>_FILE`, `--<flag>-file`, `<key>_file`
// in the config file, and systemd's `$CREDENTIALS_DIRECTORY/<key>`. The rule is here, with the
// table; ccflare-config does the reading.

/// The names under which a secret option is read from a file.
#[derive(Debug, Clone)]
pub struct FileVariant {
    /// The option it feeds.
    pub option: &'static OptionSpec,
    /// Config-file key, e.g. `admin_key_file`.
    pub key: String,
    /// Environment variable, e.g. `CCFLARE_ADMIN_KEY_FILE`.
    pub env: String,
    /// Flag without dashes, e.g. `admin-key-file`.
    pub flag: String,
}

impl OptionSpec {
    /// The file variant of a secret option (`None` for the others, and for one whose names an
    /// option of the table already has: that option, a path of its own, keeps them).
    pub fn file_variant(&'static self) -> Option<FileVariant> {
        if !self.secret {
            return None;
        }
        let variant = FileVariant {
            option: self,
            key: format!("{}_file", self.key),
            env: format!("{}_FILE", self.env),
            flag: format!("{}-file", self.flag),
        };
        let taken = OPTIONS
            .iter()
            .any(|o| o.key == variant.key || o.env == variant.env || o.flag == variant.flag);
        (!taken).then_some(variant)
    }
}

/// Every secret option's [`FileVariant`].
pub fn file_variants() -> impl Iterator<Item = FileVariant> {
    OPTIONS.iter().filter_map(OptionSpec::file_variant)
}

/// A secret's value as its file holds it: one trailing line ending removed (`echo` and editors
/// add one), nothing else, so that a key is never silently changed.
pub fn secret_file_value(text: &str) -> &str {
    match text.strip_suffix('\n') {
        Some(line) => line.strip_suffix('\r').unwrap_or(line),
        None => text,
    }
}

// ---- end of secrets from files ----

/// Options read before the database is open, which therefore cannot be stored in it.
pub const NOT_STORABLE: &[&str] = &[
    "database_url",
    "log_level",
    "log_format",
    "log_file",
    "admin_key",
    // Decided at start, with the listen address it guards.
    "require_client_keys",
    // A key stored beside the secrets it encrypts would protect nothing.
    "encryption_key",
    "encryption_key_file",
];

/// Secret options shown only as set or not (`<set>`), never even masked: a masked API key
/// names the account, but a part of these keys is only a part of the secret.
const NEVER_SHOWN: &[&str] = &["admin_key", "encryption_key"];

/// Whether `ccflare-cli config set` / `PATCH /api/config` may store this option.
pub fn storable(key: &str) -> bool {
    option(key).is_some() && !NOT_STORABLE.contains(&key)
}

/// An option's value as it may be shown to people (`config show`, `GET /api/config`): API keys
/// masked one by one (`sk-ant-…wxyz`), the admin and encryption keys never shown at all.
pub fn display_value(spec: &OptionSpec, raw: &str) -> String {
    if !spec.secret {
        return raw.to_owned();
    }
    if NEVER_SHOWN.contains(&spec.key) {
        return if raw.trim().is_empty() {
            String::new()
        } else {
            "<set>".to_owned()
        };
    }
    crate::account::split_api_keys(raw)
        .iter()
        .map(|key| crate::secret::mask(key))
        .collect::<Vec<_>>()
        .join(",")
}

/// Looks an option up by its file key.
pub fn option(key: &str) -> Option<&'static OptionSpec> {
    OPTIONS.iter().find(|o| o.key == key)
}

/// Values from one source, keyed by file key.
pub type Layer = BTreeMap<String, String>;

/// Whether `/v1` requires a client key (SPEC §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RequireClientKeys {
    /// Required on a non-loopback listen address, optional on loopback.
    #[default]
    Auto,
    Yes,
    No,
}

impl RequireClientKeys {
    /// Whether keys are required on a server whose listen address is (or is not) loopback.
    pub fn required(self, loopback: bool) -> bool {
        match self {
            RequireClientKeys::Auto => !loopback,
            RequireClientKeys::Yes => true,
            RequireClientKeys::No => false,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RequireClientKeys::Auto => "auto",
            RequireClientKeys::Yes => "true",
            RequireClientKeys::No => "false",
        }
    }
}

/// Where the database's encryption key comes from: the `encryption_key` option's text, the
/// `encryption_key_file` option's path, or neither (then, under systemd, a credential named
/// `ccflare-encryption-key` may still provide one: the storage crate looks).
#[derive(Clone, PartialEq, Eq, Default)]
pub enum EncryptionKeySetting {
    #[default]
    None,
    /// The key itself, checked to be 32 bytes in hex or base64.
    Key(crate::Secret),
    /// A file whose contents are the key.
    File(String),
}

impl fmt::Debug for EncryptionKeySetting {
    /// Never the key: not even [`crate::Secret`]'s mask, whose characters are key bytes here.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncryptionKeySetting::None => f.write_str("None"),
            EncryptionKeySetting::Key(_) => f.write_str("Key(<set>)"),
            EncryptionKeySetting::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// Whether a listen address only accepts connections from this machine.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// What an encryption key must look like, for every message that refuses one.
pub const ENCRYPTION_KEY_FORMAT: &str =
    "32 bytes as 64 hex characters or as base64 (make one with `openssl rand -hex 32`)";

/// Decodes an encryption key: 32 bytes written as 64 hex characters, or as base64 (standard or
/// URL-safe alphabet, padded or not). Spaces and a final newline around it are ignored, as a
/// key file often ends with one. `None` for anything else.
pub fn decode_encryption_key(text: &str) -> Option<[u8; 32]> {
    use base64::Engine as _;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let text = text.trim();
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut key = [0u8; 32];
        for (byte, pair) in key.iter_mut().zip(text.as_bytes().chunks(2)) {
            let pair = std::str::from_utf8(pair).ok()?;
            *byte = u8::from_str_radix(pair, 16).ok()?;
        }
        return Some(key);
    }
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    [
        GeneralPurpose::new(&base64::alphabet::STANDARD, config),
        GeneralPurpose::new(&base64::alphabet::URL_SAFE, config),
    ]
    .iter()
    .find_map(|engine| engine.decode(text).ok())
    .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
}

/// The encryption key's setting from the two options' raw values (`encryption_key`,
/// `encryption_key_file`): at most one of them, and a key given inline must decode (its text is
/// never echoed). `Settings::resolve` uses it; so does the CLI, which reads only these options.
pub fn encryption_key_setting(key: &str, file: &str) -> Result<EncryptionKeySetting, CoreError> {
    let key_spec = option("encryption_key").expect("an option");
    let file_spec = option("encryption_key_file").expect("an option");
    match (key.trim(), file.trim()) {
        ("", "") => Ok(EncryptionKeySetting::None),
        (key, "") => match decode_encryption_key(key) {
            Some(_) => Ok(EncryptionKeySetting::Key(crate::Secret::new(key))),
            None => Err(invalid(key_spec, key, ENCRYPTION_KEY_FORMAT)),
        },
        ("", path) if path.contains(char::is_control) => {
            Err(invalid(file_spec, path, "a file path on one line"))
        }
        ("", path) => Ok(EncryptionKeySetting::File(path.to_owned())),
        (_, path) => Err(invalid(
            file_spec,
            path,
            "either CCFLARE_ENCRYPTION_KEY or CCFLARE_ENCRYPTION_KEY_FILE, not both",
        )),
    }
}

/// Where the OAuth endpoints are (protocol doc §6); `ccflare-oauth` turns this into its
/// client's endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthSettings {
    pub client_id: String,
    pub authorize_url: String,
    pub console_authorize_url: String,
    pub token_url: String,
    pub redirect_uri: String,
    pub scopes: String,
    pub api_key_url: String,
    pub user_agent: String,
}

impl Default for OAuthSettings {
    /// The options' defaults: the endpoints Claude Code uses (protocol doc §6).
    fn default() -> Self {
        Settings::defaults().oauth
    }
}

/// The resolved configuration. Its `Debug` hides the secrets (see the impl).
#[derive(Clone, PartialEq)]
pub struct Settings {
    pub port: u16,
    pub host: String,
    /// `None`: the binary's platform default.
    pub database_url: Option<String>,
    pub api_keys: Vec<String>,
    pub session_timeout_s: u64,
    pub log_level: String,
    pub log_json: bool,
    /// A file the log lines are appended to, besides stderr (or, with the UI open, the Logs
    /// tab).
    pub log_file: Option<String>,
    pub strategy: Strategy,
    pub upstream_url: String,
    pub max_body_bytes: usize,
    /// Seconds a client gets to send a whole request body.
    pub body_timeout_s: u64,
    /// Bytes of request bodies all requests together may hold in memory.
    pub max_body_memory: usize,
    /// Forward every `/v1/*` path, not only the API's documented routes.
    pub allow_all_paths: bool,
    /// Rewrite subscription answers' unified rate-limit headers to describe the pool.
    pub pool_rate_limit_headers: bool,
    pub connect_timeout_s: u64,
    pub idle_timeout_s: u64,
    pub shutdown_timeout_s: u64,
    pub max_attempts: u32,
    /// Client connections served at once; 0 leaves it to the open-files limit.
    pub max_connections: usize,
    /// Days request rows (and their rollups) are kept; 0 keeps them forever.
    pub retention_days: u64,
    pub oauth: OAuthSettings,
    /// The management API's key (SPEC §11); `None` leaves it open, which is allowed only on a
    /// loopback address.
    pub admin_key: Option<crate::Secret>,
    /// Whether `/v1` requires a client key.
    pub require_client_keys: RequireClientKeys,
    /// Where the key that encrypts credentials in the database comes from (checked here; the
    /// file is read by the storage crate).
    pub encryption_key: EncryptionKeySetting,
    /// Where each option's value came from, by file key, with the raw text.
    pub sources: BTreeMap<&'static str, (Source, String)>,
}

impl fmt::Debug for Settings {
    /// Every field, but no secret: the API keys are counted, and the raw text of a secret
    /// option in `sources` is hidden (the admin and encryption keys hide themselves). Listed by
    /// destructuring, so a new field cannot be forgotten here.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Settings {
            port,
            host,
            database_url,
            api_keys,
            session_timeout_s,
            log_level,
            log_json,
            log_file,
            strategy,
            upstream_url,
            max_body_bytes,
            body_timeout_s,
            max_body_memory,
            allow_all_paths,
            pool_rate_limit_headers,
            connect_timeout_s,
            idle_timeout_s,
            shutdown_timeout_s,
            max_attempts,
            max_connections,
            retention_days,
            oauth,
            admin_key,
            require_client_keys,
            encryption_key,
            sources,
        } = self;
        let sources: BTreeMap<&str, (Source, &str)> = sources
            .iter()
            .map(|(key, (source, raw))| {
                let secret = option(key).is_none_or(|spec| spec.secret);
                (
                    *key,
                    (*source, if secret { "<hidden>" } else { raw.as_str() }),
                )
            })
            .collect();
        f.debug_struct("Settings")
            .field("port", port)
            .field("host", host)
            .field("database_url", database_url)
            .field("api_keys", &format_args!("<{} hidden>", api_keys.len()))
            .field("session_timeout_s", session_timeout_s)
            .field("log_level", log_level)
            .field("log_json", log_json)
            .field("log_file", log_file)
            .field("strategy", strategy)
            .field("upstream_url", upstream_url)
            .field("max_body_bytes", max_body_bytes)
            .field("body_timeout_s", body_timeout_s)
            .field("max_body_memory", max_body_memory)
            .field("allow_all_paths", allow_all_paths)
            .field("pool_rate_limit_headers", pool_rate_limit_headers)
            .field("connect_timeout_s", connect_timeout_s)
            .field("idle_timeout_s", idle_timeout_s)
            .field("shutdown_timeout_s", shutdown_timeout_s)
            .field("max_attempts", max_attempts)
            .field("max_connections", max_connections)
            .field("retention_days", retention_days)
            .field("oauth", oauth)
            .field("admin_key", admin_key)
            .field("require_client_keys", require_client_keys)
            .field("encryption_key", encryption_key)
            .field("sources", &sources)
            .finish()
    }
}

fn invalid(spec: &OptionSpec, value: &str, expected: &str) -> CoreError {
    CoreError::InvalidOption {
        option: spec.env.to_owned(),
        value: if spec.secret {
            "<hidden>".into()
        } else {
            value.to_owned()
        },
        expected: expected.to_owned(),
    }
}

fn number<T: FromStr>(
    spec: &OptionSpec,
    value: &str,
    expected: &str,
    ok: impl Fn(&T) -> bool,
) -> Result<T, CoreError> {
    value
        .trim()
        .parse::<T>()
        .ok()
        .filter(ok)
        .ok_or_else(|| invalid(spec, value, expected))
}

/// `true`/`false` as people write them: `1`, `yes`, `on` and their opposites, in any case.
fn boolean(spec: &OptionSpec, value: &str) -> Result<bool, CoreError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(invalid(spec, value, "true or false")),
    }
}

impl Settings {
    /// Resolves every option from flags, environment, config file and defaults (no database
    /// layer): what a process knows before it has opened the database.
    pub fn resolve(flags: &Layer, env: &Layer, file: &Layer) -> Result<Settings, CoreError> {
        Settings::resolve_with_database(flags, env, &Layer::new(), file)
    }

    /// Resolves every option, highest precedence first: flag > environment > database >
    /// config file > default. A key in the file layer that is no option is an error (a typo
    /// should not be silently ignored); database keys this build does not know (written by a
    /// newer one) and those in [`NOT_STORABLE`] are ignored.
    pub fn resolve_with_database(
        flags: &Layer,
        env: &Layer,
        database: &Layer,
        file: &Layer,
    ) -> Result<Settings, CoreError> {
        if let Some(unknown) = file.keys().find(|k| option(k).is_none()) {
            return Err(CoreError::UnknownOption {
                option: unknown.clone(),
                source_name: "the config file".into(),
            });
        }
        let mut sources = BTreeMap::new();
        for spec in OPTIONS {
            let found = [
                (Source::Flag, flags),
                (Source::Env, env),
                (Source::Database, database),
                (Source::File, file),
            ]
            .into_iter()
            .filter(|(source, _)| *source != Source::Database || storable(spec.key))
            .find_map(|(source, layer)| layer.get(spec.key).map(|v| (source, v.clone())));
            sources.insert(
                spec.key,
                found.unwrap_or((Source::Default, spec.default.to_owned())),
            );
        }
        let value = |key: &str| -> (&'static OptionSpec, &str) {
            let spec = option(key).expect("every option is in OPTIONS");
            (spec, sources[spec.key].1.as_str())
        };

        let (spec, v) = value("port");
        // Port 0 asks the system for a free port; the banner shows which.
        let port = number(spec, v, "a port number from 0 to 65535", |_: &u16| true)?;
        let (spec, v) = value("host");
        let host = v.trim().to_owned();
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(invalid(
                spec,
                v,
                "an IP address or host name such as 127.0.0.1",
            ));
        }
        let (_, v) = value("database_url");
        let database_url = (!v.trim().is_empty()).then(|| v.trim().to_owned());
        let (spec, v) = value("api_keys");
        let api_keys = crate::account::split_api_keys(v);
        for key in &api_keys {
            crate::account::check_api_key(key).map_err(|e| invalid(spec, v, &e))?;
        }
        let (spec, v) = value("session_timeout");
        let session_timeout_s = number(spec, v, "a number of seconds", |_: &u64| true)?;
        let (spec, v) = value("log_level");
        let log_level = v.trim().to_ascii_lowercase();
        if !["error", "warn", "info", "debug", "trace"].contains(&log_level.as_str()) {
            return Err(invalid(spec, v, "one of error, warn, info, debug, trace"));
        }
        let (spec, v) = value("log_format");
        let log_json = match v.trim() {
            "text" => false,
            "json" => true,
            _ => return Err(invalid(spec, v, "text or json")),
        };
        let (spec, v) = value("log_file");
        let log_file = match v.trim() {
            "" => None,
            path if path.contains(char::is_control) => {
                return Err(invalid(spec, v, "a file path on one line"));
            }
            path => Some(path.to_owned()),
        };
        let (spec, v) = value("lb_strategy");
        let strategy = v.parse::<Strategy>().map_err(|_| {
            invalid(
                spec,
                v,
                "one of session, round-robin, least-requests, priority, headroom",
            )
        })?;
        let (spec, v) = value("upstream_url");
        let upstream_url = v.trim().trim_end_matches('/').to_owned();
        let after_scheme = upstream_url
            .strip_prefix("http://")
            .or_else(|| upstream_url.strip_prefix("https://"));
        if after_scheme.is_none_or(str::is_empty) {
            return Err(invalid(spec, v, "an http:// or https:// URL"));
        }
        let (spec, v) = value("max_body_bytes");
        let max_body_bytes = number(spec, v, "a number of bytes above 0", |n: &usize| *n > 0)?;
        let (spec, v) = value("body_timeout");
        let body_timeout_s = number(spec, v, "a number of seconds above 0", |n: &u64| *n > 0)?;
        let (spec, v) = value("max_body_memory");
        // A budget below one largest body would refuse bodies the size cap allows: it is
        // raised to one such body.
        let max_body_memory =
            number(spec, v, "a number of bytes above 0", |n: &usize| *n > 0)?.max(max_body_bytes);
        let (spec, v) = value("allow_all_paths");
        let allow_all_paths = boolean(spec, v)?;
        let (spec, v) = value("pool_rate_limit_headers");
        let pool_rate_limit_headers = boolean(spec, v)?;
        let (spec, v) = value("connect_timeout");
        let connect_timeout_s = number(spec, v, "a number of seconds above 0", |n: &u64| *n > 0)?;
        let (spec, v) = value("idle_timeout");
        let idle_timeout_s = number(spec, v, "a number of seconds above 0", |n: &u64| *n > 0)?;
        let (spec, v) = value("shutdown_timeout");
        let shutdown_timeout_s = number(spec, v, "a number of seconds", |_: &u64| true)?;
        let (spec, v) = value("max_attempts");
        let max_attempts = number(spec, v, "a number (0 = every account)", |_: &u32| true)?;
        let (spec, v) = value("max_connections");
        let max_connections = number(
            spec,
            v,
            "a number of connections (0 = what the open-files limit allows)",
            |_: &usize| true,
        )?;
        let (spec, v) = value("retention_days");
        // Capped so that "days ago" in milliseconds cannot overflow anywhere downstream.
        let retention_days = number(
            spec,
            v,
            "a number of days from 0 (keep forever) to 36500",
            |n: &u64| *n <= 36_500,
        )?;

        let url = |key: &str| -> Result<String, CoreError> {
            let (spec, v) = value(key);
            let v = v.trim();
            if v.starts_with("http://") || v.starts_with("https://") {
                Ok(v.to_owned())
            } else {
                Err(invalid(spec, v, "an http:// or https:// URL"))
            }
        };
        let text = |key: &str| -> Result<String, CoreError> {
            let (spec, v) = value(key);
            let v = v.trim();
            if v.is_empty() || v.contains(char::is_control) {
                return Err(invalid(spec, v, "a non-empty value on one line"));
            }
            Ok(v.to_owned())
        };
        let (spec, v) = value("admin_key");
        let admin_key = match v.trim() {
            "" => None,
            key if key.len() < 16 || key.contains(char::is_whitespace) => {
                return Err(invalid(spec, key, "at least 16 characters without spaces"));
            }
            key => Some(crate::Secret::new(key)),
        };
        let (spec, v) = value("require_client_keys");
        let require_client_keys = match v.trim().to_ascii_lowercase().as_str() {
            "auto" => RequireClientKeys::Auto,
            "true" | "yes" | "1" | "on" => RequireClientKeys::Yes,
            "false" | "no" | "0" | "off" => RequireClientKeys::No,
            _ => return Err(invalid(spec, v, "auto, true or false")),
        };
        let encryption_key =
            encryption_key_setting(value("encryption_key").1, value("encryption_key_file").1)?;
        let oauth = OAuthSettings {
            client_id: text("oauth_client_id")?,
            authorize_url: url("oauth_authorize_url")?,
            console_authorize_url: url("oauth_console_authorize_url")?,
            token_url: url("oauth_token_url")?,
            redirect_uri: url("oauth_redirect_uri")?,
            scopes: text("oauth_scopes")?,
            api_key_url: url("oauth_api_key_url")?,
            user_agent: text("oauth_user_agent")?,
        };

        Ok(Settings {
            port,
            host,
            database_url,
            api_keys,
            session_timeout_s,
            log_level,
            log_json,
            log_file,
            strategy,
            upstream_url,
            max_body_bytes,
            body_timeout_s,
            max_body_memory,
            allow_all_paths,
            pool_rate_limit_headers,
            connect_timeout_s,
            idle_timeout_s,
            shutdown_timeout_s,
            max_attempts,
            max_connections,
            retention_days,
            oauth,
            admin_key,
            require_client_keys,
            encryption_key,
            sources,
        })
    }

    /// Defaults only: what a server started with no configuration uses.
    pub fn defaults() -> Settings {
        Settings::resolve(&Layer::new(), &Layer::new(), &Layer::new()).expect("defaults are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(pairs: &[(&str, &str)]) -> Layer {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_the_spec() {
        let s = Settings::defaults();
        assert_eq!((s.port, s.host.as_str()), (8080, "127.0.0.1"));
        assert_eq!(s.session_timeout_s, 18_000);
        assert_eq!(s.strategy, Strategy::Session);
        assert_eq!(s.upstream_url, "https://api.anthropic.com");
        assert_eq!(s.max_body_bytes, 32 * 1024 * 1024);
        assert_eq!(s.idle_timeout_s, 300);
        assert_eq!(s.body_timeout_s, 60);
        assert_eq!(s.max_body_memory, 256 * 1024 * 1024);
        assert!(!s.allow_all_paths, "only the documented routes by default");
        assert!(
            !s.pool_rate_limit_headers,
            "the upstream's bytes by default"
        );
        assert_eq!(s.database_url, None);
        assert_eq!(
            s.retention_days, 0,
            "rows are kept unless a person says otherwise"
        );
        assert_eq!(s.sources["port"].0, Source::Default);
    }

    #[test]
    fn client_keys_are_required_off_loopback_unless_said_otherwise() {
        let s = Settings::defaults();
        assert_eq!(s.require_client_keys, RequireClientKeys::Auto);
        assert!(s.require_client_keys.required(false));
        assert!(!s.require_client_keys.required(true));
        let env = layer(&[("require_client_keys", "TRUE")]);
        let s = Settings::resolve(&Layer::new(), &env, &Layer::new()).unwrap();
        assert!(s.require_client_keys.required(true));
        let env = layer(&[("require_client_keys", "no")]);
        let s = Settings::resolve(&Layer::new(), &env, &Layer::new()).unwrap();
        assert!(!s.require_client_keys.required(false));
        let env = layer(&[("require_client_keys", "maybe")]);
        let err = Settings::resolve(&Layer::new(), &env, &Layer::new()).unwrap_err();
        assert!(err.to_string().contains("REQUIRE_CLIENT_KEYS"), "{err}");
        assert!(!storable("require_client_keys"));
    }

    #[test]
    fn settings_debug_shows_no_secret() {
        let api_key = "sk-ant-api03-debug-secret-0123456789abcdef";
        let admin = "admin-debug-secret-0123456789";
        let encryption = "ab".repeat(32);
        let env = layer(&[
            ("api_keys", api_key),
            ("admin_key", admin),
            ("encryption_key", &encryption),
            ("port", "8123"),
        ]);
        let s = Settings::resolve(&Layer::new(), &env, &Layer::new()).unwrap();
        let shown = format!("{s:?}");
        for secret in [api_key, admin, &encryption, &api_key[..20], &admin[..16]] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("port: 8123"), "{shown}");
        assert!(shown.contains("api_keys: <1 hidden>"), "{shown}");
    }

    #[test]
    fn flag_beats_env_beats_file() {
        let flags = layer(&[("port", "1")]);
        let env = layer(&[("port", "2"), ("host", "0.0.0.0")]);
        let file = layer(&[("port", "3"), ("host", "::1"), ("session_timeout", "60")]);
        let s = Settings::resolve(&flags, &env, &file).unwrap();
        assert_eq!(
            (s.port, s.host.as_str(), s.session_timeout_s),
            (1, "0.0.0.0", 60)
        );
        assert_eq!(s.sources["port"].0, Source::Flag);
        assert_eq!(s.sources["host"].0, Source::Env);
        assert_eq!(s.sources["session_timeout"].0, Source::File);
    }

    #[test]
    fn database_ranks_between_environment_and_file() {
        let db = layer(&[
            ("lb_strategy", "priority"),
            ("session_timeout", "90"),
            ("database_url", "x.db"),
            ("from_the_future", "1"),
        ]);
        let env = layer(&[("session_timeout", "30")]);
        let file = layer(&[("lb_strategy", "headroom"), ("database_url", "y.db")]);
        let s = Settings::resolve_with_database(&Layer::new(), &env, &db, &file).unwrap();
        assert_eq!((s.strategy, s.session_timeout_s), (Strategy::Priority, 30));
        assert_eq!(s.sources["lb_strategy"].0, Source::Database);
        assert_eq!(
            s.database_url.as_deref(),
            Some("y.db"),
            "the database cannot move itself"
        );
    }

    #[test]
    fn bad_values_name_option_value_and_what_is_allowed() {
        let err = Settings::resolve(&Layer::new(), &layer(&[("port", "eighty")]), &Layer::new())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value \"eighty\" for PORT: expected a port number from 0 to 65535"
        );
        let err = Settings::resolve(
            &Layer::new(),
            &layer(&[("lb_strategy", "random")]),
            &Layer::new(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("LB_STRATEGY") && err.to_string().contains("round-robin"));
        let err =
            Settings::resolve(&Layer::new(), &Layer::new(), &layer(&[("prot", "1")])).unwrap_err();
        assert!(err.to_string().contains("prot"));
    }

    #[test]
    fn bad_api_keys_are_not_echoed() {
        let env = layer(&[("api_keys", "sk-ant-good-0123456789abcdef,oops-secret-value")]);
        let err = Settings::resolve(&Layer::new(), &env, &Layer::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("CLAUDE_API_KEYS") && !err.contains("oops-secret-value"),
            "{err}"
        );
    }

    #[test]
    fn admin_keys_are_long_and_never_echoed() {
        let short = layer(&[("admin_key", "short-secret")]);
        let err = Settings::resolve(&Layer::new(), &short, &Layer::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("CCFLARE_ADMIN_KEY") && !err.contains("short-secret"),
            "{err}"
        );
        let good = layer(&[("admin_key", "0123456789abcdef-admin")]);
        let s = Settings::resolve(&Layer::new(), &good, &Layer::new()).unwrap();
        assert_eq!(
            s.admin_key.as_ref().map(|k| k.expose()),
            Some("0123456789abcdef-admin")
        );
        assert!(!storable("admin_key"));
    }

    #[test]
    fn encryption_keys_are_32_bytes_in_hex_or_base64_and_never_echoed() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let bytes = decode_encryption_key(hex).unwrap();
        assert_eq!((bytes[0], bytes[1], bytes[31]), (0x00, 0x11, 0xff));
        // The same 32 bytes in base64, padded or not, either alphabet, with a newline.
        for text in [
            "ABEiM0RVZneImaq7zN3u/wARIjNEVWZ3iJmqu8zd7v8=\n",
            "ABEiM0RVZneImaq7zN3u_wARIjNEVWZ3iJmqu8zd7v8",
        ] {
            assert_eq!(decode_encryption_key(text), Some(bytes), "{text}");
        }
        for bad in [
            "",
            "short",
            &hex[..62],
            &format!("{hex}00"),
            "ABEiM0RVZneImaq7zN3u/wARIjNEVWZ3iJmqu8zd7v8AAA==",
            "zz112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        ] {
            assert_eq!(decode_encryption_key(bad), None, "{bad}");
        }

        let resolve =
            |pairs: &[(&str, &str)]| Settings::resolve(&Layer::new(), &layer(pairs), &Layer::new());
        let s = resolve(&[("encryption_key", hex)]).unwrap();
        assert_eq!(
            s.encryption_key,
            EncryptionKeySetting::Key(crate::Secret::new(hex))
        );
        assert_eq!(format!("{:?}", s.encryption_key), "Key(<set>)");
        let s = resolve(&[("encryption_key_file", "/run/keys/ccflare")]).unwrap();
        assert_eq!(
            s.encryption_key,
            EncryptionKeySetting::File("/run/keys/ccflare".into())
        );
        assert_eq!(
            resolve(&[]).unwrap().encryption_key,
            EncryptionKeySetting::None
        );

        let err = resolve(&[("encryption_key", "not-a-key-but-secret")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "invalid value \"<hidden>\" for CCFLARE_ENCRYPTION_KEY: expected {ENCRYPTION_KEY_FORMAT}"
            )
        );
        let err = resolve(&[("encryption_key", hex), ("encryption_key_file", "/k")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not both") && !err.contains(hex), "{err}");
        for key in ["encryption_key", "encryption_key_file"] {
            assert!(!storable(key), "{key}");
        }
        let spec = option("encryption_key").unwrap();
        assert_eq!(display_value(spec, hex), "<set>");
    }

    #[test]
    fn an_upstream_needs_a_scheme_and_a_host_however_short() {
        let upstream = |url: &str| {
            Settings::resolve(
                &Layer::new(),
                &layer(&[("upstream_url", url)]),
                &Layer::new(),
            )
            .map(|s| s.upstream_url)
        };
        // Found by the properties below: `http://` plus a one-letter host was refused, as the
        // length check counted the `https://` scheme for both.
        assert_eq!(upstream("http://a/").as_deref(), Ok("http://a"));
        for bad in ["http://", "https:///", "ftp://x", "api.anthropic.com"] {
            assert!(upstream(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hardening_options_parse_and_refuse_what_cannot_work() {
        let resolve =
            |pairs: &[(&str, &str)]| Settings::resolve(&Layer::new(), &layer(pairs), &Layer::new());
        for (text, expected) in [("true", true), (" YES ", true), ("1", true), ("off", false)] {
            let s = resolve(&[("allow_all_paths", text)]).unwrap();
            assert_eq!(s.allow_all_paths, expected, "{text}");
        }
        let err = resolve(&[("allow_all_paths", "sometimes")]).unwrap_err();
        assert!(err.to_string().contains("CCFLARE_ALLOW_ALL_PATHS"), "{err}");
        assert!(resolve(&[("body_timeout", "0")]).is_err());
        assert!(resolve(&[("max_body_memory", "0")]).is_err());
        // The memory budget holds at least one body of the largest size accepted.
        let s = resolve(&[("max_body_bytes", "2000"), ("max_body_memory", "1999")]).unwrap();
        assert_eq!((s.max_body_bytes, s.max_body_memory), (2000, 2000));
        let s = resolve(&[("max_body_bytes", "2000"), ("max_body_memory", "5000")]).unwrap();
        assert_eq!(s.max_body_memory, 5000);
    }

    #[test]
    fn secret_options_and_only_they_have_a_file_variant() {
        let admin = option("admin_key").unwrap().file_variant().unwrap();
        assert_eq!(
            (admin.key.as_str(), admin.env.as_str(), admin.flag.as_str()),
            ("admin_key_file", "CCFLARE_ADMIN_KEY_FILE", "admin-key-file")
        );
        let keys = option("api_keys").unwrap().file_variant().unwrap();
        assert_eq!(keys.env, "CLAUDE_API_KEYS_FILE");
        assert!(option("port").unwrap().file_variant().is_none());
        for variant in file_variants() {
            assert!(variant.option.secret);
            assert!(
                option(&variant.key).is_none(),
                "{} is an option",
                variant.key
            );
        }
        assert_eq!(secret_file_value("k\n"), "k");
        assert_eq!(secret_file_value("k\r\n"), "k");
        assert_eq!(secret_file_value("k\n\n"), "k\n");
        assert_eq!(secret_file_value(" k "), " k ");
    }

    #[test]
    fn strategies_parse_in_either_spelling() {
        assert_eq!("round_robin".parse(), Ok(Strategy::RoundRobin));
        assert_eq!("Least-Requests".parse(), Ok(Strategy::LeastRequests));
        for st in Strategy::ALL {
            assert_eq!(st.as_str().parse(), Ok(st));
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        // The load-balancing strategy; proptest's trait of the same name is `Generator` here.
        use super::Strategy;
        use proptest::strategy::Strategy as Generator;

        fn key() -> impl Generator<Value = String> {
            prop_oneof![
                4 => proptest::sample::select(OPTIONS).prop_map(|spec| spec.key.to_owned()),
                1 => "[a-z_]{1,16}",
            ]
        }

        /// A value as a person might type it, right or wrong.
        fn value() -> impl Generator<Value = String> {
            prop_oneof![
                (0u64..100_000).prop_map(|n| n.to_string()),
                any::<u64>().prop_map(|n| n.to_string()),
                any::<i64>().prop_map(|n| format!(" {n} ")),
                "(session|round_robin|Least-Requests|json|text|DEBUG|https://x|http://|sk-ant-[a-z0-9]{0,30})",
                "\\PC{0,40}",
                ".{0,40}",
            ]
        }

        fn layer() -> impl Generator<Value = Layer> {
            proptest::collection::btree_map(key(), value(), 0..6)
        }

        /// A layer of known keys only, as the environment and flag layers are.
        fn known_layer() -> impl Generator<Value = Layer> {
            layer().prop_map(|mut layer| {
                layer.retain(|key, _| option(key).is_some());
                layer
            })
        }

        /// Valid values for every option but the credentials, with the text a person could
        /// write for them (any case, spaces around, `_` for `-`) and what they mean.
        #[derive(Debug, Clone)]
        struct Valid {
            port: u16,
            session_timeout: u64,
            strategy: Strategy,
            strategy_text: String,
            log_level: String,
            max_body_bytes: usize,
            idle_timeout: u64,
            retention_days: u64,
            upstream: String,
            slashes: usize,
            padding: String,
        }

        fn valid() -> impl Generator<Value = Valid> {
            (
                any::<u16>(),
                any::<u64>(),
                (
                    proptest::sample::select(&Strategy::ALL[..]),
                    any::<bool>(),
                    any::<bool>(),
                ),
                proptest::sample::select(&["error", "warn", "info", "debug", "trace"][..]),
                (1usize..=usize::MAX, 1u64..=u64::MAX, 0u64..=36_500),
                (
                    "https?://[a-z]{1,10}(\\.[a-z]{2,5})?(:[0-9]{1,5})?",
                    0usize..3,
                ),
                "[ \t]{0,2}",
            )
                .prop_map(
                    |(
                        port,
                        session_timeout,
                        (strategy, upper, underscore),
                        level,
                        numbers,
                        url,
                        padding,
                    )| {
                        let mut strategy_text = strategy.as_str().to_owned();
                        if upper {
                            strategy_text = strategy_text.to_ascii_uppercase();
                        }
                        if underscore {
                            strategy_text = strategy_text.replace('-', "_");
                        }
                        Valid {
                            port,
                            session_timeout,
                            strategy,
                            strategy_text,
                            log_level: level.to_owned(),
                            max_body_bytes: numbers.0,
                            idle_timeout: numbers.1,
                            retention_days: numbers.2,
                            upstream: url.0,
                            slashes: url.1,
                            padding,
                        }
                    },
                )
        }

        proptest! {
            #[test]
            fn any_layers_resolve_or_fail_without_panicking_or_echoing_secrets(
                flags in known_layer(),
                env in known_layer(),
                database in layer(),
                file in layer(),
            ) {
                match Settings::resolve_with_database(&flags, &env, &database, &file) {
                    Ok(settings) => {
                        for spec in OPTIONS {
                            let (_, raw) = &settings.sources[spec.key];
                            let shown = display_value(spec, raw);
                            if NEVER_SHOWN.contains(&spec.key) {
                                prop_assert!(shown.is_empty() || shown == "<set>");
                            }
                        }
                    }
                    Err(CoreError::InvalidOption { option, value, .. }) => {
                        let spec = OPTIONS.iter().find(|spec| spec.env == option);
                        prop_assert!(spec.is_some(), "{}", option);
                        if spec.unwrap().secret {
                            prop_assert_eq!(value, "<hidden>");
                        }
                    }
                    Err(CoreError::UnknownOption { option, .. }) => {
                        prop_assert!(file.contains_key(&option) && self::option(&option).is_none());
                    }
                }
            }

            #[test]
            fn valid_values_resolve_to_what_they_say_from_any_layer(
                valid in valid(),
                places in proptest::collection::vec(0usize..4, 9),
            ) {
                let pad = |text: &str| format!("{}{text}{}", valid.padding, valid.padding);
                let values = [
                    ("port", valid.port.to_string()),
                    ("session_timeout", valid.session_timeout.to_string()),
                    ("lb_strategy", valid.strategy_text.clone()),
                    ("log_level", valid.log_level.to_ascii_uppercase()),
                    ("max_body_bytes", valid.max_body_bytes.to_string()),
                    ("idle_timeout", valid.idle_timeout.to_string()),
                    ("retention_days", valid.retention_days.to_string()),
                    ("upstream_url", format!("{}{}", valid.upstream, "/".repeat(valid.slashes))),
                    ("host", "::1".to_owned()),
                ];
                // The database layer cannot hold options read before it opens (the log level).
                let places: Vec<usize> = values
                    .iter()
                    .zip(&places)
                    .map(|((key, _), &place)| if place == 2 && !storable(key) { 3 } else { place })
                    .collect();
                let mut layers = [Layer::new(), Layer::new(), Layer::new(), Layer::new()];
                for ((key, text), place) in values.iter().zip(&places) {
                    layers[*place].insert((*key).to_owned(), pad(text));
                }
                let [flags, env, database, file] = &layers;
                let settings = Settings::resolve_with_database(flags, env, database, file);
                let settings = settings.map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(settings.port, valid.port);
                prop_assert_eq!(settings.session_timeout_s, valid.session_timeout);
                prop_assert_eq!(settings.strategy, valid.strategy);
                prop_assert_eq!(&settings.log_level, &valid.log_level);
                prop_assert_eq!(settings.max_body_bytes, valid.max_body_bytes);
                prop_assert_eq!(settings.idle_timeout_s, valid.idle_timeout);
                prop_assert_eq!(settings.retention_days, valid.retention_days);
                prop_assert_eq!(&settings.upstream_url, &valid.upstream);
                prop_assert_eq!(&settings.host, "::1");
                let sources = [Source::Flag, Source::Env, Source::Database, Source::File];
                for ((key, text), place) in values.iter().zip(&places) {
                    prop_assert_eq!(&settings.sources[key], &(sources[*place], pad(text)));
                }
                // Shown as resolved: what `config show` prints reads back the same.
                prop_assert_eq!(settings.strategy.to_string().parse::<Strategy>(), Ok(valid.strategy));
            }

            #[test]
            fn the_higher_layer_wins(
                values in proptest::collection::vec(any::<u16>(), 4),
                present in proptest::collection::vec(any::<bool>(), 4),
            ) {
                let mut layers = [Layer::new(), Layer::new(), Layer::new(), Layer::new()];
                for (i, layer) in layers.iter_mut().enumerate() {
                    if present[i] {
                        layer.insert("port".into(), values[i].to_string());
                    }
                }
                let [flags, env, database, file] = &layers;
                let settings = Settings::resolve_with_database(flags, env, database, file).unwrap();
                let expected = (0..4).find(|&i| present[i]).map_or(8080, |i| values[i]);
                prop_assert_eq!(settings.port, expected);
            }

            #[test]
            fn shown_api_keys_never_contain_the_key(
                keys in proptest::collection::vec("sk-ant-[A-Za-z0-9_-]{13,60}", 1..4),
                separator in "(,|, |\n| )",
            ) {
                let spec = option("api_keys").unwrap();
                let shown = display_value(spec, &keys.join(&separator));
                for key in &keys {
                    prop_assert!(!shown.contains(key.as_str()), "{} shows {}", shown, key);
                    // At most the `sk-ant-` prefix and the last four characters.
                    prop_assert!(!shown.contains(&key[..key.len() - 4]));
                }
            }
        }
    }
}
