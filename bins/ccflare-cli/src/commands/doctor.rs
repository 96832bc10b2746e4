//! `ccflare-cli doctor`: checks what ccflare needs, one line each — the configuration, the
//! database (opens, migrations, `PRAGMA integrity_check`, whether the accounts' keys and
//! tokens are encrypted and the configured key opens them), every account's state, that the
//! upstream answers, and whether a server is running. Nothing here spends quota: the upstream
//! check is a `GET /v1/models` without a key, where any HTTP answer (a 401 included) shows the
//! network path works. Exits non-zero when a check fails; warnings do not.

use crate::commands::accounts;
use crate::context::{self, Context};
use crate::output::{self, Align, Cell, Color, Table};
use anyhow::Result;
use bytes::Bytes;
use ccflare_core::config::Settings;
use ccflare_http::{BaseUrl, Client, HttpError, Limits};
use ccflare_pool::RoutingState;
use clap::Args;
use http_body_util::Full;
use serde::Serialize;
use std::process::ExitCode;
use std::time::Duration;

/// How long the server check waits: a local server answers `/health` at once.
const SERVER_TIMEOUT: Duration = Duration::from_secs(2);
/// Added to the connect timeout for the upstream's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest `/health` answer read (it is under a kilobyte).
const MAX_HEALTH: usize = 64 * 1024;

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ccflare-cli doctor
  ccflare-cli doctor --json

No request is sent with an account's key: the upstream check is a GET of
/v1/models without one, and any HTTP answer proves it is reachable.")]
pub struct DoctorArgs {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Info,
    Warn,
    Fail,
}

impl Status {
    fn label(self) -> (&'static str, Color) {
        match self {
            Status::Ok => ("ok", Color::Green),
            Status::Info => ("info", Color::Dim),
            Status::Warn => ("warn", Color::Yellow),
            Status::Fail => ("FAIL", Color::Red),
        }
    }
}

#[derive(Debug, Serialize)]
struct Check {
    status: Status,
    check: String,
    detail: String,
}

#[derive(Default)]
struct Report {
    checks: Vec<Check>,
}

impl Report {
    fn add(&mut self, status: Status, check: impl Into<String>, detail: impl Into<String>) {
        self.checks.push(Check {
            status,
            check: check.into(),
            detail: detail.into(),
        });
    }

    fn failed(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .count()
    }

    fn warned(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| c.status == Status::Warn)
            .count()
    }
}

