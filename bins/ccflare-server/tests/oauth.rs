//! An OAuth account through the real server binary: the token is refreshed ahead of expiry,
//! the rotated pair survives a crash right after the refresh (SIGKILL, restart: the new token
//! is used and no second refresh is needed — had the rotation been lost, the dead refresh
//! token would now mark the account invalid), and no token shows in any output at trace.

mod common;

use ccflare_core::{Clock, Secret, SystemClock};
use ccflare_testkit::process::Server;
use ccflare_testkit::send;
use common::{db_path, messages_request, mock, proxy_command};
use http::StatusCode;

#[tokio::test]
async fn a_rotated_refresh_token_survives_a_crash_right_after_the_refresh() {
    let upstream = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let (first_access, first_refresh) = upstream.issue_oauth_tokens();
    {
        let db = ccflare_storage::Db::open_path(&db_path(dir.path()))
            .await
            .unwrap();
        let now = SystemClock.now_ms();
        // Expires within the refresh margin: the first request refreshes it.
        ccflare_storage::oauth::add_oauth_account(
            &db,
            "max",
            &Secret::new(first_access.clone()),
            Some(&Secret::new(first_refresh.clone())),
            now + 60_000,
            None,
            now,
        )
        .await
        .unwrap();
        db.close().await;
    }
    let command = || {
        let mut command = proxy_command(dir.path(), &upstream, &[]);
        command
            .env(
                "CCFLARE_OAUTH_TOKEN_URL",
                format!("{}/v1/oauth/token", upstream.url()),
            )
            .env("LOG_LEVEL", "trace");
        command
    };

    let server = Server::start(command()).await;
    let reply = send(messages_request(&server.url, false, &[])).await;
    assert_eq!(
        (reply.status, reply.header("x-ccflare-account")),
        (StatusCode::OK, "max")
    );
    assert_eq!(upstream.refresh_grants(), 1);
    // A crash, not a shutdown: nothing gets to flush.
    let pid = server.child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap();
    let (code, first_output) = server.terminate_after_signal().await;
    assert_ne!(code, Some(0));

    let server = Server::start(command()).await;
    let reply = send(messages_request(&server.url, false, &[])).await;
    assert_eq!(
        (reply.status, reply.header("x-ccflare-account")),
        (StatusCode::OK, "max")
    );
    assert_eq!(
        upstream.refresh_grants(),
        1,
        "the stored new token is fresh: no second refresh"
    );
    let bearers: Vec<String> = upstream
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/messages")
        .filter_map(|r| r.header("authorization").map(str::to_owned))
        .collect();
    assert_eq!(bearers.len(), 2);
    assert_eq!(
        bearers[0], bearers[1],
        "after the restart the refreshed token is used"
    );
    assert_ne!(bearers[0], format!("Bearer {first_access}"));
    let banner = server.banner.clone();
    let second_output = server.terminate().await;

    let new_access = bearers[0].trim_start_matches("Bearer ").to_owned();
    let db = ccflare_storage::Db::open_path(&db_path(dir.path()))
        .await
        .unwrap();
    let account = ccflare_storage::accounts::find(&db, "max").await.unwrap();
    let stored = ccflare_storage::oauth::stored_tokens(&db, account.id)
        .await
        .unwrap();
    let new_refresh = stored.refresh.unwrap().expose().to_owned();
    assert_ne!(new_refresh, first_refresh);
    let output = format!("{first_output}{banner}{second_output}");
    assert!(output.contains("refreshed OAuth token"), "{output}");
    for secret in [&first_access, &first_refresh, &new_access, &new_refresh] {
        assert!(
            !output.contains(secret.as_str()),
            "a token leaked into the output:\n{output}"
        );
    }
}
