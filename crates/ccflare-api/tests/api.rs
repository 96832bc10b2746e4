//! The management API end to end: a server that proxied real requests to the mock upstream,
//! every endpoint called over a real socket, and the numbers checked against what was sent —
//! the mock's usage is deterministic (input = body bytes / 4, output = words of the answer,
//! 100 cache reads and 50 cache writes when the body has `"cache_control"`).

mod common;

use ccflare_api::router::ROUTES;
use ccflare_core::config::{Layer, Strategy};
use ccflare_core::pricing;
use ccflare_core::usage::Usage;
use ccflare_mock::Fault;
use ccflare_storage::{requests, rollups};
use ccflare_testkit::{SseReader, key};
use common::{App, Options, message_body, nearest_rank, spawn_app};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// Words in the mock's default answer, "Hello from the mock upstream.".
const OUTPUT: u64 = 5;

/// What the mock reports for a body.
fn usage_of(body: &str) -> Usage {
    let cached = body.contains("\"cache_control\"");
    Usage {
        input_tokens: (body.len() / 4) as u64,
        output_tokens: OUTPUT,
        cache_read_input_tokens: if cached { 100 } else { 0 },
        cache_creation_input_tokens: if cached { 50 } else { 0 },
        cache_write_5m: if cached { 50 } else { 0 },
        cache_write_1h: 0,
        ..Usage::default()
    }
}

