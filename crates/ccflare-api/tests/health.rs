//! `/health` gives everyone the server's state, and the database's error texts (which can name
//! paths and files) only to a caller the management API admits: with an admin key configured,
//! one that sends it; without one, a same-site caller on a loopback name, as for `/api`.

mod common;

use ccflare_core::config::Layer;
use ccflare_testkit::http::request;
use common::{Options, spawn_app};
use http::Method;

const ADMIN_KEY: &str = "0123456789abcdef-health-admin";
const DAMAGE: &str = "database disk image is malformed (/srv/private/ccflare.db page 7)";
const WITHHELD: &str = "withheld: ask with the admin key";

#[tokio::test]
async fn database_error_texts_need_the_admin_key() {
    let env: Layer = [("admin_key".to_owned(), ADMIN_KEY.to_owned())]
        .into_iter()
        .collect();
    let app = spawn_app(Options {
        env,
        ..Options::default()
    })
    .await;
    app.state.writer.report_damage(DAMAGE);
    let url = format!("{}/health", app.url);
    let health = |headers: &'static [(&'static str, &'static str)]| {
        let request = request(Method::GET, &url, headers, "");
        async { app.send(request).await }
    };

    let anonymous = health(&[]).await;
    assert_eq!(anonymous.status, 200);
    let body = anonymous.json();
    assert_eq!(body["status"], "degraded", "the state is for everyone");
    assert_eq!(body["database"]["damaged"], WITHHELD);
    assert!(
        !anonymous.text().contains("/srv/private"),
        "{}",
        anonymous.text()
    );
    let wrong = health(&[("x-ccflare-admin-key", "0123456789abcdef-not-it")]).await;
    assert_eq!(wrong.json()["database"]["damaged"], WITHHELD);

    for admitted in [
        &[("x-ccflare-admin-key", ADMIN_KEY)][..],
        &[("authorization", "Bearer 0123456789abcdef-health-admin")][..],
    ] {
        let reply = health(admitted).await;
        assert_eq!(reply.json()["database"]["damaged"], DAMAGE);
    }
    app.stop().await;
}

#[tokio::test]
async fn without_an_admin_key_only_a_loopback_same_site_caller_sees_them() {
    let app = spawn_app(Options::default()).await;
    app.state.writer.report_damage(DAMAGE);
    let url = format!("{}/health", app.url);
    let local = app.send(request(Method::GET, &url, &[], "")).await;
    assert_eq!(local.json()["database"]["damaged"], DAMAGE);
    // A page that reached the server through DNS rebinding names it by its own domain; a page
    // of another site sends its Origin.
    for foreign in [
        [("host", "attacker.example:8080")],
        [("origin", "https://attacker.example")],
    ] {
        let reply = app.send(request(Method::GET, &url, &foreign, "")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["database"]["damaged"], WITHHELD, "{foreign:?}");
    }
    app.stop().await;
}
