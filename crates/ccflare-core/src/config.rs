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
        "client connections served at once; more wait (0 = what the open-files limit allows)",
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
            "admin_key",
            "CCFLARE_ADMIN_KEY",
            "admin-key",
            "",
            "key the management API (/api/*, /metrics) requires; required when HOST is not loopback",
        )
    },
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

/// Options read before the database is open, which therefore cannot be stored in it.
pub const NOT_STORABLE: &[&str] = &["database_url", "log_level", "log_format", "admin_key"];

/// Whether `ccflare-cli config set` / `PATCH /api/config` may store this option.
pub fn storable(key: &str) -> bool {
    option(key).is_some() && !NOT_STORABLE.contains(&key)
}

/// An option's value as it may be shown to people (`config show`, `GET /api/config`): API keys
/// masked one by one (`sk-ant-…wxyz`), the admin key never shown at all.
pub fn display_value(spec: &OptionSpec, raw: &str) -> String {
    if !spec.secret {
        return raw.to_owned();
    }
    if spec.key == "admin_key" {
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

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub port: u16,
    pub host: String,
    /// `None`: the binary's platform default.
    pub database_url: Option<String>,
    pub api_keys: Vec<String>,
    pub session_timeout_s: u64,
    pub log_level: String,
    pub log_json: bool,
    pub strategy: Strategy,
    pub upstream_url: String,
    pub max_body_bytes: usize,
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
    /// Where each option's value came from, by file key, with the raw text.
    pub sources: BTreeMap<&'static str, (Source, String)>,
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
        if !(upstream_url.starts_with("http://") || upstream_url.starts_with("https://"))
            || upstream_url.len() <= "https://".len()
        {
            return Err(invalid(spec, v, "an http:// or https:// URL"));
        }
        let (spec, v) = value("max_body_bytes");
        let max_body_bytes = number(spec, v, "a number of bytes above 0", |n: &usize| *n > 0)?;
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
            strategy,
            upstream_url,
            max_body_bytes,
            connect_timeout_s,
            idle_timeout_s,
            shutdown_timeout_s,
            max_attempts,
            max_connections,
            retention_days,
            oauth,
            admin_key,
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
        assert_eq!(s.database_url, None);
        assert_eq!(
            s.retention_days, 0,
            "rows are kept unless a person says otherwise"
        );
        assert_eq!(s.sources["port"].0, Source::Default);
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
    fn strategies_parse_in_either_spelling() {
        assert_eq!("round_robin".parse(), Ok(Strategy::RoundRobin));
        assert_eq!("Least-Requests".parse(), Ok(Strategy::LeastRequests));
        for st in Strategy::ALL {
            assert_eq!(st.as_str().parse(), Ok(st));
        }
    }
}
