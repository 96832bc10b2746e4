//! No OAuth secret reaches a log line: API logins (add, Console, re-authentication, a refused
//! code, a passing failure) run with every log line at TRACE captured unscrubbed, and the
//! capture is searched for tokens, minted keys, verifiers and pasted codes. A test binary of
//! its own: tracing's per-thread default subscriber is only dependable when no other test
//! registers log call sites concurrently.

mod common;

use ccflare_mock::Fault;
use common::{App, Options, code_verifiers, message_body, spawn_app, use_mock_oauth};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use std::io::Write;
use std::sync::{Arc, Mutex};

/// A writer into a shared buffer.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Starts a login and finishes it with `code`; returns the finish answer's status.
async fn login(app: &App, path: &str, body: Value, code: &str) -> StatusCode {
    let start = app.call(Method::POST, path, &body.to_string()).await;
    assert_eq!(start.status, StatusCode::OK, "{}", start.text());
    let start = start.json();
    let url = start["authorize_url"].as_str().unwrap();
    let state = url.split("state=").nth(1).unwrap();
    let finish = json!({"flow_id": start["flow_id"], "code": format!("{code}#{state}")});
    app.call(Method::POST, "/api/oauth/finish", &finish.to_string())
        .await
        .status
}

#[tokio::test(flavor = "current_thread")]
async fn logins_log_no_secret() {
    use tracing_subscriber::layer::SubscriberExt;
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            // No filter: every level, TRACE included.
            .with_writer(move || writer.clone()),
    );
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = spawn_app(Options {
        accounts: vec![],
        ..Options::default()
    })
    .await;
    use_mock_oauth(&app);

    let max = json!({"mode": "max", "name": "personal"});
    let console = json!({"mode": "console", "name": "team"});
    assert_eq!(
        login(&app, "/api/oauth/start", max, "code-1111").await,
        StatusCode::CREATED
    );
    assert_eq!(
        login(&app, "/api/oauth/start", console, "code-2222").await,
        StatusCode::CREATED
    );
    assert_eq!(
        login(
            &app,
            "/api/accounts/personal/reauth",
            json!({}),
            "code-3333"
        )
        .await,
        StatusCode::OK
    );
    let refused = json!({"mode": "max", "name": "refused"});
    assert_eq!(
        login(&app, "/api/oauth/start", refused, "invalid-code").await,
        StatusCode::BAD_REQUEST
    );
    app.mock.push_oauth_fault(Fault::Status(500));
    let flaky = json!({"mode": "max", "name": "flaky"});
    assert_eq!(
        login(&app, "/api/oauth/start", flaky, "code-4444").await,
        StatusCode::BAD_GATEWAY
    );
    let reply = app
        .message(&message_body("claude-sonnet-4-5", false, false), &[])
        .await;
    assert_eq!(reply.status, StatusCode::OK);

    let logged = capture.text();
    assert!(
        logged.contains("OAuth login finished through the API"),
        "the capture works: {logged}"
    );
    let verifiers = code_verifiers(&app.mock);
    assert_eq!(verifiers.len(), 5);
    for secret in ["sk-ant-oat", "sk-ant-ort", "sk-ant-api03-mock-minted"]
        .into_iter()
        .chain(verifiers.iter().map(String::as_str))
        .chain(["code-1111", "code-2222", "code-3333", "code-4444"])
    {
        assert!(!logged.contains(secret), "{secret} was logged");
    }
    app.stop().await;
}
