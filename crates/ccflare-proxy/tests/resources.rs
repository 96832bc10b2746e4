//! Batches and files belong to the account that made them (docs/proxy.md, "Route families"):
//! in process, with real sockets and the mock, a request naming a batch goes only to that
//! account, also when it fails or is benched, and batch answers name the proxy's origin.

mod common;

use ccflare_mock::Fault;
use ccflare_testkit::key;
use common::{Options, spawn_app};
use http::{Method, StatusCode};

const BATCH: &str = r#"{"requests":[{"custom_id":"a","params":{"model":"claude-haiku-4-5","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}}]}"#;

#[tokio::test]
async fn a_request_for_a_batch_never_fails_over_to_another_account() {
    // alpha is tried first; beta would serve anything alpha cannot.
    let app = spawn_app(Options {
        accounts: vec![("alpha", 0), ("beta", 1)],
        ..Default::default()
    })
    .await;
    let created = app
        .send(app.request("/v1/messages/batches", &[], BATCH))
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text());
    assert_eq!(created.header("x-ccflare-account"), "alpha");
    let id = created.json()["id"].as_str().unwrap().to_owned();

    // The batch's account fails with a status that fails over any other request: the client
    // gets alpha's 529, and beta (another organisation) is never asked.
    app.mock.push_fault(&key("alpha"), Fault::Status(529));
    let path = format!("/v1/messages/batches/{id}");
    let get = |path: &str| {
        ccflare_testkit::http::request(
            Method::GET,
            &format!("{}{path}", app.url),
            &[("anthropic-version", "2023-06-01")],
            bytes::Bytes::new(),
        )
    };
    let failed = app.send(get(&path)).await;
    assert_eq!(failed.status.as_u16(), 529);
    assert_eq!(failed.header("x-ccflare-account"), "alpha");
    // alpha is benched now: the batch's requests wait for it rather than go to beta.
    let benched = app.send(get(&path)).await;
    assert_eq!(
        benched.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        benched.text()
    );
    assert!(!benched.header("retry-after").is_empty());
    // Any other request is served by beta meanwhile.
    assert_eq!(app.served_by().await, "beta");
    for request in app.mock.requests() {
        if request.path.contains(&id) {
            assert_eq!(request.credential.as_deref(), Some(key("alpha").as_str()));
        }
    }

    let records = app.records().await;
    let named: Vec<_> = records.iter().filter(|r| r.path == path).collect();
    assert_eq!(named.len(), 2);
    assert!(
        named
            .iter()
            .all(|r| r.attempts <= 1 && r.attempt_failures.len() <= 1)
    );
    let creation = records
        .iter()
        .find(|r| r.path == "/v1/messages/batches")
        .unwrap();
    assert_eq!(creation.resource_id.as_deref(), Some(id.as_str()));
    app.stop().await;
}

#[tokio::test]
async fn batch_answers_name_the_proxy_as_the_client_addressed_it() {
    let app = spawn_app(Options::default()).await;
    let created = app
        .send(app.request("/v1/messages/batches", &[], BATCH))
        .await
        .json();
    let id = created["id"].as_str().unwrap();
    let url = format!("{}/v1/messages/batches/{id}", app.url);
    let retrieved = app
        .send(ccflare_testkit::http::request(
            Method::GET,
            &url,
            &[("anthropic-version", "2023-06-01")],
            bytes::Bytes::new(),
        ))
        .await;
    let answer = retrieved.json();
    assert_eq!(
        answer["results_url"],
        format!("{url}/results").as_str(),
        "the mock's origin replaced by the proxy's"
    );
    assert_eq!(
        retrieved.header("content-length"),
        retrieved.body.len().to_string()
    );
    // Everything else is the upstream's answer.
    assert_eq!(answer["processing_status"], "ended");
    assert_eq!(answer["request_counts"]["succeeded"], 1);
    // The list names it too.
    let listed = app
        .send(ccflare_testkit::http::request(
            Method::GET,
            &format!("{}/v1/messages/batches", app.url),
            &[("anthropic-version", "2023-06-01")],
            bytes::Bytes::new(),
        ))
        .await
        .json();
    assert_eq!(
        listed["data"][0]["results_url"],
        format!("{url}/results").as_str()
    );
    app.stop().await;
}
