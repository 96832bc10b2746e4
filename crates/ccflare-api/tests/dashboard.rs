//! The dashboard as the server serves it, over a real socket: its files with their content
//! types, ETags and 304s, the Content-Security-Policy, 404 for an unknown file, `/` redirecting;
//! and the admin key's cookie session: login, use on the API and the live feed, logout, a
//! wrong key, a cross-site change refused, and the key never in an answer.

mod common;

use ccflare_core::config::Settings;
use ccflare_testkit::Reply;
use ccflare_testkit::http::request;
use common::{App, Options, spawn_app};
use http::{Method, StatusCode};

const ADMIN_KEY: &str = "dashboard-admin-key-0123456789";

async fn call(
    app: &App,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let url = format!("{}{path}", app.url);
    app.send(request(method, &url, headers, body.to_owned()))
        .await
}

fn set_admin_key(app: &App) {
    let mut layers = app.state.layers();
    layers
        .env
        .insert("admin_key".to_owned(), ADMIN_KEY.to_owned());
    let settings = Settings::resolve(&layers.flags, &layers.env, &layers.file).expect("settings");
    app.state.configure(layers, settings);
}

#[tokio::test]
async fn assets_have_types_etags_and_a_strict_policy() {
    let app = spawn_app(Options::default()).await;
    for (path, media) in [
        ("/dashboard", "text/html"),
        ("/dashboard/", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/lib.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
        ("/dashboard/favicon.svg", "image/svg+xml"),
    ] {
        let reply = call(&app, Method::GET, path, &[], "").await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert!(reply.header("content-type").starts_with(media), "{path}");
        assert!(!reply.body.is_empty(), "{path}");
        let csp = reply.header("content-security-policy");
        assert!(csp.starts_with("default-src 'self'"), "{path}: {csp}");
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe"),
            "{csp}"
        );
        assert_eq!(reply.header("x-content-type-options"), "nosniff");
        assert_eq!(reply.header("cache-control"), "no-cache");
        let etag = reply.header("etag").to_owned();
        assert!(
            etag.starts_with('"') && !etag.starts_with("W/"),
            "{path}: {etag}"
        );
        let again = call(&app, Method::GET, path, &[("if-none-match", &etag)], "").await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{path}");
        assert!(again.body.is_empty());
        assert_eq!(again.header("etag"), etag);
        let other = call(
            &app,
            Method::GET,
            path,
            &[("if-none-match", "\"stale\"")],
            "",
        )
        .await;
        assert_eq!(other.status, StatusCode::OK);
    }
    let head = call(&app, Method::HEAD, "/dashboard/app.js", &[], "").await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());

    let missing = call(&app, Method::GET, "/dashboard/missing.js", &[], "").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(!missing.header("content-security-policy").is_empty());
    let post = call(&app, Method::POST, "/dashboard", &[], "").await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    let root = call(&app, Method::GET, "/", &[], "").await;
    assert_eq!(root.status, StatusCode::FOUND);
    assert_eq!(root.header("location"), "/dashboard");
    // The API's own routes are untouched.
    assert_eq!(app.get("/api/stats").await.status, StatusCode::OK);
    assert_eq!(app.get("/dashboards").await.status, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test]
async fn the_page_opens_without_the_key_and_the_data_does_not() {
    let app = spawn_app(Options::default()).await;
    set_admin_key(&app);
    let page = call(&app, Method::GET, "/dashboard", &[], "").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.text().contains(ADMIN_KEY));
    let info = app.get("/api/session").await;
    assert_eq!(info.status, StatusCode::OK);
    assert_eq!(info.json()["admin_key_required"], true);
    assert_eq!(info.json()["signed_in"], false);
    assert_eq!(
        app.get("/api/accounts").await.status,
        StatusCode::UNAUTHORIZED
    );
    app.stop().await;
}

/// The cookie pair `name=value` of a `Set-Cookie` answer.
fn cookie_of(reply: &Reply) -> String {
    reply
        .header("set-cookie")
        .split(';')
        .next()
        .expect("a cookie")
        .to_owned()
}

