//! `ccflare-server healthcheck`: asks the server configured here (the same flags, environment,
//! `.env` and config file as the server itself) for its `/health`, within a short deadline, and
//! says in one line whether it is ready. Container images without curl use it as their
//! `HEALTHCHECK`; a supervisor or a person may run it too.
//!
//! Ready means the server answers `/health` with 200 and a status of `ok` **or `degraded`**:
//! degraded says the server serves but something needs a person (no account available, the
//! database failing, records lost), and restarting the process would mend none of that, while a
//! container runtime restarts an unhealthy container (and a fresh install with no accounts yet
//! would restart forever). `--strict` counts degraded as not ready, for those who want it.

use ccflare_core::config::Settings;
use http::{Request, StatusCode};
use std::time::Duration;

/// How long the check waits for the whole answer unless told otherwise: well inside Docker's
/// default HEALTHCHECK timeout (30 s), long enough for a busy server.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The outcome of one check: whether the server is ready, and the line to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub ready: bool,
    pub line: String,
}

/// The `/health` URL of the server these settings start: a wildcard listen address is reached
/// on the loopback address of its family.
pub fn health_url(settings: &Settings) -> String {
    let host = settings.host.trim_start_matches('[').trim_end_matches(']');
    let host = match host {
        "0.0.0.0" => "127.0.0.1",
        "::" => "::1",
        host => host,
    };
    if host.contains(':') {
        format!("http://[{host}]:{}/health", settings.port)
    } else {
        format!("http://{host}:{}/health", settings.port)
    }
}

/// GETs `url` within `timeout` and judges the answer (see the module's documentation).
pub async fn check(url: &str, timeout: Duration, strict: bool) -> Health {
    let not_ready = |why: String| Health {
        ready: false,
        line: format!("not ready: {url}: {why}"),
    };
    let client = ccflare_http::Client::new(ccflare_http::Limits {
        connect: timeout,
        total: timeout,
        max_body: 64 * 1024,
    });
    let request = match Request::get(url).body(Default::default()) {
        Ok(request) => request,
        Err(error) => return not_ready(format!("invalid address: {error}")),
    };
    let answer = match client.exchange(request).await {
        Ok(answer) => answer,
        Err(error) => return not_ready(crate::one_line(&error)),
    };
    if answer.status != StatusCode::OK {
        return not_ready(format!("answered {}", answer.status));
    }
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(&answer.body) else {
        return not_ready("the answer is not ccflare's /health".to_owned());
    };
    let status = body["status"].as_str().unwrap_or_default();
    let accounts = &body["accounts"];
    let revision = match body["revision"].as_str() {
        Some(revision) if !revision.is_empty() => format!(" (rev {revision})"),
        _ => String::new(),
    };
    let summary = format!(
        "ccflare {}{revision} at {url}, {}/{} accounts available",
        body["version"].as_str().unwrap_or("?"),
        accounts["available"].as_u64().unwrap_or(0),
        accounts["total"].as_u64().unwrap_or(0),
    );
    match status {
        "ok" => Health {
            ready: true,
            line: format!("ok: {summary}"),
        },
        "degraded" => Health {
            ready: !strict,
            line: format!("degraded: {summary}{}", degraded_reason(&body)),
        },
        _ => not_ready("the answer is not ccflare's /health".to_owned()),
    }
}

/// Why `/health` says degraded, as `: reason; reason` (empty when it names nothing).
fn degraded_reason(body: &serde_json::Value) -> String {
    let mut reasons = Vec::new();
    if body["accounts"]["available"].as_u64() == Some(0) {
        reasons.push("no account available".to_owned());
    }
    let database = &body["database"];
    if let Some(error) = database["error"].as_str() {
        reasons.push(format!("database not writable ({error})"));
    }
    if let Some(damage) = database["damaged"].as_str() {
        reasons.push(format!("database damaged ({damage})"));
    }
    if database["dropped_records"].as_u64().unwrap_or(0) > 0 {
        reasons.push("records were lost".to_owned());
    }
    if reasons.is_empty() {
        String::new()
    } else {
        format!(" ({})", reasons.join("; "))
    }
}

/// The whole `healthcheck` command: a small runtime, [`check`], the line on stdout (ready) or
/// stderr (not ready), and exit status 0 or 1 (never 2, which Docker reserves).
pub fn run(settings: &Settings, timeout: Duration, strict: bool) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("not ready: starting the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let health = runtime.block_on(check(&health_url(settings), timeout, strict));
    if health.ready {
        println!("{}", health.line);
        std::process::ExitCode::SUCCESS
    } else {
        eprintln!("{}", health.line);
        std::process::ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ccflare_core::config::Layer;

    fn url_for(host: &str, port: &str) -> String {
        let env: Layer = [
            ("host", host),
            ("port", port),
            ("admin_key", "0123456789abcdef"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        health_url(&Settings::resolve(&Layer::new(), &env, &Layer::new()).unwrap())
    }

    #[test]
    fn wildcard_addresses_are_reached_on_loopback() {
        assert_eq!(url_for("0.0.0.0", "80"), "http://127.0.0.1:80/health");
        assert_eq!(url_for("::", "81"), "http://[::1]:81/health");
        assert_eq!(url_for("[::]", "81"), "http://[::1]:81/health");
        assert_eq!(url_for("::1", "82"), "http://[::1]:82/health");
        assert_eq!(url_for("localhost", "83"), "http://localhost:83/health");
        assert_eq!(url_for("10.1.2.3", "84"), "http://10.1.2.3:84/health");
    }

    #[test]
    fn degraded_names_its_reasons() {
        let body = serde_json::json!({
            "accounts": { "available": 0 },
            "database": { "error": "disk full", "dropped_records": 2 },
        });
        assert_eq!(
            degraded_reason(&body),
            " (no account available; database not writable (disk full); records were lost)"
        );
    }
}