/// The nearest-rank percentile of `values` as the API reports it from its histograms: the
/// value's bin (one per millisecond below 128 ms, then 16 per doubling), told by the bin's
/// midpoint. Nearest rank commutes with binning (bins are ordered like their values), so this
/// is what the API must answer for these rows, whatever the machine's speed.
fn binned_rank(values: &mut [i64], per_mille: usize) -> i64 {
    let value = nearest_rank(values, per_mille);
    let reported = rollups::bin_value(rollups::bin(value));
    let (low, high) = rollups::bin_bounds(rollups::bin(value));
    assert!(
        (low..=high).contains(&value) && (low..=high).contains(&reported),
        "{value} ms is reported as {reported} ms, outside its bin {low}..={high}"
    );
    reported
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

/// Sends the traffic the analytics tests count: four successes over two models (two streamed,
/// two with cache use) and one upstream 400, all through account alpha.
async fn traffic(app: &App) -> (Vec<(String, Usage)>, Vec<String>) {
    let plan = [
        ("claude-sonnet-4-5", false, false),
        ("claude-sonnet-4-5", true, false),
        ("claude-haiku-4-5", false, true),
        ("claude-sonnet-4-5", true, true),
    ];
    let mut sent = Vec::new();
    let mut ids = Vec::new();
    for (model, stream, cached) in plan {
        let body = message_body(model, stream, cached);
        let reply = app.message(&body, &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        sent.push((model.to_owned(), usage_of(&body)));
        ids.push(reply.header("x-ccflare-request-id").to_owned());
    }
    app.mock.push_fault(&key("alpha"), Fault::Status(400));
    let failed = app
        .message(&message_body("claude-sonnet-4-5", false, false), &[])
        .await;
    assert_eq!(failed.status, StatusCode::BAD_REQUEST);
    ids.push(failed.header("x-ccflare-request-id").to_owned());
    app.flushed().await;
    (sent, ids)
}

#[tokio::test]
async fn analytics_count_what_was_proxied() {
    let app = spawn_app(Options::default()).await;
    let (sent, _ids) = traffic(&app).await;
    let records = requests::recent(&app.db, 100).await.expect("rows");
    assert_eq!(records.len(), 5);
    let tokens: u64 = sent
        .iter()
        .map(|(_, u)| {
            u.input_tokens
                + u.output_tokens
                + u.cache_read_input_tokens
                + u.cache_creation_input_tokens
        })
        .sum();
    let cost: f64 = sent
        .iter()
        .map(|(model, u)| pricing::cost(Some(model), u).usd)
        .sum();
    // Sonnet 4.5 at $3 / $15 per million, checked by hand for the first request.
    let first = &sent[0].1;
    assert!(close(
        pricing::cost(Some("claude-sonnet-4-5"), first).usd,
        (first.input_tokens as f64 * 3.0 + OUTPUT as f64 * 15.0) / 1e6
    ));
    let mean_latency =
        records.iter().map(|r| r.latency_ms).sum::<i64>() as f64 / records.len() as f64;

    let reply = app.get("/api/analytics").await;
    assert_eq!(reply.status, StatusCode::OK);
    let a = reply.json();
    let keys: BTreeSet<&str> = a.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "total_requests",
            "total_tokens",
            "average_response_time",
            "cost_estimate",
            "active_accounts",
            "rate_limited_accounts",
            "requests_last_hour",
            "top_models"
        ]),
        "exactly the seed's fields"
    );
    assert_eq!(a["total_requests"], 5);
    assert_eq!(a["total_tokens"], tokens);
    assert!(close(a["cost_estimate"].as_f64().unwrap(), cost));
    assert!(close(
        a["average_response_time"].as_f64().unwrap(),
        mean_latency
    ));
    assert_eq!(
        (
            a["active_accounts"].as_i64(),
            a["rate_limited_accounts"].as_i64()
        ),
        (Some(2), Some(0))
    );
    assert_eq!(a["requests_last_hour"], 5);
    assert_eq!(
        a["top_models"],
        json!([{"model": "claude-sonnet-4-5", "count": 4}, {"model": "claude-haiku-4-5", "count": 1}])
    );

    let r = app.get("/api/analytics?range=1h").await.json();
    assert_eq!(r["total_requests"], 5, "the seed's fields stay");
    assert_eq!(r["range"], "1h");
    let t = &r["totals"];
    assert_eq!(
        (
            t["requests"].as_i64(),
            t["successes"].as_i64(),
            t["errors"].as_i64()
        ),
        (Some(5), Some(4), Some(1))
    );
    let sum = |f: fn(&Usage) -> u64| sent.iter().map(|(_, u)| f(u)).sum::<u64>();
    assert_eq!(t["input_tokens"], sum(|u| u.input_tokens));
    assert_eq!(t["output_tokens"], sum(|u| u.output_tokens));
    assert_eq!(t["cache_read_tokens"], 200);
    assert_eq!(t["cache_write_tokens"], 100);
    assert!(close(t["cost_usd"].as_f64().unwrap(), cost));
    let all_input = (sum(|u| u.input_tokens) + 200 + 100) as f64;
    assert!(close(
        t["cache_hit_rate"].as_f64().unwrap(),
        200.0 / all_input
    ));
    assert!(t["output_tokens_per_second"].is_number() || t["output_tokens_per_second"].is_null());
    assert_eq!(
        r["errors"],
        json!([{"error_type": "invalid_request_error", "count": 1}])
    );
    let models: Vec<(&str, i64)> = r["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["name"].as_str().unwrap(), g["requests"].as_i64().unwrap()))
        .collect();
    assert_eq!(models, [("claude-sonnet-4-5", 4), ("claude-haiku-4-5", 1)]);
    assert_eq!(r["accounts"][0]["name"], "alpha");
    assert_eq!(r["accounts"][0]["requests"], 5);
    assert_eq!(
        (
            r["requests_last_minute"].as_i64(),
            r["requests_last_hour"].as_i64()
        ),
        (Some(5), Some(5))
    );
    let series = r["series"].as_array().unwrap();
    assert_eq!(
        series
            .iter()
            .map(|p| p["requests"].as_i64().unwrap())
            .sum::<i64>(),
        5
    );
    // The percentiles of the latencies recorded, as the API's histograms bin them.
    let mut latencies: Vec<i64> = records.iter().map(|r| r.latency_ms).collect();
    assert_eq!(r["latency_ms"]["p50"], binned_rank(&mut latencies, 500));
    assert_eq!(r["latency_ms"]["p99"], binned_rank(&mut latencies, 990));

    let bad = app.get("/api/analytics?range=2d").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1h, 6h, 24h, 7d, 30d")
    );

    let stats = app.get("/api/stats").await.json();
    assert_eq!(stats["totals"]["requests"], 5);
    assert_eq!(stats["accounts"][0]["name"], "alpha");
    assert!(close(
        stats["accounts"][0]["cost_usd"].as_f64().unwrap(),
        cost
    ));
    app.stop().await;
}

