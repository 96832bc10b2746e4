//! Every answer the management API documents, held to `docs/openapi.json`: a server that
//! proxied a varied set of requests (plain and streamed, cached, failed over, refused by the
//! upstream, served by an API key and by a subscription), then every documented operation
//! called for every status it documents, each body checked against the schema the document
//! gives for that status and content type, and each event of the two live feeds against the
//! schema of its data (`x-events`). At the end every documented status must have been
//! answered, and every documented field met with a value other than null, bar the few listed
//! with their reasons: the check cannot pass by seeing little.
//!
//! A test binary of its own, with one test: the log feed needs this thread's default tracing
//! subscriber, which is only dependable when no other test registers log call sites
//! concurrently.

mod common;

use ccflare_api::router::{self, ROUTES};
use ccflare_core::AccountStatus;
use ccflare_mock::Fault;
use ccflare_storage::accounts;
use ccflare_testkit::openapi::Document;
use ccflare_testkit::sse::Event;
use ccflare_testkit::{Reply, SseReader, key};
use common::{
    App, Options, add_subscription, log_to, message_body, spawn_app, state_of, use_mock_oauth,
};
use http::{Method, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// Documented fields no answer of this test carries with a value, and why. The test fails if
/// one of them does show up, so this list cannot go stale.
const NEVER_SEEN: &[(&str, &str)] = &[
    (
        "#/components/schemas/CreatedClientKey/properties/last_used",
        "a key in the answer that creates it has never been used",
    ),
    (
        "#/components/schemas/RateLimitSnapshot/properties/unified_overage_status",
        "the mock sends no overage headers",
    ),
    (
        "#/components/schemas/RateLimitSnapshot/properties/unified_overage_disabled_reason",
        "the mock sends no overage headers",
    ),
];

/// What the calls found: which documented answers were met, which fields had values, and
/// every mismatch (collected, so one run lists them all).
struct Contract {
    document: Document,
    /// (method, path template, status key) of each documented answer met.
    answered: BTreeSet<(String, String, String)>,
    /// The schemas bodies and events were checked against, for the field coverage.
    roots: BTreeSet<String>,
    seen: BTreeSet<String>,
    failures: Vec<String>,
}

/// The documented path of a concrete one, from the server's own route table; `None` for a
/// path no route takes with this method (a 404 or 405 of the router).
fn template(method: &Method, path: &str) -> Option<&'static str> {
    let path = path.split('?').next().unwrap_or(path);
    let (endpoint, _) = router::find(method, path).ok()?;
    ROUTES
        .iter()
        .find(|route| route.endpoint == endpoint)
        .map(|route| route.pattern)
}

/// A content type without its parameters.
fn media_type(value: &str) -> &str {
    value.split(';').next().unwrap_or("").trim()
}

impl Contract {
    fn new() -> Contract {
        Contract {
            document: Document::parse(ccflare_api::OPENAPI),
            answered: BTreeSet::new(),
            roots: BTreeSet::new(),
            seen: BTreeSet::new(),
            failures: Vec::new(),
        }
    }

    /// Checks `value` against the schema at `pointer`, keeping what it found under `what`.
    fn check(&mut self, what: &str, pointer: &str, value: &Value) {
        let checked = self.document.check(pointer, value);
        self.roots.insert(pointer.to_owned());
        self.seen.extend(checked.seen);
        for error in checked.errors {
            self.failures.push(format!("{what}: {error}"));
        }
    }

    /// The documented answer for `reply` to `method path`: its media type's pointer, after
    /// checking the status is documented and the content type is the documented one.
    fn documented(&mut self, method: &Method, path: &str, reply: &Reply) -> Option<String> {
        let what = format!("{method} {path} → {}", reply.status.as_u16());
        let Some(template) = template(method, path) else {
            // Not an operation: the router's own 404 or 405, which only has the error shape.
            self.check(&what, "#/components/schemas/Error", &reply.json());
            return None;
        };
        let found = self
            .document
            .response(method.as_str(), template, reply.status.as_u16())
            .and_then(|(response, key)| {
                let media = media_type(reply.header("content-type"));
                let pointer = self.document.media(&response, media)?;
                Ok((key, pointer))
            });
        match found {
            Ok((key, pointer)) => {
                self.answered
                    .insert((method.to_string(), template.to_owned(), key));
                Some(pointer)
            }
            Err(error) => {
                self.failures.push(format!("{what}: {error}"));
                None
            }
        }
    }

