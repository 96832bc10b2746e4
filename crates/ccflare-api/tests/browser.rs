//! The dashboard in a real browser: headless Chromium driven over WebDriver
//! (`ccflare_testkit::webdriver`) against the server with the mock upstream and a database
//! seeded by real proxied traffic. Each page shows the numbers the API gives; a proxied
//! request appears in Requests without a reload and opens in the drawer; pausing an account in
//! Accounts sends the next request to another; with an admin key the page logs in and the live
//! feed connects; the console has no errors (a CSP violation is one) and nothing is fetched
//! from anywhere but the server. The pure helpers of `lib.js` are checked in the page. Every
//! page is saved as a PNG under `target/dashboard/`.
//!
//! Without `chromium` and `chromedriver` the tests say so and return, unless `CI` is set.

mod common;

use ccflare_api::LogFeed;
use ccflare_core::config::Settings;
use ccflare_mock::Fault;
use ccflare_testkit::webdriver::Browser;
use ccflare_testkit::{GUARD, eventually, key};
use common::{App, Options, add_subscription, message_body, spawn_app, state_of, use_mock_oauth};
use http::StatusCode;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

/// Not UTC, and not a whole hour away from it: labels in the viewer's zone show it.
const ZONE: &str = "Asia/Kolkata";

/// One log feed for the test binary, installed as the global subscriber once.
fn logs() -> LogFeed {
    static LOGS: OnceLock<LogFeed> = OnceLock::new();
    LOGS.get_or_init(|| {
        use tracing_subscriber::layer::SubscriberExt;
        let feed = LogFeed::new(500);
        let _ = tracing::subscriber::set_global_default(
            tracing_subscriber::registry().with(feed.layer()),
        );
        feed
    })
    .clone()
}

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard")
}

/// A headless Chromium (`None` when it or its driver is missing, as `Browser::start` decides)
/// and a proxy with the dashboard, whose logs the page can stream.
async fn start() -> Option<(Browser, App)> {
    let browser = Browser::start(ZONE).await?;
    let app = spawn_app(Options {
        logs: logs(),
        ..Options::default()
    })
    .await;
    Some((browser, app))
}

