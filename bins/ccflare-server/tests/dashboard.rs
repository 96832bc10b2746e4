//! The web dashboard from the real binary: `/` redirects to `/dashboard`, the page and its
//! files come compiled in with their CSP and ETags, and with `CCFLARE_ADMIN_KEY` the page's
//! login gives a cookie that opens the API. The browser tests and the details are in
//! `crates/ccflare-api/tests/{browser,dashboard}.rs`.

mod common;

use ccflare_testkit::http::request;
use ccflare_testkit::process::Server;
use ccflare_testkit::{get, send};
use common::server_command;
use http::{Method, StatusCode};

const ADMIN_KEY: &str = "server-dashboard-admin-key-0123456789";

#[tokio::test]
async fn the_binary_serves_the_dashboard_and_its_login() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = server_command(dir.path());
    command.env("CCFLARE_ADMIN_KEY", ADMIN_KEY);
    let server = Server::start(command).await;

    let root = send(get(&format!("{}/", server.url))).await;
    assert_eq!(root.status, StatusCode::FOUND);
    assert_eq!(root.header("location"), "/dashboard");
    let page = send(get(&format!("{}/dashboard", server.url))).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.header("content-type").starts_with("text/html"));
    assert!(
        page.text()
            .contains(r#"<script src="/dashboard/app.js" defer></script>"#)
    );
    assert!(
        page.header("content-security-policy")
            .starts_with("default-src 'self'")
    );
    assert!(!page.text().contains(ADMIN_KEY));
    for file in ["app.js", "lib.js", "app.css", "favicon.svg"] {
        let reply = send(get(&format!("{}/dashboard/{file}", server.url))).await;
        assert_eq!(reply.status, StatusCode::OK, "{file}");
        let etag = reply.header("etag").to_owned();
        let again = send(request(
            Method::GET,
            &format!("{}/dashboard/{file}", server.url),
            &[("if-none-match", etag.as_str())],
            "",
        ))
        .await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{file}");
    }

    let accounts = format!("{}/api/accounts", server.url);
    assert_eq!(send(get(&accounts)).await.status, StatusCode::UNAUTHORIZED);
    let login = send(request(
        Method::POST,
        &format!("{}/api/session", server.url),
        &[("content-type", "application/json")],
        format!(r#"{{"key":"{ADMIN_KEY}"}}"#),
    ))
    .await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text());
    let cookie = login
        .header("set-cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert!(cookie.starts_with("ccflare_session="), "{cookie}");
    let listed = send(request(
        Method::GET,
        &accounts,
        &[("cookie", cookie.as_str())],
        "",
    ))
    .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text());
    server.terminate().await;
}
