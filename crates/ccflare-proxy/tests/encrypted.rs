//! OAuth accounts through the proxy with an encryption key on the database: the token is read
//! decrypted and sent as a bearer token, a refresh compares the stored (encrypted) refresh token,
//! and the rotated pair is stored encrypted before it is used. Nothing else in the proxy knows
//! that the secrets are encrypted.

use ccflare_core::config::Strategy;
use ccflare_pool::{Pool, PoolConfig};
use ccflare_storage::{EncryptionKey, Writer, accounts, oauth, secrets};
use ccflare_testkit::Message;
use ccflare_testkit::http::anthropic_post;
use ccflare_testkit::proxy::Fixture;

#[tokio::test]
async fn a_token_refreshed_under_encryption_is_stored_encrypted_and_served() {
    let key = EncryptionKey::from_bytes(&[5; 32]);
    let mut fixture = Fixture::start().await;
    fixture.db = fixture.db.clone().with_encryption_key(Some(key.clone()));
    // Due for a refresh: the proxy refreshes tokens that expire within 5 minutes.
    fixture.add_oauth_accounts(&[("max", 0, 60_000)]).await;
    let account = accounts::find(&fixture.db, "max").await.unwrap();
    let before = oauth::stored_tokens(&fixture.db, account.id).await.unwrap();

    let writer = Writer::spawn(fixture.db.clone());
    let pool = Pool::new(PoolConfig {
        strategy: Strategy::Priority,
        session_timeout_ms: 60_000,
    });
    let mock_url = fixture.mock.url();
    let state = fixture.state(pool, &writer, &mock_url, ccflare_testkit::proxy::config());
    let endpoints = ccflare_oauth::Endpoints {
        token_url: format!("{mock_url}/v1/oauth/token"),
        ..ccflare_oauth::Endpoints::default()
    };
    state.set_token_refresher(
        ccflare_oauth::TokenClient::new(endpoints),
        fixture.db.clone(),
    );
    state
        .sync_accounts(&fixture.db)
        .await
        .expect("accounts load");
    let app = fixture.serve(state, writer).await;

    let body = Message::new("claude-sonnet-4-5").body();
    let url = format!("{}/v1/messages", app.url);
    let reply = app.send(anthropic_post(&url, "client", &[], body)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(app.mock.refresh_grants(), 1);

    // The rotated pair, read back decrypted, is what went upstream.
    let after = oauth::stored_tokens(&app.db, account.id).await.unwrap();
    assert_ne!(after.access.expose(), before.access.expose());
    assert_ne!(
        after.refresh.as_ref().map(|r| r.expose().to_owned()),
        before.refresh.as_ref().map(|r| r.expose().to_owned())
    );
    let sent = app.mock.requests().last().unwrap().credential.clone();
    assert_eq!(sent.as_deref(), Some(after.access.expose()));
    // Stored: only encrypted values, under this key.
    let stored = ccflare_testkit::damage::select(
        app.db.path(),
        "SELECT credential, refresh_token FROM accounts",
    )
    .await;
    assert!(
        stored[0].iter().all(|value| value.starts_with("enc:v1:")),
        "{stored:?}"
    );
    let status = secrets::check(&app.db).await.unwrap();
    assert_eq!((status.encrypted, status.plaintext), (2, 0));
    assert_eq!(status.keys.into_iter().collect::<Vec<_>>(), [key.id()]);
    app.stop().await;
}