/// Real traffic: three models on alpha, a rate limit that fails over to beta, a refusal, and
/// a subscription account's request (so the pool has 5h/7d windows).
async fn seed(app: &App) {
    add_subscription(app).await;
    for (model, stream, cached) in [
        ("claude-sonnet-4-5", false, true),
        ("claude-haiku-4-5", true, false),
        ("claude-opus-4-1", false, false),
        ("claude-sonnet-4-5", true, false),
    ] {
        let reply = app.message(&message_body(model, stream, cached), &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
    app.mock.push_fault(
        &key("alpha"),
        Fault::RateLimited {
            retry_after: Some(1),
            reset: None,
        },
    );
    let failed_over = app
        .message(&message_body("claude-sonnet-4-5", false, false), &[])
        .await;
    assert_eq!(failed_over.header("x-ccflare-account"), "beta");
    app.mock.push_fault(&key("beta"), Fault::Status(400));
    let refused = app
        .message(&message_body("claude-haiku-4-5", false, false), &[])
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    for name in ["alpha", "beta"] {
        let paused = app
            .call(
                http::Method::POST,
                &format!("/api/accounts/{name}/pause"),
                "",
            )
            .await;
        assert_eq!(paused.status, StatusCode::OK);
    }
    let by_sub = app
        .message(&message_body("claude-opus-4-1", false, false), &[])
        .await;
    assert_eq!(by_sub.header("x-ccflare-account"), "sub");
    for name in ["alpha", "beta"] {
        app.call(
            http::Method::POST,
            &format!("/api/accounts/{name}/resume"),
            "",
        )
        .await;
    }
    app.flushed().await;
}

/// Opens page `hash` and waits until it has drawn itself (for this very hash: going from one
/// filter to another changes only the hash, and the earlier page stays until the new one is
/// drawn).
async fn open_page(browser: &Browser, app: &App, hash: &str) {
    browser.goto(&format!("{}/dashboard#{hash}", app.url)).await;
    browser
        .wait_for(&format!("#page > div[data-hash='#{hash}'][data-ready]"))
        .await;
}

/// The text of every element matching `css`, read in one script so that a page drawn again
/// meanwhile cannot leave a stale element between finding and reading.
async fn texts(browser: &Browser, css: &str) -> Vec<String> {
    let found = browser
        .script(
            "return [...document.querySelectorAll(arguments[0])]
               .map(e => e.innerText === undefined ? e.textContent : e.innerText);",
            json!([css]),
        )
        .await;
    found
        .as_array()
        .map(|all| {
            all.iter()
                .map(|t| t.as_str().unwrap_or_default().trim().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// What every page must keep to: no console errors (CSP violations are errors) and no request
/// to anything but the server.
async fn assert_clean(browser: &Browser, app: &App) {
    let errors: Vec<(String, String)> = browser
        .console()
        .await
        .into_iter()
        .filter(|(level, _)| level == "SEVERE" || level == "WARNING")
        .collect();
    assert!(errors.is_empty(), "console: {errors:#?}");
    let urls = browser
        .script(
            "return performance.getEntries()
               .filter(e => e.entryType === 'navigation' || e.entryType === 'resource')
               .map(e => e.name);",
            json!([]),
        )
        .await;
    let urls: Vec<&str> = urls
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(!urls.is_empty());
    for url in urls {
        assert!(
            url.starts_with(&format!("{}/", app.url)),
            "left the server: {url}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_shows_the_seeded_numbers_and_stays_live() {
    let Some((browser, app)) = start().await else {
        return;
    };
    seed(&app).await;
    let shots = screenshots();

    // Overview: the tiles are the analytics' figures.
    open_page(&browser, &app, "overview").await;
    let figures = app.get("/api/analytics?range=24h").await.json();
    let requests = texts(&browser, "[data-tile=requests] .v").await;
    assert_eq!(requests, [figures["totals"]["requests"].to_string()]);
    assert_eq!(figures["totals"]["requests"], 7);
    let success = texts(&browser, "[data-tile=success_rate] .v").await;
    assert_eq!(success, ["85.7%"], "6 of 7 succeeded");
    assert!(!browser.find_all("svg.chart rect").await.is_empty());
    let utilisation = texts(&browser, "#utilisation .b span").await;
    assert_eq!(
        utilisation.first().map(String::as_str),
        Some("sub"),
        "{utilisation:?}"
    );
    let errors = texts(&browser, "#recent-errors td").await.join(" ");
    assert!(errors.contains("400"), "{errors}");
    // The first load: page, style, scripts and icon, under 200 KB.
    let weight = browser
        .script(
            "return performance.getEntries()
               .filter(e => (e.entryType === 'navigation' || e.entryType === 'resource')
                            && new URL(e.name).pathname.startsWith('/dashboard'))
               .reduce((sum, e) => sum + e.decodedBodySize, 0);",
            json!([]),
        )
        .await
        .as_u64()
        .expect("a size");
    assert!(
        weight > 10_000 && weight < 200_000,
        "first load {weight} bytes"
    );
    let paint = browser
        .script(
            "const p = performance.getEntriesByName('first-contentful-paint')[0];
             return p ? Math.round(p.startTime) : null;",
            json!([]),
        )
        .await;
    eprintln!("first load {weight} bytes, first contentful paint {paint} ms");
    browser.save_screenshot(&shots, "overview").await;
    assert_clean(&browser, &app).await;
    // The same page in dark mode: the stylesheet follows prefers-color-scheme.
    let background = "return getComputedStyle(document.body).backgroundColor;";
    let light = browser.script(background, json!([])).await;
    let dark_mode = json!({"features": [{"name": "prefers-color-scheme", "value": "dark"}]});
    browser.cdp("Emulation.setEmulatedMedia", dark_mode).await;
    let dark = browser.script(background, json!([])).await;
    assert_eq!(light, "rgb(247, 247, 245)");
    assert_eq!(dark, "rgb(19, 19, 18)");
    browser.save_screenshot(&shots, "overview-dark").await;
    browser
        .cdp("Emulation.setEmulatedMedia", json!({"features": []}))
        .await;

    // Accounts: every account with its state.
    open_page(&browser, &app, "accounts").await;
    let names = texts(&browser, "#accounts tbody tr td:first-child").await;
    assert_eq!(names, ["alpha", "beta", "sub"]);
    browser.save_screenshot(&shots, "accounts").await;

    // Analytics: the models and accounts of the traffic.
    open_page(&browser, &app, "analytics?range=24h").await;
    let mut models = texts(&browser, "#by-model tbody td:first-child").await;
    models.sort();
    assert_eq!(
        models,
        ["claude-haiku-4-5", "claude-opus-4-1", "claude-sonnet-4-5"]
    );
    assert_eq!(browser.find_all("svg.chart").await.len(), 4);
    // The cache re-created by moves: none of the seeded requests moved.
    let moved = texts(&browser, "[data-tile=moved_cache] .v").await;
    assert_eq!(moved, ["0 (0 moved)"]);
    // Labels are in the viewer's zone (UTC+05:30: every hourly label ends in :30).
    let labels = texts(&browser, "svg.chart text[text-anchor=middle]").await;
    assert!(!labels.is_empty());
    assert!(labels.iter().all(|l| l.ends_with(":30")), "{labels:?}");
    browser.save_screenshot(&shots, "analytics").await;

    // Logs: the server's lines, live.
    open_page(&browser, &app, "logs").await;
    tracing::warn!(target: "ccflare_dashboard_test", "a line for the page");
    let line = browser.wait_for("#log-lines div.lv-WARN").await;
    assert!(browser.text(&line).await.contains("a line for the page"));
    browser.save_screenshot(&shots, "logs").await;

    // Settings: the strategy in force.
    open_page(&browser, &app, "settings").await;
    let strategy = browser
        .script(
            "return document.getElementById('set-lb_strategy').value;",
            json!([]),
        )
        .await;
    assert_eq!(strategy, "priority");
    browser.save_screenshot(&shots, "settings").await;

    // Requests: the seeded rows, newest first, filtered on the server.
    open_page(&browser, &app, "requests").await;
    assert_eq!(browser.find_all("#requests tbody tr").await.len(), 7);
    open_page(&browser, &app, "requests?status=4xx").await;
    assert_eq!(browser.find_all("#requests tbody tr").await.len(), 1);
    open_page(&browser, &app, "requests?model=claude-opus-4-1").await;
    assert_eq!(browser.find_all("#requests tbody tr").await.len(), 2);
    open_page(&browser, &app, "requests").await;
    browser.wait_for("#live.on").await;
    let started = Instant::now();
    let reply = app
        .message(&message_body("claude-haiku-4-5", false, false), &[])
        .await;
    let id = reply.header("x-ccflare-request-id").to_owned();
    let row = browser
        .wait_for(&format!("#requests tr[data-id='{id}']"))
        .await;
    eprintln!(
        "a proxied request showed in Requests after {:?}",
        started.elapsed()
    );
    assert_eq!(browser.find_all("#requests tbody tr").await.len(), 8);
    browser.click(&row).await;
    let drawer = browser.wait_for("#drawer #attempts").await;
    assert!(!browser.text(&drawer).await.is_empty());
    let shown = texts(&browser, "#drawer dd").await.join(" ");
    assert!(shown.contains(&id), "{shown}");
    // The upstream's ids too: the mock's `request-id` header and the message's id.
    let upstream_id = reply.header("request-id");
    let message_id = reply.json()["id"].as_str().unwrap_or_default().to_owned();
    assert!(upstream_id.starts_with("req_"), "{upstream_id:?}");
    assert!(message_id.starts_with("msg_"), "{message_id:?}");
    assert!(shown.contains(upstream_id), "{shown}");
    assert!(shown.contains(&message_id), "{shown}");
    // Why it went to its account (issue 16's explanation), as `/api/requests/{id}` has it.
    let route = app.get(&format!("/api/requests/{id}")).await.json()["route"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!route.is_empty());
    let route_shown = browser.find_all("#drawer #route").await;
    assert_eq!(route_shown.len(), 1);
    assert_eq!(browser.text(&route_shown[0]).await, route);
    browser.save_screenshot(&shots, "requests").await;
    assert_clean(&browser, &app).await;

    // Pausing alpha in the page sends the next request to beta (once alpha's one-second bench
    // from the seed is over, alpha is the one that serves).
    eventually(GUARD, "alpha active again", || async {
        let alpha = app.get("/api/accounts/alpha").await.json();
        (alpha["state"] == "active").then_some(())
    })
    .await;
    let before = app
        .message(&message_body("claude-haiku-4-5", false, false), &[])
        .await;
    assert_eq!(before.header("x-ccflare-account"), "alpha");
    open_page(&browser, &app, "accounts").await;
    let pause = browser
        .wait_for("#accounts tr[data-account=alpha] button[data-action=pause]")
        .await;
    browser.click(&pause).await;
    browser
        .wait_for("#accounts tr[data-account=alpha] button[data-action=resume]")
        .await;
    let next = app
        .message(&message_body("claude-haiku-4-5", false, false), &[])
        .await;
    assert_eq!(next.header("x-ccflare-account"), "beta");

    // The pure helpers, run in the page.
    let helpers = browser
        .script(
            "const c = window.ccf; return [
               c.fmtInt(1234567), c.fmtCompact(2500000), c.fmtCompact(999), c.fmtCost(0.01234),
               c.fmtCost(1234.5), c.fmtMs(850), c.fmtMs(1250), c.fmtDuration(3725),
               c.fmtDuration(45), c.fmtDuration(90061), c.fmtPct(0.9876), c.fmtPct(1),
               c.statusClass(429), c.rangeMs('7d'), c.niceMax(730), c.niceMax(0),
               c.bucketLabel(Date.UTC(2026, 0, 31, 12), 3600000, 'Asia/Kolkata'),
               c.bucketLabel(Date.UTC(2026, 0, 31, 12), 3600000, 'UTC'),
               c.bucketLabel(Date.UTC(2026, 0, 31, 20), 86400000, 'Asia/Tokyo'),
               c.bucketLabel(Date.UTC(2026, 0, 31, 12), 3600000),
               c.fillBuckets([{time: 7200000, requests: 3}], 3600000, 14400000, 3600000)
                 .map(p => p.requests).join(','),
               c.bucketName(3600000), c.bucketName(300000), c.bucketName(86400000),
             ];",
            json!([]),
        )
        .await;
    assert_eq!(
        helpers,
        json!([
            "1,234,567",
            "2.5M",
            "999",
            "$0.0123",
            "$1,234.50",
            "850 ms",
            "1.25 s",
            "1h 02m",
            "45s",
            "1d 1h",
            "98.8%",
            "100%",
            "4xx",
            604_800_000,
            1000,
            1,
            "17:30",
            "12:00",
            "1 Feb",
            "17:30",
            "0,3,0",
            "hour",
            "5 minutes",
            "day"
        ])
    );
    assert_clean(&browser, &app).await;
    browser.quit().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_admin_key_the_page_logs_in_and_the_feed_connects() {
    let Some((browser, app)) = start().await else {
        return;
    };
    let admin_key = "browser-admin-key-0123456789abcdef";
    let mut layers = app.state.layers();
    layers
        .env
        .insert("admin_key".to_owned(), admin_key.to_owned());
    let settings = Settings::resolve(&layers.flags, &layers.env, &layers.file).expect("settings");
    app.state.configure(layers, settings);

    browser
        .goto(&format!("{}/dashboard#requests", app.url))
        .await;
    let field = browser.wait_for("#login:not([hidden]) #login-key").await;
    browser.save_screenshot(&screenshots(), "login").await;
    browser.type_text(&field, admin_key).await;
    let submit = browser.wait_for("#login-form button[type=submit]").await;
    browser.click(&submit).await;
    browser
        .wait_for("#page > div[data-page='requests'][data-ready]")
        .await;
    browser.wait_for("#live.on").await;
    // The key is nowhere the page's script can read, and the cookie is not readable either.
    let kept = browser
        .script(
            "return [document.cookie, JSON.stringify(localStorage), JSON.stringify(sessionStorage),
                     document.documentElement.outerHTML.includes(arguments[0])];",
            json!([admin_key]),
        )
        .await;
    assert_eq!(kept, json!(["", "{}", "{}", false]));
    let reply = app
        .message(&message_body("claude-sonnet-4-5", false, false), &[])
        .await;
    let id = reply.header("x-ccflare-request-id").to_owned();
    browser
        .wait_for(&format!("#requests tr[data-id='{id}']"))
        .await;
    // Logging out drops the session: the page asks for the key again.
    let logout = browser.wait_for("#logout:not([hidden])").await;
    browser.click(&logout).await;
    browser.wait_for("#login:not([hidden])").await;
    let refused = eventually(GUARD, "the session is gone", || async {
        let status = browser
            .script(
                "return fetch('/api/session').then(r => r.json()).then(j => j.signed_in);",
                json!([]),
            )
            .await;
        (status == false).then_some(status)
    })
    .await;
    assert_eq!(refused, false);
    assert_clean(&browser, &app).await;
    browser.quit().await;
    app.stop().await;
}

/// Fills the input `css` with `text`, replacing what it held.
async fn fill(browser: &Browser, css: &str, text: &str) {
    let input = browser.wait_for(css).await;
    browser.clear(&input).await;
    browser.type_text(&input, text).await;
}

async fn click(browser: &Browser, css: &str) {
    let element = browser.wait_for(css).await;
    browser.click(&element).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_and_settings_are_changed_from_the_page() {
    let Some((browser, app)) = start().await else {
        return;
    };
    use_mock_oauth(&app);
    open_page(&browser, &app, "accounts").await;

    // Add an API key with a priority.
    fill(&browser, "#add-name", "gamma").await;
    fill(&browser, "#add-key", &key("gamma")).await;
    fill(&browser, "#add-priority", "7").await;
    click(&browser, "#add-submit").await;
    browser.wait_for("#accounts tr[data-account=gamma]").await;
    assert_eq!(app.get("/api/accounts/gamma").await.json()["priority"], 7);

    // Rename it, change its priority.
    click(
        &browser,
        "#accounts tr[data-account=gamma] button[data-action=edit]",
    )
    .await;
    fill(&browser, "#edit-name", "delta").await;
    click(&browser, "#edit-rename").await;
    browser.wait_for("#accounts tr[data-account=delta]").await;
    click(
        &browser,
        "#accounts tr[data-account=delta] button[data-action=edit]",
    )
    .await;
    fill(&browser, "#edit-priority", "3").await;
    click(&browser, "#edit-set-priority").await;
    eventually(GUARD, "delta's priority is 3", || async {
        let delta = app.get("/api/accounts/delta").await.json();
        (delta["priority"] == 3).then_some(())
    })
    .await;

    // The table is drawn again after the change: wait for it before clicking in it.
    eventually(GUARD, "the page shows priority 3", || async {
        let cells = texts(&browser, "#accounts tr[data-account=delta] td:nth-child(9)").await;
        (cells == ["3"]).then_some(())
    })
    .await;
    // Removing takes the account's name typed out.
    click(
        &browser,
        "#accounts tr[data-account=delta] button[data-action=edit]",
    )
    .await;
    let disabled = "return document.getElementById('edit-remove').disabled;";
    assert_eq!(browser.script(disabled, json!([])).await, true);
    fill(&browser, "#edit-confirm", "delt").await;
    assert_eq!(browser.script(disabled, json!([])).await, true);
    fill(&browser, "#edit-confirm", "delta").await;
    assert_eq!(browser.script(disabled, json!([])).await, false);
    click(&browser, "#edit-remove").await;
    eventually(GUARD, "delta gone from the page", || async {
        browser
            .find_all("#accounts tr[data-account=delta]")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    assert_eq!(
        app.get("/api/accounts/delta").await.status,
        StatusCode::NOT_FOUND
    );

    // An OAuth login: start, the authorise link, paste `code#state`, finish.
    fill(&browser, "#oauth-name", "personal").await;
    click(&browser, "#oauth-start").await;
    browser.wait_for("#oauth-link").await;
    let href = browser
        .script(
            "return document.getElementById('oauth-link').href;",
            json!([]),
        )
        .await;
    let state = state_of(href.as_str().expect("an authorise URL"));
    fill(&browser, "#oauth-code", &format!("code-1#{state}")).await;
    click(&browser, "#oauth-finish").await;
    let row = browser
        .wait_for("#accounts tr[data-account=personal]")
        .await;
    assert!(browser.text(&row).await.contains("subscription"));

    // A live setting.
    open_page(&browser, &app, "settings").await;
    fill(&browser, "#set-session_timeout", "600").await;
    click(&browser, "button[data-save=session_timeout]").await;
    eventually(GUARD, "session_timeout saved", || async {
        let config = app.get("/api/config").await.json();
        let options = config["options"].as_array().cloned().unwrap_or_default();
        options
            .iter()
            .any(|o| o["key"] == "session_timeout" && o["value"] == "600")
            .then_some(())
    })
    .await;
    assert_clean(&browser, &app).await;
    browser.quit().await;
    app.stop().await;
}