#[tokio::test]
async fn percentiles_of_a_known_latency_distribution() {
    let app = spawn_app(Options::default()).await;
    // Twenty requests the mock holds for 0, 5, …, 95 ms. The API must give the nearest-rank
    // percentiles of the latencies recorded in the rows, as its histograms bin them: exact
    // below 128 ms, where these requests usually are, and the bin's midpoint above (a loaded
    // machine can take longer than the mock's hold).
    let delays: Vec<u64> = (0..20).map(|i| i * 5).collect();
    let body = message_body("claude-sonnet-4-5", false, false);
    for delay in &delays {
        app.mock
            .push_fault(&key("alpha"), Fault::Delay { millis: *delay });
        let reply = app.message(&body, &[]).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    app.flushed().await;
    let mut records = requests::recent(&app.db, 100).await.expect("rows");
    records.reverse();
    for (record, delay) in records.iter().zip(&delays) {
        assert!(
            record.latency_ms >= *delay as i64,
            "held {delay} ms, took {}",
            record.latency_ms
        );
    }
    let mut latencies: Vec<i64> = records.iter().map(|r| r.latency_ms).collect();
    let mut ttfbs: Vec<i64> = records.iter().filter_map(|r| r.ttfb_ms).collect();
    assert_eq!(ttfbs.len(), 20, "every request has a time to first byte");
    let r = app.get("/api/analytics?range=24h").await.json();
    for (name, per_mille) in [("p50", 500), ("p95", 950), ("p99", 990)] {
        assert_eq!(
            r["latency_ms"][name],
            binned_rank(&mut latencies, per_mille),
            "latency {name} of {latencies:?}"
        );
        assert_eq!(
            r["ttfb_ms"][name],
            binned_rank(&mut ttfbs, per_mille),
            "ttfb {name} of {ttfbs:?}"
        );
    }
    assert_eq!(r["latency_ms"]["samples"], 20);
    // The middle of 0..95 ms of holding: the median is at least the 10th delay.
    assert!(r["latency_ms"]["p50"].as_i64().unwrap() >= 45);
    app.stop().await;
}

#[tokio::test]
async fn accounts_are_listed_added_changed_and_removed_live() {
    let app = spawn_app(Options::default()).await;
    let list = app.get("/api/accounts").await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(
        !list.text().contains(&key("alpha")),
        "no credential in the listing"
    );
    let accounts = list.json()["accounts"].as_array().unwrap().clone();
    assert_eq!(accounts.len(), 2);
    assert_eq!(accounts[0]["name"], "alpha");
    assert_eq!(accounts[0]["credential"], "sk-ant-…lpha");
    assert_eq!(
        (
            accounts[0]["state"].as_str(),
            accounts[0]["requests"].as_i64()
        ),
        (Some("active"), Some(0))
    );

    // Served requests show up in the counts; a 429 benches alpha with its reset and headers.
    assert_eq!(
        app.message(&message_body("claude-sonnet-4-5", false, false), &[])
            .await
            .header("x-ccflare-account"),
        "alpha"
    );
    app.mock.push_fault(
        &key("alpha"),
        Fault::RateLimited {
            retry_after: Some(120),
            reset: None,
        },
    );
    let reply = app
        .message(&message_body("claude-sonnet-4-5", false, false), &[])
        .await;
    assert_eq!(reply.header("x-ccflare-account"), "beta", "failed over");
    app.flushed().await;
    let alpha = app.get("/api/accounts/alpha").await.json();
    assert_eq!(alpha["state"], "rate_limited");
    assert_eq!(alpha["status"], "active");
    let reset = alpha["reset_in_s"].as_i64().unwrap();
    assert!((119..=120).contains(&reset), "{reset}");
    assert!(alpha["last_ratelimit"]["retry_at"].is_i64(), "{alpha}");
    assert_eq!(alpha["requests"], 1, "the 429 served nothing");
    assert_eq!(alpha["attempts_since_start"], 2);
    let beta = app.get("/api/accounts/beta").await.json();
    assert_eq!(beta["requests"], 1);
    assert!(beta["last_used"].is_i64());
    // The bench ends when its reset time passes.
    app.clock.advance(121_000);
    let alpha = app.get("/api/accounts/alpha").await.json();
    assert_eq!(
        (alpha["state"].as_str(), alpha["reset_in_s"].as_i64()),
        (Some("active"), None)
    );

    // Pause: traffic moves to beta with no delay.
    let paused = app
        .call(Method::POST, "/api/accounts/alpha/pause", "{}")
        .await;
    assert_eq!(paused.status, StatusCode::OK);
    assert_eq!(paused.json()["state"], "paused");
    assert_eq!(
        app.message(&message_body("claude-sonnet-4-5", false, false), &[])
            .await
            .header("x-ccflare-account"),
        "beta"
    );
    app.call(Method::POST, "/api/accounts/alpha/resume", "")
        .await;
    assert_eq!(
        app.message(&message_body("claude-sonnet-4-5", false, false), &[])
            .await
            .header("x-ccflare-account"),
        "alpha"
    );

    // Priority: beta first now.
    let prio = app
        .call(
            Method::POST,
            "/api/accounts/beta/priority",
            r#"{"priority": -5}"#,
        )
        .await;
    assert_eq!(prio.json()["priority"], -5);
    assert_eq!(
        app.message(&message_body("claude-sonnet-4-5", false, false), &[])
            .await
            .header("x-ccflare-account"),
        "beta"
    );

    // Add, with the checks a person would trip over.
    let new_key = key("gamma");
    let added = app
        .call(
            Method::POST,
            "/api/accounts",
            &format!(r#"{{"api_key":"{new_key}","name":"gamma","priority":-10}}"#),
        )
        .await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.text());
    assert!(!added.text().contains(&new_key));
    assert_eq!(added.json()["credential"], "sk-ant-…amma");
    assert_eq!(
        app.message(&message_body("claude-sonnet-4-5", false, false), &[])
            .await
            .header("x-ccflare-account"),
        "gamma"
    );
    let again = app
        .call(
            Method::POST,
            "/api/accounts",
            &format!(r#"{{"api_key":"{new_key}"}}"#),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(
        !again.text().contains(&new_key),
        "errors never echo the key"
    );
    let taken = app
        .call(
            Method::POST,
            "/api/accounts",
            &format!(r#"{{"api_key":"{}","name":"gamma"}}"#, key("delta")),
        )
        .await;
    assert_eq!(taken.status, StatusCode::CONFLICT);
    assert_eq!(taken.json()["error"]["type"], "conflict_error");
    let not_a_key = app
        .call(Method::POST, "/api/accounts", r#"{"api_key":"hunter2"}"#)
        .await;
    assert_eq!(not_a_key.status, StatusCode::BAD_REQUEST);
    assert!(!not_a_key.text().contains("hunter2"));
    let typo = app
        .call(
            Method::POST,
            "/api/accounts",
            &format!(r#"{{"api_key":"{}","nmae":"x"}}"#, key("delta")),
        )
        .await;
    assert_eq!(typo.status, StatusCode::BAD_REQUEST);
    assert!(
        typo.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `nmae`"),
        "{}",
        typo.text()
    );
    let broken = app
        .call(Method::POST, "/api/accounts", r#"{"api_key": "#)
        .await;
    assert_eq!(broken.status, StatusCode::BAD_REQUEST);
    assert_eq!(broken.json()["error"]["type"], "invalid_request_error");

    // Rename.
    let renamed = app
        .call(
            Method::POST,
            "/api/accounts/gamma/rename",
            r#"{"name":"gamma-2"}"#,
        )
        .await;
    assert_eq!(renamed.json()["name"], "gamma-2");
    assert_eq!(
        app.message(&message_body("claude-sonnet-4-5", false, false), &[])
            .await
            .header("x-ccflare-account"),
        "gamma-2"
    );
    let clash = app
        .call(
            Method::POST,
            "/api/accounts/gamma-2/rename",
            r#"{"name":"alpha"}"#,
        )
        .await;
    assert_eq!(clash.status, StatusCode::CONFLICT);
    let missing = app
        .call(
            Method::POST,
            "/api/accounts/nobody/rename",
            r#"{"name":"x"}"#,
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json()["error"]["type"], "not_found_error");

    // Remove.
    let removed = app.call(Method::DELETE, "/api/accounts/gamma-2", "").await;
    assert_eq!(removed.json(), json!({"removed": "gamma-2"}));
    assert_eq!(
        app.call(Method::DELETE, "/api/accounts/gamma-2", "")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/api/accounts/gamma-2").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.message(&message_body("claude-sonnet-4-5", false, false), &[])
            .await
            .header("x-ccflare-account"),
        "beta"
    );
    assert_eq!(
        app.call(Method::POST, "/api/accounts/nobody/pause", "")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    app.stop().await;
}

#[tokio::test]
async fn a_key_given_where_a_name_goes_is_never_echoed() {
    let app = spawn_app(Options::default()).await;
    // alpha's own key, and a key of the real length (too long to be a name).
    let long_key = format!("sk-ant-api03-{}-wxyz", "Zx81kQpL0vN3mT7yR2wS".repeat(5));
    for given in [key("alpha"), long_key.clone()] {
        let not_found: [(Method, String, &str); 4] = [
            (Method::DELETE, format!("/api/accounts/{given}"), ""),
            (Method::GET, format!("/api/accounts/{given}"), ""),
            (Method::POST, format!("/api/accounts/{given}/pause"), ""),
            (Method::POST, format!("/api/accounts/{given}/reauth"), ""),
        ];
        for (method, path, body) in not_found {
            let reply = app.call(method.clone(), &path, body).await;
            assert_eq!(
                reply.status,
                StatusCode::NOT_FOUND,
                "{method} {}",
                reply.text()
            );
            let message = reply.json()["error"]["message"]
                .as_str()
                .unwrap()
                .to_owned();
            let tail = &given[given.len() - 4..];
            assert_eq!(message, format!("no account named \"sk-ant-…{tail}\""));
            assert!(
                !reply.text().contains(&given[..20]),
                "{method}: {}",
                reply.text()
            );
        }
    }
    // A name that is too long is refused, and the refusal does not quote it.
    let renamed = app
        .call(
            Method::POST,
            "/api/accounts/alpha/rename",
            &format!(r#"{{"name":"{long_key}"}}"#),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::BAD_REQUEST);
    assert!(
        !renamed.text().contains(&long_key[..20]),
        "{}",
        renamed.text()
    );
    assert!(
        renamed.text().contains("sk-ant-…wxyz"),
        "{}",
        renamed.text()
    );
    // A short key is refused as a name too: names are shown in full everywhere.
    for (method, path, body) in [
        (
            Method::POST,
            "/api/accounts/alpha/rename",
            r#"{"name":"sk-ant-api03-shortkey-wxyz"}"#,
        ),
        (
            Method::POST,
            "/api/accounts/alpha/rename",
            r#"{"name":" Bearer sk-ant-api03-shortkey-wxyz"}"#,
        ),
        (
            Method::POST,
            "/api/accounts",
            r#"{"api_key":"sk-ant-api03-another-key-0123456789","name":"sk-ant-api03-shortkey-wxyz"}"#,
        ),
    ] {
        let reply = app.call(method, path, body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
        assert!(
            reply.text().contains("looks like a key"),
            "{}",
            reply.text()
        );
        assert!(!reply.text().contains("shortkey"), "{}", reply.text());
    }
    // Looking up by key is the CLI's convenience, not the API's (a key in a URL ends up in
    // access logs): alpha is still there.
    assert_eq!(app.get("/api/accounts/alpha").await.status, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn requests_are_listed_with_filters_and_shown_in_full() {
    let app = spawn_app(Options::default()).await;
    let (_sent, ids) = traffic(&app).await;
    // One more that fails over: alpha is overloaded, beta serves.
    app.mock.push_fault(&key("alpha"), Fault::Overloaded);
    let failover = app
        .message(&message_body("claude-haiku-4-5", false, false), &[])
        .await;
    assert_eq!(failover.header("x-ccflare-account"), "beta");
    let failover_id = failover.header("x-ccflare-request-id").to_owned();
    app.flushed().await;

    let all = app.get("/api/requests").await.json();
    let listed: Vec<&str> = all["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    let mut expected: Vec<&str> = ids.iter().map(String::as_str).collect();
    expected.push(&failover_id);
    expected.reverse();
    assert_eq!(listed, expected, "newest first");
    assert_eq!(all["next_cursor"], Value::Null);

    // Pages of two, following the cursor.
    let mut paged = Vec::new();
    let mut path = "/api/requests?limit=2".to_owned();
    loop {
        let page = app.get(&path).await.json();
        for r in page["requests"].as_array().unwrap() {
            paged.push(r["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/requests?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(paged, listed);

    let count = |path: &str| {
        let app = &app;
        let path = path.to_owned();
        async move {
            app.get(&path).await.json()["requests"]
                .as_array()
                .unwrap()
                .len()
        }
    };
    assert_eq!(count("/api/requests?model=claude-haiku-4-5").await, 2);
    assert_eq!(count("/api/requests?status=error").await, 1);
    assert_eq!(count("/api/requests?status=400").await, 1);
    assert_eq!(count("/api/requests?status=success").await, 5);
    assert_eq!(count("/api/requests?account=beta").await, 1);
    assert_eq!(count("/api/requests?account=alpha&status=success").await, 4);
    let now = app.state.now();
    assert_eq!(count(&format!("/api/requests?since={}", now + 1)).await, 0);
    assert_eq!(count(&format!("/api/requests?until={}", now + 1)).await, 6);
    assert_eq!(count("/api/requests?since=2000-01-01T00:00:00Z").await, 6);
    let typo = app.get("/api/requests?modle=x").await;
    assert_eq!(typo.status, StatusCode::BAD_REQUEST);
    assert!(typo.text().contains("modle"));

    let one = app
        .get(&format!("/api/requests/{failover_id}"))
        .await
        .json();
    assert_eq!(
        (one["status"].as_i64(), one["attempts"].as_i64()),
        (Some(200), Some(2))
    );
    assert_eq!(one["account"], "beta");
    assert_eq!(
        one["attempt_failures"],
        json!([{"account": "alpha", "status": 529, "reason": "overloaded"}])
    );
    let failed = app.get(&format!("/api/requests/{}", ids[4])).await.json();
    assert_eq!(
        (failed["success"].as_bool(), failed["error_type"].as_str()),
        (Some(false), Some("invalid_request_error"))
    );
    assert_eq!(failed["input_tokens"], 0);
    let ok = app.get(&format!("/api/requests/{}", ids[2])).await.json();
    assert_eq!(
        (
            ok["output_tokens"].as_u64(),
            ok["cache_read_tokens"].as_u64()
        ),
        (Some(OUTPUT), Some(100))
    );
    assert_eq!(
        app.get("/api/requests/ccf_nope").await.status,
        StatusCode::NOT_FOUND
    );
    app.stop().await;
}

#[tokio::test]
async fn the_live_feed_shows_each_request_start_and_end_in_order() {
    let app = spawn_app(Options::default()).await;
    let response = app.feed("/api/requests/stream").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    // The subscription exists once the headers are here: everything sent from now on is in it.
    let mut feed = SseReader::new(response.into_body());
    let mut ids = Vec::new();
    for (model, stream) in [
        ("claude-sonnet-4-5", false),
        ("claude-haiku-4-5", true),
        ("claude-sonnet-4-5", true),
    ] {
        let reply = app
            .message(
                &message_body(model, stream, false),
                &[("x-session-id", "feed-test")],
            )
            .await;
        ids.push((
            reply.header("x-ccflare-request-id").to_owned(),
            model,
            stream,
        ));
    }
    for (id, model, stream) in &ids {
        let started = feed.next().await;
        assert_eq!(started.name, "request_started");
        let s = started.json();
        assert_eq!(
            (s["id"].as_str(), s["model"].as_str()),
            (Some(id.as_str()), Some(*model))
        );
        assert_eq!(
            (s["streamed"].as_bool(), s["session_key"].as_str()),
            (Some(*stream), Some("feed-test"))
        );
        let finished = feed.next().await;
        assert_eq!(finished.name, "request_finished");
        let f = finished.json();
        assert_eq!(
            (
                f["id"].as_str(),
                f["status"].as_i64(),
                f["account"].as_str()
            ),
            (Some(id.as_str()), Some(200), Some("alpha"))
        );
        assert_eq!(f["output_tokens"], OUTPUT);
        assert!(f["latency_ms"].is_i64() && f["cost_usd"].as_f64().unwrap() > 0.0);
    }
    assert!(
        !feed.unread().contains("event:"),
        "nothing else: {:?}",
        feed.unread()
    );
    app.stop().await;
}

/// The value of one sample line of a Prometheus exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_tokens_costs_and_states() {
    let app = spawn_app(Options::default()).await;
    let (sent, _) = traffic(&app).await;
    app.mock.push_fault(&key("alpha"), Fault::Overloaded);
    app.message(&message_body("claude-haiku-4-5", false, false), &[])
        .await;
    app.flushed().await;
    let reply = app.get("/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply
            .header("content-type")
            .starts_with("text/plain; version=0.0.4")
    );
    let text = reply.text();
    assert_eq!(
        sample(
            text,
            r#"ccflare_requests_total{status="200",model="claude-sonnet-4-5",account="alpha"}"#
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            text,
            r#"ccflare_requests_total{status="400",model="claude-sonnet-4-5",account="alpha"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            text,
            r#"ccflare_requests_total{status="200",model="claude-haiku-4-5",account="beta"}"#
        ),
        Some(1.0)
    );
    let sonnet_input: u64 = sent
        .iter()
        .filter(|(m, _)| m == "claude-sonnet-4-5")
        .map(|(_, u)| u.input_tokens)
        .sum();
    assert_eq!(
        sample(
            text,
            r#"ccflare_tokens_total{model="claude-sonnet-4-5",kind="input"}"#
        ),
        Some(sonnet_input as f64)
    );
    assert_eq!(
        sample(
            text,
            r#"ccflare_tokens_total{model="claude-sonnet-4-5",kind="cache_read"}"#
        ),
        Some(100.0)
    );
    let sonnet_cost: f64 = sent
        .iter()
        .filter(|(m, _)| m == "claude-sonnet-4-5")
        .map(|(m, u)| pricing::cost(Some(m), u).usd)
        .sum();
    let reported = sample(
        text,
        r#"ccflare_cost_usd_total{model="claude-sonnet-4-5",account="alpha"}"#,
    )
    .unwrap();
    assert!(close(reported, sonnet_cost), "{reported} vs {sonnet_cost}");
    assert_eq!(
        sample(text, "ccflare_upstream_attempts_total"),
        Some(7.0),
        "six requests, one failed over"
    );
    assert_eq!(
        sample(
            text,
            r#"ccflare_upstream_attempt_failures_total{reason="overloaded"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            text,
            r#"ccflare_request_errors_total{type="invalid_request_error"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(text, "ccflare_request_duration_seconds_count"),
        Some(6.0)
    );
    assert_eq!(
        sample(
            text,
            r#"ccflare_request_duration_seconds_bucket{le="+Inf"}"#
        ),
        Some(6.0)
    );
    assert_eq!(
        sample(
            text,
            r#"ccflare_account_state{account="alpha",state="overloaded"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            text,
            r#"ccflare_account_state{account="beta",state="active"}"#
        ),
        Some(1.0)
    );
    assert_eq!(sample(text, "ccflare_writer_queue_depth"), Some(0.0));
    assert_eq!(sample(text, "ccflare_writer_rows_written_total"), Some(6.0));
    assert_eq!(sample(text, "ccflare_database_writable"), Some(1.0));
    assert!(!text.contains(&key("alpha")));
    app.stop().await;
}

#[tokio::test]
async fn config_changes_apply_at_once_persist_and_say_when_they_cannot() {
    let env: Layer = [
        ("session_timeout".to_owned(), "600".to_owned()),
        ("api_keys".to_owned(), key("zeta")),
    ]
    .into_iter()
    .collect();
    let app = spawn_app(Options {
        env,
        ..Options::default()
    })
    .await;
    let reply = app.get("/api/config").await;
    assert!(!reply.text().contains(&key("zeta")), "keys are masked");
    let config = reply.json();
    let option = |config: &Value, key: &str| {
        config["options"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["key"] == key)
            .unwrap()
            .clone()
    };
    assert_eq!(option(&config, "api_keys")["value"], "sk-ant-…zeta");
    let timeout = option(&config, "session_timeout");
    assert_eq!(
        (
            timeout["value"].as_str(),
            timeout["source"].as_str(),
            timeout["pinned"].as_bool()
        ),
        (Some("600"), Some("env"), Some(true))
    );
    let strategy = option(&config, "lb_strategy");
    assert_eq!(
        (
            strategy["value"].as_str(),
            strategy["source"].as_str(),
            strategy["live"].as_bool()
        ),
        (Some("priority"), Some("file"), Some(true))
    );

    // The strategy changes at once: round-robin alternates.
    let changed = app
        .call(
            Method::PATCH,
            "/api/config",
            r#"{"lb_strategy":"round-robin","retention_days":30}"#,
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text());
    let strategy = option(&changed.json(), "lb_strategy");
    assert_eq!(
        (strategy["value"].as_str(), strategy["source"].as_str()),
        (Some("round-robin"), Some("database"))
    );
    assert_eq!(app.state.settings().strategy, Strategy::RoundRobin);
    assert_eq!(app.state.settings().retention_days, 30);
    let served: BTreeSet<String> = {
        let mut served = BTreeSet::new();
        for _ in 0..2 {
            served.insert(
                app.message(&message_body("claude-sonnet-4-5", false, false), &[])
                    .await
                    .header("x-ccflare-account")
                    .to_owned(),
            );
        }
        served
    };
    assert_eq!(
        served,
        BTreeSet::from(["alpha".to_owned(), "beta".to_owned()])
    );
    // Persisted: stored where a restart (or `ccflare-cli config show`) finds it.
    let stored = ccflare_storage::settings::all(&app.db).await.unwrap();
    assert_eq!(
        stored.get("lb_strategy").map(String::as_str),
        Some("round-robin")
    );
    assert_eq!(stored.get("retention_days").map(String::as_str), Some("30"));

    // Pinned by the environment: refused, with the reason.
    let pinned = app
        .call(Method::PATCH, "/api/config", r#"{"session_timeout": 60}"#)
        .await;
    assert_eq!(pinned.status, StatusCode::CONFLICT);
    assert!(
        pinned.text().contains("SESSION_TIMEOUT"),
        "{}",
        pinned.text()
    );
    // Invalid values name the option and what is allowed; nothing is stored.
    let invalid = app
        .call(Method::PATCH, "/api/config", r#"{"lb_strategy":"random"}"#)
        .await;
    assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
    assert!(
        invalid.text().contains("LB_STRATEGY") && invalid.text().contains("round-robin"),
        "{}",
        invalid.text()
    );
    assert_eq!(app.state.settings().strategy, Strategy::RoundRobin);
    let restart = app
        .call(Method::PATCH, "/api/config", r#"{"port": 9999}"#)
        .await;
    assert_eq!(restart.status, StatusCode::BAD_REQUEST);
    assert!(restart.text().contains("restart"));
    let unknown = app
        .call(Method::PATCH, "/api/config", r#"{"stratgy":"x"}"#)
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    let wrong_type = app
        .call(Method::PATCH, "/api/config", r#"{"retention_days":[1]}"#)
        .await;
    assert_eq!(wrong_type.status, StatusCode::BAD_REQUEST);

    // null removes the stored value: the config file's applies again.
    let reset = app
        .call(Method::PATCH, "/api/config", r#"{"lb_strategy":null}"#)
        .await;
    assert_eq!(option(&reset.json(), "lb_strategy")["source"], "file");
    assert_eq!(app.state.settings().strategy, Strategy::Priority);
    app.stop().await;
}

#[tokio::test]
async fn retention_deletes_old_rows_and_their_figures() {
    use ccflare_core::record::RequestRecord;
    let app = spawn_app(Options::default()).await;
    let now = app.state.now();
    // Two rows from ten days ago, recorded the way the proxy records them.
    for n in 0..2 {
        app.state.writer.record(RequestRecord {
            id: format!("old-{n}"),
            started_at: now - 10 * 86_400_000,
            method: "POST".into(),
            path: "/v1/messages".into(),
            status: 200,
            success: true,
            ..Default::default()
        });
    }
    app.message(&message_body("claude-sonnet-4-5", false, false), &[])
        .await;
    app.flushed().await;
    assert_eq!(app.get("/api/stats").await.json()["totals"]["requests"], 3);
    // Off by default: nothing is deleted.
    assert_eq!(
        ccflare_api::retention::run_once(&app.state, &app.db, now)
            .await
            .unwrap(),
        None
    );
    let patched = app
        .call(Method::PATCH, "/api/config", r#"{"retention_days":7}"#)
        .await;
    assert_eq!(patched.status, StatusCode::OK);
    // The task woken by the change may get there first; either way the rows go.
    ccflare_api::retention::run_once(&app.state, &app.db, now)
        .await
        .unwrap();
    assert_eq!(requests::count(&app.db).await.unwrap(), 1);
    assert_eq!(app.get("/api/stats").await.json()["totals"]["requests"], 1);
    assert_eq!(
        app.get("/api/requests/old-0").await.status,
        StatusCode::NOT_FOUND
    );
    app.stop().await;
}

#[tokio::test]
async fn errors_have_one_shape_and_the_right_status() {
    let app = spawn_app(Options::default()).await;
    let unknown = app.get("/api/nothing").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.json()["error"]["type"], "not_found_error");
    assert!(unknown.json()["error"]["message"].is_string());
    let wrong = app.call(Method::PUT, "/api/accounts", "{}").await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.header("allow"), "GET, POST");
    let huge = format!(r#"{{"api_key":"{}"}}"#, "x".repeat(2 * 1024 * 1024));
    let too_big = app.call(Method::POST, "/api/accounts", &huge).await;
    assert_eq!(too_big.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(too_big.json()["error"]["type"], "request_too_large");
    let empty = app.call(Method::POST, "/api/accounts", "").await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    assert!(empty.text().contains("empty"));
    let body_on_pause = app
        .call(Method::POST, "/api/accounts/alpha/pause", r#"{"now":true}"#)
        .await;
    assert_eq!(body_on_pause.status, StatusCode::BAD_REQUEST);
    let query = app.get("/api/stats?x=1").await;
    assert_eq!(query.status, StatusCode::BAD_REQUEST);
    // The proxy's own routes are untouched.
    assert_eq!(app.get("/health").await.json()["status"], "ok");
    app.stop().await;
}

#[tokio::test]
async fn the_openapi_document_matches_the_routes() {
    let document: Value =
        serde_json::from_str(ccflare_api::OPENAPI).expect("docs/openapi.json is JSON");
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete", "head", "options"]
                .contains(&method.as_str())
            {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let implemented: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.pattern.to_owned()))
        .collect();
    let missing: Vec<_> = implemented.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&implemented).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "not documented: {missing:?}; documented but not implemented: {extra:?}"
    );

    let app = spawn_app(Options::default()).await;
    let served = app.get("/api/openapi.json").await;
    assert_eq!(served.status, StatusCode::OK);
    assert_eq!(served.text(), ccflare_api::OPENAPI);
    app.stop().await;
}