    /// Checks a whole answer: its status and content type are documented, and a JSON body
    /// matches the schema given for them (a text body must be text).
    fn reply(&mut self, method: &Method, path: &str, reply: &Reply) {
        let Some(media) = self.documented(method, path, reply) else {
            return;
        };
        let what = format!("{method} {path} → {}", reply.status.as_u16());
        let body = if media.ends_with("/application~1json") {
            reply.json()
        } else {
            Value::String(reply.text().to_owned())
        };
        self.check(&what, &format!("{media}/schema"), &body);
    }

    /// Calls the API, expects `status`, checks the answer and returns its JSON (null when the
    /// body is not JSON).
    async fn call(
        &mut self,
        app: &App,
        method: Method,
        path: &str,
        body: &str,
        status: u16,
    ) -> Value {
        let reply = app.call(method.clone(), path, body).await;
        self.expect(&method, path, &reply, status);
        serde_json::from_slice(&reply.body).unwrap_or(Value::Null)
    }

    fn expect(&mut self, method: &Method, path: &str, reply: &Reply, status: u16) {
        assert_eq!(
            reply.status.as_u16(),
            status,
            "{method} {path}: {}",
            reply.text()
        );
        self.reply(method, path, reply);
    }

    async fn get(&mut self, app: &App, path: &str) -> Value {
        self.call(app, Method::GET, path, "", 200).await
    }

    async fn post(&mut self, app: &App, path: &str, body: Value, status: u16) -> Value {
        self.call(app, Method::POST, path, &body.to_string(), status)
            .await
    }

    /// Opens a live feed: its content type must be the documented event stream. Returns the
    /// reader and the pointer of the media type, whose `x-events` give each event's schema.
    async fn feed(&mut self, app: &App, path: &str) -> (SseReader<Incoming>, String) {
        let response = app.feed(path).await;
        let reply = Reply {
            status: response.status(),
            headers: response.headers().clone(),
            body: Default::default(),
            body_error: false,
        };
        assert_eq!(reply.status, StatusCode::OK, "GET {path}");
        let media = self
            .documented(&Method::GET, path, &reply)
            .unwrap_or_else(|| panic!("GET {path}: {:?}", self.failures));
        assert!(media.ends_with("/text~1event-stream"), "{media}");
        (SseReader::new(response.into_body()), media)
    }

    /// Checks one event of a feed: a documented name, and data that parses as JSON and
    /// matches that event's schema.
    fn event(&mut self, media: &str, event: &Event) {
        let what = format!("event {} of {media}", event.name);
        let pointer = format!("{media}/x-events/{}", event.name);
        if self.document.resolve(&pointer).is_none() {
            self.failures
                .push(format!("{what}: not a documented event"));
            return;
        }
        match serde_json::from_str::<Value>(&event.data) {
            Ok(data) => self.check(&what, &pointer, &data),
            Err(error) => self
                .failures
                .push(format!("{what}: data is not JSON ({error})")),
        }
    }

    /// Every documented status of every operation was answered, and every documented field of
    /// the schemas checked had a value somewhere, bar [`NEVER_SEEN`].
    fn assert_complete(&self) {
        let mut unanswered = Vec::new();
        let mut defaults = 0;
        for operation in self.document.operations() {
            for status in &operation.statuses {
                let key = (
                    operation.method.clone(),
                    operation.path.clone(),
                    status.clone(),
                );
                if status == "default" {
                    defaults += usize::from(self.answered.contains(&key));
                } else if !self.answered.contains(&key) {
                    unanswered.push(format!("{} {} {status}", operation.method, operation.path));
                }
            }
        }
        assert!(
            unanswered.is_empty(),
            "documented, never answered: {unanswered:#?}"
        );
        assert!(defaults >= 3, "the default answer was met {defaults} times");
        let documented: BTreeSet<String> = self
            .roots
            .iter()
            .flat_map(|root| self.document.properties(root))
            .collect();
        let unseen: BTreeSet<&str> = documented
            .difference(&self.seen)
            .map(String::as_str)
            .collect();
        let expected: BTreeSet<&str> = NEVER_SEEN.iter().map(|(field, _)| *field).collect();
        assert_eq!(
            unseen, expected,
            "documented fields never met with a value, against the list of those expected"
        );
    }
}