pub async fn run(context: &Context, _args: DoctorArgs) -> Result<ExitCode> {
    let report = checks(context).await;
    let (failed, warned) = (report.failed(), report.warned());
    if context.json() {
        output::print_json(&serde_json::json!({
            "checks": report.checks,
            "ok": failed == 0,
        }))?;
    } else {
        let mut table = Table::new(&[
            ("STATUS", Align::Left),
            ("CHECK", Align::Left),
            ("DETAIL", Align::Left),
        ])
        .flex(2)
        .wrap();
        for check in &report.checks {
            let (label, color) = check.status.label();
            table.row(vec![
                Cell::colored(label, Some(color)),
                check.check.as_str().into(),
                check.detail.as_str().into(),
            ]);
        }
        let mut text = table.render(&context.style);
        text.push_str(&match (failed, warned) {
            (0, 0) => "all checks passed\n".to_owned(),
            (0, w) => format!("no failures, {w} warning{}\n", plural(w)),
            (f, w) => format!("{f} check{} failed, {w} warning{}\n", plural(f), plural(w)),
        });
        output::print(&text)?;
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

async fn checks(context: &Context) -> Report {
    let mut report = Report::default();
    let sources = match context.sources() {
        Ok(sources) => sources,
        Err(error) => {
            report.add(Status::Fail, "config", format!("{error:#}"));
            return report;
        }
    };
    let url = match context.database_url(&sources) {
        Ok(url) => url,
        Err(error) => {
            report.add(Status::Fail, "database", format!("{error:#}"));
            return report;
        }
    };

    // The database: it opens (which applies pending migrations, as the server does at
    // start), its schema is one this build knows, and SQLite finds it sound.
    let key = match context.encryption_key(&sources) {
        Ok(key) => key,
        Err(error) => {
            report.add(Status::Fail, "encryption", format!("{error:#}"));
            None
        }
    };
    let db = match ccflare_storage::Db::open(&url).await {
        Ok(db) => db.with_encryption_key(key),
        Err(error) => {
            report.add(Status::Fail, "database", error.to_string());
            return report;
        }
    };
    report.add(Status::Ok, "database", context::show_path(db.path()));
    match ccflare_analytics::stats::database_facts(&db).await {
        Ok(facts) => {
            let version = facts.migrations.last().copied().unwrap_or(0);
            report.add(
                Status::Ok,
                "migrations",
                format!("schema version {version}, current"),
            );
            if facts.integrity == ["ok"] {
                report.add(
                    Status::Ok,
                    "integrity",
                    format!(
                        "ok ({} requests recorded)",
                        output::count(facts.request_rows)
                    ),
                );
            } else {
                report.add(Status::Fail, "integrity", facts.integrity.join("; "));
            }
        }
        Err(error) => report.add(Status::Fail, "integrity", error.to_string()),
    }
    check_secrets(&db, &mut report).await;

    // The configuration as a server started now would resolve it.
    let stored = match ccflare_storage::settings::all(&db).await {
        Ok(stored) => stored,
        Err(error) => {
            report.add(Status::Fail, "config", error.to_string());
            return report;
        }
    };
    let settings = match context::resolve(&sources, &stored) {
        Ok(settings) => {
            let file = match &sources.config_file {
                Some(path) => format!("config file {}", context::show_path(path)),
                None => "no config file".to_owned(),
            };
            report.add(
                Status::Ok,
                "config",
                format!("valid; strategy {}, {file}", settings.strategy),
            );
            Some(settings)
        }
        Err(error) => {
            report.add(Status::Fail, "config", format!("{error:#}"));
            None
        }
    };

    check_accounts(context, &db, &mut report).await;
    if let Some(settings) = &settings {
        check_client_keys(context, settings, &db, &mut report).await;
    }
    if let Some(settings) = settings {
        check_upstream(&settings, &mut report).await;
        check_server(&settings, &mut report).await;
    }
    db.close().await;
    report
}

/// Secrets at rest: whether the accounts' keys and tokens are encrypted, and whether the
/// configured key opens them (a server refuses to start otherwise).
async fn check_secrets(db: &ccflare_storage::Db, report: &mut Report) {
    let status = match ccflare_storage::secrets::check(db).await {
        Ok(status) => status,
        Err(error) => {
            report.add(
                Status::Fail,
                "encryption",
                format!("{error}; a server will not start"),
            );
            return;
        }
    };
    match db.encryption_key() {
        None => report.add(
            Status::Info,
            "encryption",
            "off: account keys and tokens are stored in plaintext; to encrypt them set \
             CCFLARE_ENCRYPTION_KEY_FILE and run `ccflare-cli secrets encrypt`",
        ),
        Some(key) if status.plaintext > 0 => report.add(
            Status::Warn,
            "encryption",
            format!(
                "{} stored in plaintext: run `ccflare-cli secrets encrypt` (new ones are \
                 encrypted with key {})",
                secrets_counted(status.plaintext),
                key.id()
            ),
        ),
        Some(key) => report.add(
            Status::Ok,
            "encryption",
            format!(
                "on: {} encrypted with key {}",
                secrets_counted(status.encrypted),
                key.id()
            ),
        ),
    }
    for setting in &status.settings_holding_keys {
        report.add(
            Status::Warn,
            "encryption",
            format!(
                "the stored setting {setting} holds a key in plaintext: remove it with \
                 `ccflare-cli config unset {setting}`"
            ),
        );
    }
}

/// "1 key or token", "3 keys and tokens".
fn secrets_counted(n: u64) -> String {
    if n == 1 {
        "1 key or token".to_owned()
    } else {
        format!("{n} keys and tokens")
    }
}

async fn check_accounts(context: &Context, db: &ccflare_storage::Db, report: &mut Report) {
    let listed = match ccflare_storage::accounts::list(db).await {
        Ok(listed) => listed,
        Err(error) => {
            report.add(Status::Fail, "accounts", error.to_string());
            return;
        }
    };
    let now = context.now();
    let states: Vec<accounts::State> = listed.iter().map(|a| accounts::state(a, now)).collect();
    let active = states.iter().filter(|s| s.routing.is_routable()).count();
    let benched = states
        .iter()
        .filter(|s| s.routing.until().is_some())
        .count();
    let (status, detail) = match (listed.len(), active, benched) {
        (0, _, _) => (
            Status::Fail,
            "none: add one with `ccflare-cli accounts add sk-ant-…`".to_owned(),
        ),
        (n, 0, 0) => (
            Status::Fail,
            format!("{n} configured, none can serve (paused or invalid)"),
        ),
        (n, 0, _) => (
            Status::Warn,
            format!("{n} configured, all cooling down: requests wait for a reset"),
        ),
        (n, a, _) => (Status::Ok, format!("{n} configured, {a} active")),
    };
    report.add(status, "accounts", detail);
    for (account, state) in listed.iter().zip(&states) {
        let status = match state.routing {
            RoutingState::Active => Status::Ok,
            RoutingState::Paused => Status::Info,
            RoutingState::Invalid
            | RoutingState::RateLimited { .. }
            | RoutingState::Overloaded { .. } => Status::Warn,
        };
        let detail = match state.routing {
            // An OAuth account's login was refused: a new login, not a key, fixes it.
            RoutingState::Invalid if account.kind == ccflare_core::AccountKind::OAuth => format!(
                "{}: Invalid (login refused; needs re-auth: `ccflare-cli accounts reauth {}`)",
                account.name, account.name
            ),
            RoutingState::Invalid => format!(
                "{}: Invalid (key refused; re-add it with `ccflare-cli accounts add`)",
                account.name
            ),
            _ => format!("{}: {}", account.name, state.label),
        };
        report.add(status, "account", detail);
    }
}

/// Whether `/v1` requires client keys on the configured address, and whether a server would
/// start at all (SPEC §11: not on a network address without them, nor requiring keys that do
/// not exist).
async fn check_client_keys(
    context: &Context,
    settings: &Settings,
    db: &ccflare_storage::Db,
    report: &mut Report,
) {
    let listed = match ccflare_storage::keys::list(db).await {
        Ok(listed) => listed,
        Err(error) => {
            report.add(Status::Fail, "client keys", error.to_string());
            return;
        }
    };
    let now = context.now();
    let usable = listed
        .iter()
        .filter(|k| k.status == ccflare_core::client_key::KeyStatus::Active && !k.expired(now))
        .count();
    let loopback = ccflare_core::config::is_loopback_host(&settings.host);
    let required = settings.require_client_keys.required(loopback);
    let host = &settings.host;
    let (status, detail) = match (required, listed.len()) {
        _ if !loopback && !required => (
            Status::Fail,
            format!(
                "not required on HOST={host}, reachable from other machines: the server refuses \
                 to start (remove REQUIRE_CLIENT_KEYS=false)"
            ),
        ),
        (true, 0) => (
            Status::Fail,
            "required, but none exists: the server refuses to start; create one with \
             `ccflare-cli keys create NAME`"
                .to_owned(),
        ),
        (true, n) => (
            Status::Ok,
            format!("required for /v1; {n} stored, {usable} usable"),
        ),
        (false, 0) => (
            Status::Info,
            format!("optional on {host} (loopback): none created"),
        ),
        (false, n) => (
            Status::Info,
            format!(
                "optional on {host} (loopback): {n} stored, but requests without a key are \
                 served too (REQUIRE_CLIENT_KEYS=true requires them)"
            ),
        ),
    };
    report.add(status, "client keys", detail);
}

async fn check_upstream(settings: &Settings, report: &mut Report) {
    let connect = Duration::from_secs(settings.connect_timeout_s);
    let target = format!("{}/v1/models", settings.upstream_url);
    let uri = match BaseUrl::parse(&settings.upstream_url).map(|base| base.join("/v1/models")) {
        Ok(Ok(uri)) => uri,
        Ok(Err(error)) => {
            report.add(Status::Fail, "upstream", format!("{target}: {error}"));
            return;
        }
        Err(error) => {
            report.add(Status::Fail, "upstream", error.to_string());
            return;
        }
    };
    let client = Client::new(Limits {
        connect,
        total: connect + ANSWER_TIMEOUT,
        // Only the status is read.
        max_body: 0,
    });
    match client.open(probe(uri)).await {
        // Any HTTP answer proves the path works; the body is dropped unread.
        Ok(response) => report.add(
            Status::Ok,
            "upstream",
            format!(
                "reachable: HTTP {} from {target} (no key sent)",
                response.status().as_u16()
            ),
        ),
        Err(HttpError::Timeout(total)) => report.add(
            Status::Fail,
            "upstream",
            format!("no answer from {target} in {}s", total.as_secs()),
        ),
        Err(error) => report.add(
            Status::Fail,
            "upstream",
            format!("cannot reach {target}: {}", error_chain(&error)),
        ),
    }
}

/// A `GET` with no credential: doctor spends no quota and shows no key.
fn probe(uri: http::Uri) -> http::Request<Full<Bytes>> {
    http::Request::get(uri)
        .header(http::header::USER_AGENT, "ccflare-doctor")
        .body(Full::new(Bytes::new()))
        .expect("a GET of a checked URI")
}

/// Whether a server answers at the configured address: information only, since the CLI works
/// on the database with or without one. A running server that cannot write its database
/// (records waiting in its memory) or holds OAuth logins it could not store is a warning.
async fn check_server(settings: &Settings, report: &mut Report) {
    let base = context::server_base(settings);
    match server_health(&base, settings.admin_key.as_ref()).await {
        Some((status, health)) if status.is_success() => {
            report.add(Status::Ok, "server", format!("running at {base}"));
            let database = health.as_ref().map(|h| &h["database"]);
            if let Some(database) = database.filter(|d| d["writable"] == false) {
                report.add(
                    Status::Warn,
                    "server db",
                    format!(
                        "the server cannot write the database ({}); {} records wait in its \
                         memory: see docs/proxy.md, Recording",
                        database["error"].as_str().unwrap_or("no reason given"),
                        database["waiting_records"].as_u64().unwrap_or(0)
                    ),
                );
            }
            if let Some(damage) = database.and_then(|d| d["damaged"].as_str()) {
                report.add(
                    Status::Fail,
                    "server db",
                    format!(
                        "the server found the database damaged ({damage}): see `ccflare-cli db \
                         check` and docs/operations.md"
                    ),
                );
            }
            let count = |field: &str| database.and_then(|d| d[field].as_u64()).unwrap_or(0);
            let spilled = count("spilled_records");
            if spilled > 0 {
                report.add(
                    Status::Warn,
                    "server db",
                    format!(
                        "{spilled} records wait in the spill file beside the database; they go \
                         in when it can be written"
                    ),
                );
            }
            let dropped = count("dropped_records");
            if dropped > 0 {
                report.add(
                    Status::Fail,
                    "server db",
                    format!("{dropped} records were lost: see the server's log"),
                );
            }
            let unsaved = count("unsaved_logins");
            if unsaved > 0 {
                report.add(
                    Status::Warn,
                    "server db",
                    format!(
                        "{unsaved} OAuth login(s) refreshed but not stored yet: keep the server \
                         running until it can write the database"
                    ),
                );
            }
        }
        Some((status, _)) => report.add(
            Status::Warn,
            "server",
            format!("{base}/health answered HTTP {}", status.as_u16()),
        ),
        None => report.add(
            Status::Info,
            "server",
            format!("none running at {base} (not needed for the CLI)"),
        ),
    }
}

/// `GET {base}/health`: the status, and the body when it is JSON; `None` when nothing answers
/// within [`SERVER_TIMEOUT`]. With the admin key, which a server wants before it shows the
/// database's error texts.
async fn server_health(
    base: &str,
    admin_key: Option<&ccflare_core::Secret>,
) -> Option<(http::StatusCode, Option<serde_json::Value>)> {
    let client = Client::new(Limits {
        connect: SERVER_TIMEOUT,
        total: SERVER_TIMEOUT,
        max_body: MAX_HEALTH,
    });
    let uri: http::Uri = format!("{base}/health").parse().ok()?;
    let mut request = probe(uri);
    if let Some(key) = admin_key {
        let mut value = http::HeaderValue::from_str(key.expose()).ok()?;
        value.set_sensitive(true);
        request.headers_mut().insert("x-ccflare-admin-key", value);
    }
    let answer = client.exchange(request).await.ok()?;
    Some((answer.status, serde_json::from_slice(&answer.body).ok()))
}

/// An error and its causes on one line.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