#[tokio::test]
async fn a_cookie_session_opens_serves_and_closes() {
    let app = spawn_app(Options::default()).await;
    let origin = app.url.clone();
    let host = origin.trim_start_matches("http://").to_owned();
    let json = ("content-type", "application/json");
    // Without an admin key there is nothing to log in to.
    let none = call(
        &app,
        Method::POST,
        "/api/session",
        &[json],
        r#"{"key":"x"}"#,
    )
    .await;
    assert_eq!(none.status, StatusCode::CONFLICT);
    assert_eq!(app.get("/api/session").await.json()["signed_in"], true);
    set_admin_key(&app);

    let wrong = call(
        &app,
        Method::POST,
        "/api/session",
        &[json],
        r#"{"key":"nope"}"#,
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.header("set-cookie").is_empty());
    let body = format!(r#"{{"key":"{ADMIN_KEY}"}}"#);
    let login = call(
        &app,
        Method::POST,
        "/api/session",
        &[json, ("origin", &origin)],
        &body,
    )
    .await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text());
    let set = login.header("set-cookie").to_owned();
    for part in ["ccflare_session=", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(part), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    assert!(!login.text().contains(ADMIN_KEY) && !set.contains(ADMIN_KEY));
    let cookie = cookie_of(&login);

    // The cookie reads the API and opens the live feed.
    let with = [("cookie", cookie.as_str()), ("host", host.as_str())];
    let accounts = call(&app, Method::GET, "/api/accounts", &with, "").await;
    assert_eq!(accounts.status, StatusCode::OK, "{}", accounts.text());
    assert!(!accounts.text().contains(ADMIN_KEY));
    assert_eq!(
        call(&app, Method::GET, "/api/session", &with, "")
            .await
            .json()["signed_in"],
        true
    );
    let url = format!("{}/api/requests/stream", app.url);
    let feed = app
        .open(request(Method::GET, &url, &with, String::new()))
        .await;
    assert_eq!(feed.status(), StatusCode::OK);
    assert!(
        feed.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    drop(feed);

    // A change with the cookie needs the page's own Origin; a foreign one is refused.
    let pause = "/api/accounts/beta/pause";
    let bare = call(&app, Method::POST, pause, &with, "").await;
    assert_eq!(bare.status, StatusCode::FORBIDDEN, "{}", bare.text());
    let evil = [
        ("cookie", cookie.as_str()),
        ("host", host.as_str()),
        ("origin", "https://evil.example"),
    ];
    let cross = call(&app, Method::POST, pause, &evil, "").await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN, "{}", cross.text());
    let cross_site = [
        ("cookie", cookie.as_str()),
        ("host", host.as_str()),
        ("origin", origin.as_str()),
        ("sec-fetch-site", "cross-site"),
    ];
    let sneaky = call(&app, Method::POST, pause, &cross_site, "").await;
    assert_eq!(sneaky.status, StatusCode::FORBIDDEN, "{}", sneaky.text());
    let beta = call(&app, Method::GET, "/api/accounts/beta", &with, "").await;
    assert_eq!(beta.json()["status"], "active", "{}", beta.text());
    let own = [
        ("cookie", cookie.as_str()),
        ("host", host.as_str()),
        ("origin", origin.as_str()),
        ("sec-fetch-site", "same-origin"),
    ];
    let paused = call(&app, Method::POST, pause, &own, "").await;
    assert_eq!(paused.status, StatusCode::OK, "{}", paused.text());
    assert_eq!(paused.json()["status"], "paused");

    // Logout ends the session server-side: the same cookie is refused afterwards.
    let out = call(&app, Method::DELETE, "/api/session", &own, "").await;
    assert_eq!(out.status, StatusCode::OK);
    assert!(out.header("set-cookie").contains("Max-Age=0"));
    let after = call(&app, Method::GET, "/api/accounts", &with, "").await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    // A forged cookie is nothing.
    let forged = format!("ccflare_session={}", "a".repeat(64));
    let forged = call(
        &app,
        Method::GET,
        "/api/accounts",
        &[("cookie", &forged)],
        "",
    )
    .await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test]
async fn the_cookie_is_secure_behind_an_https_proxy() {
    let app = spawn_app(Options::default()).await;
    set_admin_key(&app);
    let body = format!(r#"{{"key":"{ADMIN_KEY}"}}"#);
    let headers = [
        ("content-type", "application/json"),
        ("x-forwarded-proto", "https"),
    ];
    let login = call(&app, Method::POST, "/api/session", &headers, &body).await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(login.header("set-cookie").ends_with("; Secure"));
    app.stop().await;
}