/// Proxied requests that give every documented field of a request, an account and the figures
/// a value: returns how many were sent.
async fn traffic(app: &App, contract: &mut Contract) -> usize {
    let mut sent = 0;
    let session = [("x-session-id", "contract")];
    // Alpha serves a cached JSON answer and a streamed one whose events come a few
    // milliseconds apart, so that it has a generation time (and so tokens per second).
    let paced = [("x-session-id", "contract"), ("x-mock-chunk-delay-ms", "5")];
    for (model, stream, cached, headers) in [
        ("claude-sonnet-4-5", false, true, &session[..]),
        ("claude-haiku-4-5", true, false, &paced[..]),
    ] {
        let reply = app
            .message(&message_body(model, stream, cached), headers)
            .await;
        assert_eq!(reply.header("x-ccflare-account"), "alpha");
        sent += 1;
    }
    // Alpha is rate limited for a minute: beta serves, with alpha's failure recorded.
    app.mock.push_fault(
        &key("alpha"),
        Fault::RateLimited {
            retry_after: Some(60),
            reset: None,
        },
    );
    let failed_over = app
        .message(&message_body("claude-sonnet-4-5", false, false), &session)
        .await;
    assert_eq!(failed_over.header("x-ccflare-account"), "beta");
    sent += 1;
    // Beta's upstream refuses one: an error type and message.
    app.mock.push_fault(&key("beta"), Fault::Status(400));
    let refused = app
        .message(&message_body("claude-sonnet-4-5", false, false), &[])
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    sent += 1;
    // With beta paused, the subscription account serves: its windows are recorded.
    contract
        .post(app, "/api/accounts/beta/pause", json!({}), 200)
        .await;
    let by_subscription = app
        .message(&message_body("claude-opus-4-1", false, false), &[])
        .await;
    assert_eq!(by_subscription.header("x-ccflare-account"), "sub");
    sent += 1;
    contract
        .post(app, "/api/accounts/beta/resume", json!({}), 200)
        .await;
    app.flushed().await;
    sent
}

/// Starts a login with `body` at `path`: its flow id and the paste that finishes it.
async fn start_login(
    app: &App,
    contract: &mut Contract,
    path: &str,
    body: Value,
    code: &str,
) -> (String, String) {
    let start = contract.post(app, path, body, 200).await;
    let state = state_of(start["authorize_url"].as_str().expect("an authorize URL"));
    let flow_id = start["flow_id"].as_str().expect("a flow id").to_owned();
    (flow_id, format!("{code}#{state}"))
}

async fn finish(app: &App, contract: &mut Contract, flow_id: &str, pasted: &str, status: u16) {
    let body = json!({"flow_id": flow_id, "code": pasted});
    contract.post(app, "/api/oauth/finish", body, status).await;
}

