//! Accounts as the rest of ccflare sees them: who they are, what credential they carry, and the
//! part of their state a person controls. Cooldowns (rate limited, overloaded) are runtime state
//! owned by the pool; they are persisted but never edited by hand.

use crate::secret::Secret;
use crate::time::Millis;
use std::fmt;
use std::str::FromStr;

/// The database id of an account.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct AccountId(pub i64);

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How an account authenticates upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountKind {
    /// A Console API key, sent as `x-api-key`.
    ApiKey,
    /// A Claude Pro/Max OAuth access token, sent as `Authorization: Bearer` with the OAuth beta.
    OAuth,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::ApiKey => "api_key",
            AccountKind::OAuth => "oauth",
        }
    }
}

impl FromStr for AccountKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "api_key" => Ok(AccountKind::ApiKey),
            "oauth" => Ok(AccountKind::OAuth),
            other => Err(format!("unknown account kind {other:?}")),
        }
    }
}

/// The state a person (or a dead credential) sets; it only changes by an explicit act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountStatus {
    Active,
    /// Paused by a person: not routed until resumed.
    Paused,
    /// The credential was refused for good (a 401 on an API key, or an OAuth refresh token the
    /// token endpoint refused): not routed until a person re-adds or re-authenticates it. A 403
    /// never makes an account invalid: the refusal may be about the request.
    Invalid,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Paused => "paused",
            AccountStatus::Invalid => "invalid",
        }
    }
}

impl FromStr for AccountStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(AccountStatus::Active),
            "paused" => Ok(AccountStatus::Paused),
            "invalid" => Ok(AccountStatus::Invalid),
            other => Err(format!("unknown account status {other:?}")),
        }
    }
}

/// One account as stored. `revision` grows with every change a person makes (add, pause,
/// rename, re-add), so a running server can tell a person's edit from its own state writes.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: AccountId,
    pub name: String,
    pub kind: AccountKind,
    pub credential: Secret,
    /// Lower numbers are preferred by the `priority` strategy; 0 is the default.
    pub priority: i64,
    /// Stored and shown (`accounts list --json`, `/api/accounts`) because SPEC §5 gives every
    /// account a weight, but nothing sets it (always the schema's 1) and no strategy reads it,
    /// so the pool does not carry it.
    pub weight: u32,
    pub status: AccountStatus,
    pub revision: i64,
    /// Benched after a 429 until this time, if set.
    pub rate_limited_until: Option<Millis>,
    /// Benched after a 529 until this time, if set.
    pub overloaded_until: Option<Millis>,
    /// When an OAuth access token expires; `None` for API keys.
    pub token_expires_at: Option<Millis>,
}

impl Account {
    /// An account as it is first stored: active, revision 1, priority 0, weight 1, no
    /// cooldowns and no token expiry (set those with struct update syntax).
    pub fn new(
        id: AccountId,
        name: impl Into<String>,
        kind: AccountKind,
        credential: Secret,
    ) -> Account {
        Account {
            id,
            name: name.into(),
            kind,
            credential,
            priority: 0,
            weight: 1,
            status: AccountStatus::Active,
            revision: 1,
            rate_limited_until: None,
            overloaded_until: None,
            token_expires_at: None,
        }
    }
}

/// A readable, stable name for an API key that does not reveal it: `key-` and its last four
/// characters (which SPEC §11 allows to be shown), e.g. `key-wxyz`.
pub fn default_key_name(key: &str) -> String {
    let tail: String = key
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("key-{tail}")
}

/// Checks that a string looks like an Anthropic credential before it is stored. An Admin API
/// key (`sk-ant-admin…`) is refused: it manages an organisation (its members, its keys) and
/// cannot call the Messages API, so it has no place in a pool that forwards clients' requests.
pub fn check_api_key(key: &str) -> Result<(), String> {
    if !key.starts_with("sk-ant-") {
        return Err("not an Anthropic key: expected a value starting with `sk-ant-`".into());
    }
    if key.starts_with("sk-ant-admin") {
        return Err(
            "an Admin API key (sk-ant-admin…) manages an organisation and cannot serve requests: \
             use an API key (sk-ant-api…)"
                .into(),
        );
    }
    if key.len() < 20 || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("not an Anthropic key: too short or contains whitespace".into());
    }
    Ok(())
}

/// Splits the `CLAUDE_API_KEYS` value: keys separated by commas, spaces or newlines.
pub fn split_api_keys(value: &str) -> Vec<String> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .map(|k| k.trim_matches(|c| c == '"' || c == '\''))
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_show_only_the_tail() {
        assert_eq!(
            default_key_name("sk-ant-api03-secretsecret-AbCd"),
            "key-AbCd"
        );
    }

    #[test]
    fn keys_split_on_commas_spaces_and_newlines() {
        let keys = split_api_keys("\n sk-ant-a1,\nsk-ant-b2 sk-ant-c3,, \n");
        assert_eq!(keys, ["sk-ant-a1", "sk-ant-b2", "sk-ant-c3"]);
    }

    #[test]
    fn key_check_names_what_was_expected() {
        assert!(check_api_key("sk-ant-api03-0123456789abcdef").is_ok());
        let err = check_api_key("sk-proj-0123456789abcdef").unwrap_err();
        assert!(err.contains("sk-ant-"));
        let err = check_api_key("sk-ant-admin01-0123456789abcdef").unwrap_err();
        assert!(err.contains("Admin API key") && !err.contains("0123456789abcdef"));
    }
}