async fn account_operations(app: &App, c: &mut Contract) {
    let listed = c.get(app, "/api/accounts").await;
    let states: BTreeMap<&str, &str> = listed["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .map(|a| (a["name"].as_str().unwrap(), a["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states["alpha"], "rate_limited", "{listed}");
    c.get(app, "/api/accounts/sub").await;
    c.call(app, Method::GET, "/api/accounts/nobody", "", 404)
        .await;

    let gamma = json!({"api_key": key("gamma"), "name": "gamma", "priority": 9});
    c.post(app, "/api/accounts", gamma.clone(), 201).await;
    c.post(app, "/api/accounts", gamma.clone(), 409).await;
    // A key stored as invalid is active again when added anew.
    accounts::set_status(&app.db, "gamma", AccountStatus::Invalid, app.state.now())
        .await
        .expect("gamma marked invalid");
    c.post(app, "/api/accounts", gamma, 200).await;
    c.post(app, "/api/accounts", json!({"api_key": "not-a-key"}), 400)
        .await;
    let huge = format!(r#"{{"api_key":"{}"}}"#, "x".repeat(2 * 1024 * 1024));
    c.call(app, Method::POST, "/api/accounts", &huge, 413).await;

    for action in ["pause", "resume"] {
        let path = format!("/api/accounts/gamma/{action}");
        c.call(app, Method::POST, &path, "", 200).await;
        c.post(app, &path, json!({"now": true}), 400).await;
        let unknown = format!("/api/accounts/nobody/{action}");
        c.post(app, &unknown, json!({}), 404).await;
    }
    let rename = "/api/accounts/gamma/rename";
    c.post(app, rename, json!({"name": "a/b"}), 400).await;
    c.post(app, rename, json!({"name": "alpha"}), 409).await;
    c.post(app, rename, json!({"name": "delta"}), 200).await;
    c.post(app, "/api/accounts/gamma/rename", json!({"name": "x"}), 404)
        .await;
    let priority = "/api/accounts/delta/priority";
    c.post(app, priority, json!({"priority": 4}), 200).await;
    c.post(app, priority, json!({"priority": "high"}), 400)
        .await;
    c.post(
        app,
        "/api/accounts/nobody/priority",
        json!({"priority": 1}),
        404,
    )
    .await;
    c.call(app, Method::DELETE, "/api/accounts/delta", "", 200)
        .await;
    c.call(app, Method::DELETE, "/api/accounts/delta", "", 404)
        .await;
}

/// Client keys: created with every limit, used on `/v1` (so a request row names it), changed,
/// listed, asked about with `/api/me`, deleted.
async fn key_operations(app: &App, c: &mut Contract) {
    let team = json!({
        "name": "team", "budget_usd": 50, "budget_tokens": 1_000_000, "rpm": 1000,
        "max_concurrent": 10, "period": "day", "expires_at": "30d",
    });
    let created = c.post(app, "/api/keys", team.clone(), 201).await;
    let key = created["key"].as_str().expect("the new key").to_owned();
    c.post(app, "/api/keys", team, 409).await;
    c.post(app, "/api/keys", json!({"name": "a b"}), 400).await;
    c.post(app, "/api/keys", json!({"name": "other"}), 201)
        .await;
    let url = format!("{}/v1/messages", app.url);
    let body = message_body("claude-sonnet-4-5", false, false);
    let used = app
        .send(ccflare_testkit::http::anthropic_post(&url, &key, &[], body))
        .await;
    assert_eq!(used.status, StatusCode::OK, "{}", used.text());
    app.flushed().await;
    let patch = |body: Value| body.to_string();
    let path = "/api/keys/team";
    c.call(app, Method::PATCH, path, &patch(json!({"rpm": 500})), 200)
        .await;
    c.call(
        app,
        Method::PATCH,
        path,
        &patch(json!({"status": "gone"})),
        400,
    )
    .await;
    c.call(
        app,
        Method::PATCH,
        path,
        &patch(json!({"name": "other"})),
        409,
    )
    .await;
    let nobody = "/api/keys/nobody";
    c.call(app, Method::PATCH, nobody, &patch(json!({"rpm": 1})), 404)
        .await;
    let listed = c.get(app, "/api/keys").await;
    assert!(!listed.to_string().contains(&key[4..]), "{listed}");
    let me_url = format!("{}/api/me", app.url);
    let mine = app
        .send(ccflare_testkit::http::request(
            Method::GET,
            &me_url,
            &[("x-api-key", key.as_str())],
            "",
        ))
        .await;
    c.expect(&Method::GET, "/api/me", &mine, 200);
    let anonymous = app.send(ccflare_testkit::get(&me_url)).await;
    c.expect(&Method::GET, "/api/me", &anonymous, 401);
    c.call(app, Method::DELETE, "/api/keys/other", "", 200)
        .await;
    c.call(app, Method::DELETE, "/api/keys/other", "", 404)
        .await;
}

async fn login_operations(app: &App, c: &mut Contract) {
    // A subscription login and a Console login add accounts.
    let max = json!({"mode": "max", "name": "personal", "priority": 3});
    let (flow, paste) = start_login(app, c, "/api/oauth/start", max, "code-1").await;
    // A paste of another shape is refused, and the login stays open for the right one.
    finish(app, c, &flow, "no-state-here", 400).await;
    finish(app, c, &flow, &paste, 201).await;
    finish(app, c, &flow, &paste, 404).await;
    let console = json!({"mode": "console", "name": "team"});
    let (flow, paste) = start_login(app, c, "/api/oauth/start", console, "code-2").await;
    finish(app, c, &flow, &paste, 201).await;
    // Re-authentication renews an existing subscription account.
    let reauth = "/api/accounts/sub/reauth";
    let (flow, paste) = start_login(app, c, reauth, json!({}), "code-3").await;
    finish(app, c, &flow, &paste, 200).await;
    c.post(app, "/api/accounts/alpha/reauth", json!({}), 400)
        .await;
    c.post(app, "/api/accounts/nobody/reauth", json!({}), 404)
        .await;
    // The name is taken while the login is open.
    let late = json!({"mode": "max", "name": "late"});
    let (flow, paste) = start_login(app, c, "/api/oauth/start", late, "code-4").await;
    let taken = json!({"api_key": key("late"), "name": "late"});
    c.post(app, "/api/accounts", taken, 201).await;
    finish(app, c, &flow, &paste, 409).await;
    // The token endpoint fails.
    let flaky = json!({"mode": "max", "name": "flaky"});
    let (flow, paste) = start_login(app, c, "/api/oauth/start", flaky, "code-5").await;
    app.mock.push_oauth_fault(Fault::Status(503));
    finish(app, c, &flow, &paste, 502).await;
    let start = "/api/oauth/start";
    c.post(app, start, json!({"mode": "team", "name": "x"}), 400)
        .await;
    c.post(app, start, json!({"mode": "max", "name": "alpha"}), 409)
        .await;
    // Logins up to the limit, then a 429 for a start and for a re-authentication.
    let mut opened = 0;
    loop {
        let body = json!({"mode": "max", "name": format!("fill-{opened}")});
        let reply = app.call(Method::POST, start, &body.to_string()).await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            c.expect(&Method::POST, start, &reply, 429);
            break;
        }
        c.expect(&Method::POST, start, &reply, 200);
        opened += 1;
        assert!(opened <= 64, "no limit on open logins");
    }
    c.post(app, reauth, json!({}), 429).await;
}

async fn request_operations(app: &App, c: &mut Contract) {
    let page = c.get(app, "/api/requests?limit=2").await;
    assert!(page["next_cursor"].is_string(), "{page}");
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    c.get(app, &format!("/api/requests?cursor={cursor}")).await;
    let all = c.get(app, "/api/requests?limit=1000").await;
    c.call(app, Method::GET, "/api/requests?status=oops", "", 400)
        .await;
    let failed = c.get(app, "/api/requests?status=4xx&limit=1000").await;
    assert!(
        !failed["requests"].as_array().expect("requests").is_empty(),
        "{failed}"
    );
    for request in all["requests"].as_array().expect("requests") {
        let id = request["id"].as_str().expect("an id");
        c.get(app, &format!("/api/requests/{id}")).await;
    }
    c.call(app, Method::GET, "/api/requests/ccf_nothing", "", 404)
        .await;
}

async fn figure_operations(app: &App, c: &mut Contract) {
    let overview = c.get(app, "/api/analytics").await;
    assert_eq!(overview.as_object().map(|o| o.len()), Some(8), "{overview}");
    c.get(app, "/api/analytics?range=24h").await;
    c.call(app, Method::GET, "/api/analytics?range=2h", "", 400)
        .await;
    c.get(app, "/api/stats").await;
    c.get(app, "/metrics").await;
    let document = c.get(app, "/api/openapi.json").await;
    assert_eq!(document["openapi"], "3.0.3");

    c.get(app, "/api/config").await;
    for (change, status) in [
        (json!({"session_timeout": 600}), 200),
        (json!({"port": 1}), 400),
        // Pinned by the environment (see the app's options).
        (json!({"retention_days": 5}), 409),
    ] {
        let body = change.to_string();
        c.call(app, Method::PATCH, "/api/config", &body, status)
            .await;
    }
}

/// Answers outside an operation's own statuses: the default error shape.
async fn default_answers(app: &App, c: &mut Contract) {
    c.call(app, Method::GET, "/api/stats?x=1", "", 400).await;
    c.call(app, Method::PUT, "/api/accounts", "{}", 405).await;
    c.call(app, Method::GET, "/api/nothing", "", 404).await;
    let url = format!("{}/api/accounts", app.url);
    let origin = [("origin", "http://evil.example")];
    let cross = app
        .send(ccflare_testkit::http::request(
            Method::GET,
            &url,
            &origin,
            "",
        ))
        .await;
    c.expect(&Method::GET, "/api/accounts", &cross, 403);
    // With an admin key, a call without it is refused.
    let mut layers = app.state.layers();
    layers
        .env
        .insert("admin_key".to_owned(), "contract-admin-key".to_owned());
    let settings =
        ccflare_core::config::Settings::resolve(&layers.flags, &layers.env, &layers.file)
            .expect("settings");
    app.state.configure(layers, settings);
    c.call(app, Method::GET, "/api/config", "", 401).await;
    // The dashboard's login: a wrong key, the key, and logging out.
    c.post(app, "/api/session", json!({"key": "not-it"}), 401)
        .await;
    c.post(
        app,
        "/api/session",
        json!({"key": "contract-admin-key"}),
        200,
    )
    .await;
    c.call(app, Method::DELETE, "/api/session", "", 200).await;
}

/// The dashboard's session endpoints on a server without an admin key.
async fn session_operations(app: &App, c: &mut Contract) {
    let info = c.get(app, "/api/session").await;
    assert_eq!(info["admin_key_required"], false);
    c.post(app, "/api/session", json!({"key": "anything"}), 409)
        .await;
    c.call(app, Method::POST, "/api/session", "{", 400).await;
}

#[tokio::test(flavor = "current_thread")]
async fn every_documented_answer_matches_its_schema() {
    let logs = ccflare_api::LogFeed::new(200);
    // A current-thread runtime: the server, the mock and this test share the thread whose
    // default subscriber this is, and nothing runs while this test logs (see the lag below).
    let _guard = log_to(&logs);
    let app = spawn_app(Options {
        accounts: vec![("alpha", 0), ("beta", 1)],
        // Pinned, so that changing it is a 409.
        env: [("retention_days".to_owned(), "0".to_owned())]
            .into_iter()
            .collect(),
        logs: logs.clone(),
        ..Options::default()
    })
    .await;
    use_mock_oauth(&app);
    add_subscription(&app).await;
    let mut c = Contract::new();

    // The request feed sees the traffic as it happens.
    let (mut requests, request_media) = c.feed(&app, "/api/requests/stream").await;
    let sent = traffic(&app, &mut c).await;
    let mut names = Vec::new();
    for _ in 0..2 * sent {
        let event = requests.next().await;
        c.event(&request_media, &event);
        names.push(event.name);
    }
    assert_eq!(
        names.iter().filter(|n| *n == "request_finished").count(),
        sent,
        "{names:?}"
    );

    account_operations(&app, &mut c).await;
    key_operations(&app, &mut c).await;
    login_operations(&app, &mut c).await;
    request_operations(&app, &mut c).await;
    figure_operations(&app, &mut c).await;
    session_operations(&app, &mut c).await;

    // The log feed: its history, then a burst larger than a subscriber's buffer, logged
    // while the server cannot run (one thread), so the feed must say it lagged.
    let (mut lines, log_media) = c.feed(&app, "/api/logs/stream").await;
    let first = lines.next().await;
    assert_eq!(first.name, "log");
    c.event(&log_media, &first);
    for n in 0..1100 {
        tracing::info!(n, "a burst line");
    }
    // The rest of the history (at most 200 lines), then the lag, then the newest lines.
    let mut history = 1;
    loop {
        let event = lines.next().await;
        c.event(&log_media, &event);
        if event.name == "lagged" {
            break;
        }
        history += 1;
        assert!(history <= 200, "no lagged event after the history");
    }
    let after = lines.next().await;
    assert_eq!(after.name, "log");
    c.event(&log_media, &after);

    default_answers(&app, &mut c).await;

    assert!(
        c.failures.is_empty(),
        "answers that differ from docs/openapi.json:\n{}",
        c.failures.join("\n")
    );
    c.assert_complete();
    drop((requests, lines));
    app.stop().await;
}
