//! `accounts add --oauth` and `accounts reauth` with the real binary, the mock upstream as the
//! token endpoint, and a person's paste played by the test: it reads the printed URL, takes its
//! `state`, and writes `CODE#STATE` to the CLI's standard input.

mod common;

use ccflare_mock::MockUpstream;
use ccflare_testkit::PROCESS_GUARD;
use common::{Cli, Output};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Runs `args` with the OAuth endpoints on the mock, pasting `CODE#STATE` (or `paste(state)`)
/// once the URL is printed.
async fn login(
    cli: &Cli,
    mock: &MockUpstream,
    args: &[&str],
    paste: impl Fn(&str) -> String,
) -> Output {
    let mut command = cli.command(args);
    command
        .env(
            "CCFLARE_OAUTH_TOKEN_URL",
            format!("{}/v1/oauth/token", mock.url()),
        )
        .env(
            "CCFLARE_OAUTH_API_KEY_URL",
            format!("{}/api/oauth/claude_cli/create_api_key", mock.url()),
        )
        .stdin(Stdio::piped());
    let mut child = command.spawn().expect("cli starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut printed = String::new();
    let url = tokio::time::timeout(PROCESS_GUARD, async {
        loop {
            let mut line = String::new();
            if stdout.read_line(&mut line).await.expect("read") == 0 {
                return None;
            }
            printed.push_str(&line);
            if let Some(url) = line.trim().strip_prefix("https://") {
                return Some(url.to_owned());
            }
        }
    })
    .await
    .expect("the URL is printed in time");
    if let Some(url) = url {
        let state = url.rsplit("state=").next().unwrap().to_owned();
        stdin
            .write_all(format!("{}\n", paste(&state)).as_bytes())
            .await
            .unwrap();
    }
    drop(stdin);
    // The rest of stdout ends when the CLI exits; a CLI stuck after the paste fails the test
    // at the guard instead of hanging the run.
    let rest = {
        let mut rest = String::new();
        tokio::time::timeout(
            PROCESS_GUARD,
            tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut rest),
        )
        .await
        .unwrap_or_else(|_| panic!("the CLI did not finish in time; printed:\n{printed}{rest}"))
        .unwrap();
        rest
    };
    child.stdout = None;
    let mut done = output_of(child).await;
    done.stdout = format!("{printed}{rest}");
    done
}

/// `accounts add --oauth MODE NAME` in a new CLI directory, with a new mock as the token
/// endpoint: the mock, the CLI and what the command printed.
async fn add_oauth(
    mode: &str,
    name: &str,
    paste: impl Fn(&str) -> String,
) -> (MockUpstream, Cli, Output) {
    let mock = MockUpstream::start().await.unwrap();
    let cli = Cli::new();
    let out = login(
        &cli,
        &mock,
        &["accounts", "add", "--oauth", mode, name],
        paste,
    )
    .await;
    (mock, cli, out)
}

async fn output_of(child: tokio::process::Child) -> Output {
    let result = tokio::time::timeout(PROCESS_GUARD, child.wait_with_output())
        .await
        .expect("exits")
        .expect("runs");
    Output {
        code: result.status.code(),
        stdout: String::new(),
        stderr: String::from_utf8(result.stderr).unwrap(),
    }
}

#[tokio::test]
async fn a_subscription_login_adds_an_oauth_account_and_warns_once() {
    let (mock, cli, out) = add_oauth("max", "personal", |state| format!("the-code#{state}")).await;
    let stdout = out.ok();
    assert_eq!(
        stdout.matches("can get the account banned").count(),
        1,
        "{stdout}"
    );
    assert!(
        stdout.contains("https://claude.ai/oauth/authorize?code=true&client_id="),
        "{stdout}"
    );
    assert!(
        stdout.contains("added subscription account personal"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("sk-ant-oat") && !stdout.contains("sk-ant-ort"),
        "no token printed: {stdout}"
    );
    assert_eq!(mock.code_grants(), 1);

    let listed = cli.run(&["accounts", "list", "--json"]).await.ok();
    let accounts: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(accounts[0]["name"], "personal");
    assert_eq!(accounts[0]["kind"], "oauth");
    assert_eq!(accounts[0]["status"], "active");
    assert!(accounts[0]["key"].as_str().unwrap().starts_with("sk-ant-…"));
    assert!(accounts[0]["token_expires_at"].as_i64().is_some());
    let table = cli.run(&["accounts", "list"]).await.ok();
    assert!(
        table.contains("Subscriptions:\n  personal: token expires in"),
        "{table}"
    );

    // The same name again: refused before any login.
    let again = cli
        .run(&["accounts", "add", "--oauth", "max", "personal"])
        .await
        .fails();
    assert!(
        again.contains("already exists") && again.contains("accounts reauth personal"),
        "{again}"
    );
}

#[tokio::test]
async fn a_paste_from_another_login_is_refused() {
    let (mock, cli, out) =
        add_oauth("max", "personal", |_| "the-code#someone-elses-state".into()).await;
    let line = out.fails();
    assert!(line.contains("state mismatch"), "{line}");
    assert_eq!(mock.code_grants(), 0, "nothing was exchanged");
    let listed = cli.run(&["accounts", "list", "--json"]).await.ok();
    assert_eq!(listed.trim(), "[]");
}

#[tokio::test]
async fn a_console_login_stores_a_minted_api_key() {
    let (_mock, cli, out) = add_oauth("console", "team", |state| format!("c#{state}")).await;
    let stdout = out.ok();
    assert!(
        !stdout.contains("banned"),
        "the subscription warning is for subscriptions"
    );
    assert!(
        stdout.contains("https://console.anthropic.com/oauth/authorize?"),
        "{stdout}"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&cli.run(&["accounts", "list", "--json"]).await.ok()).unwrap();
    assert_eq!(
        (listed[0]["name"].as_str(), listed[0]["kind"].as_str()),
        (Some("team"), Some("api_key"))
    );
}

#[tokio::test]
async fn reauth_renews_an_invalid_login_and_keeps_the_account() {
    let (mock, cli, added) = add_oauth("max", "personal", |s| format!("a#{s}")).await;
    added.ok();
    let db = cli.db().await;
    let before = ccflare_storage::accounts::find(&db, "personal")
        .await
        .unwrap();
    ccflare_storage::accounts::set_priority(&db, "personal", 3, 1)
        .await
        .unwrap();
    common::record(
        &db,
        &[],
        &[common::benched(
            before.id.0,
            ccflare_core::AccountStatus::Invalid,
            None,
        )],
    )
    .await;

    let out = login(&cli, &mock, &["accounts", "reauth", "personal"], |s| {
        format!("b#{s}")
    })
    .await;
    assert!(out.ok().contains("renewed the login of account personal"));
    let after = ccflare_storage::accounts::find(&db, "personal")
        .await
        .unwrap();
    assert_eq!(
        (after.id, after.priority, after.status),
        (before.id, 3, ccflare_core::AccountStatus::Active)
    );
    assert_ne!(after.credential.expose(), before.credential.expose());
    assert!(
        after.revision > before.revision,
        "a person's change: a running server takes it"
    );

    let key_account = cli
        .run(&["accounts", "add", &common::key("wxyz"), "--name", "k"])
        .await;
    key_account.ok();
    let refused = cli.run(&["accounts", "reauth", "k"]).await.fails();
    assert!(refused.contains("uses an API key"), "{refused}");
    let unknown = cli.run(&["accounts", "reauth", "nobody"]).await.fails();
    assert!(unknown.contains("nobody"), "{unknown}");
}

/// A subscription login's stored state as a server leaves it: tokens refreshed 20 minutes ago,
/// and the unified rate-limit headers of its last answer (5h and 7d windows).
#[tokio::test]
async fn accounts_list_shows_the_subscription_windows_and_the_last_refresh() {
    use ccflare_core::ratelimit::RateLimitSnapshot;
    use ccflare_core::{AccountStatus, Secret};
    use ccflare_storage::AccountStateUpdate;
    use common::{DAY, HOUR, MIN, NOW};

    let cli = Cli::new();
    cli.run(&["accounts", "add", &common::key("wxyz"), "--name", "work"])
        .await
        .ok();
    let db = cli.db().await;
    let access = Secret::new("sk-ant-oat01-first-access-token-0123456789-aaaa");
    let refresh = Secret::new("sk-ant-ort01-first-refresh-token-0123456789-rrrr");
    let personal = ccflare_storage::oauth::add_oauth_account(
        &db,
        "personal",
        &access,
        Some(&refresh),
        NOW - 4 * HOUR,
        None,
        NOW - 5 * HOUR,
    )
    .await
    .unwrap();
    let refreshed = Secret::new("sk-ant-oat01-second-access-token-0123456789-bbbb");
    assert!(
        ccflare_storage::oauth::save_refreshed(
            &db,
            personal.id,
            &refresh,
            &refreshed,
            None,
            NOW + 40 * MIN,
            NOW - 20 * MIN,
        )
        .await
        .unwrap()
    );
    // A login that died two days ago: the server marked it invalid.
    let lapsed = ccflare_storage::oauth::add_oauth_account(
        &db,
        "lapsed",
        &Secret::new("sk-ant-oat01-lapsed-access-token-0123456789-cccc"),
        None,
        NOW - 2 * DAY + HOUR,
        None,
        NOW - 2 * DAY,
    )
    .await
    .unwrap();
    let windows = |seen_at| RateLimitSnapshot {
        unified_status: Some("allowed_warning".into()),
        unified_5h_utilization: Some(0.42),
        unified_5h_reset: Some(NOW + 90 * MIN),
        unified_7d_utilization: Some(0.87),
        unified_7d_reset: Some(NOW + 3 * DAY + 4 * HOUR),
        seen_at,
        ..Default::default()
    };
    let state = |id, status, seen_at| AccountStateUpdate {
        id,
        revision: None,
        status,
        rate_limited_until: None,
        overloaded_until: None,
        last_ratelimit: Some(windows(seen_at)),
    };
    common::record(
        &db,
        &[],
        &[
            state(personal.id, AccountStatus::Active, NOW - MIN),
            state(lapsed.id, AccountStatus::Invalid, NOW - 2 * DAY),
        ],
    )
    .await;

    let table = cli.run(&["accounts", "list"]).await.ok();
    insta::assert_snapshot!("accounts_list_subscriptions", table);
    // What the snapshot shows, said in words: the window use and resets, the refresh, and
    // what to do about the dead login.
    assert!(
        table.contains(
            "  personal: token expires in 40m 00s, refreshed 20 min ago\n    5h 42% (resets in 1h \
             30m); 7d 87% (resets in 3d 4h); allowed_warning\n"
        ),
        "{table}"
    );
    assert!(
        table.contains("  lapsed: token expired, refreshed 2 d ago\n    needs re-auth: ccflare-cli accounts reauth lapsed\n"),
        "{table}"
    );
    assert!(
        !table.contains("  work:"),
        "API-key accounts have no subscription: {table}"
    );

    let listed: serde_json::Value =
        serde_json::from_str(&cli.run(&["accounts", "list", "--json"]).await.ok()).unwrap();
    let by_name = |name: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .unwrap_or_else(|| panic!("{name} is listed: {listed}"))
            .clone()
    };
    let personal = by_name("personal");
    assert_eq!(
        (
            personal["kind"].as_str(),
            personal["status"].as_str(),
            personal["token_expires_at"].as_i64(),
            personal["token_refreshed_at"].as_i64()
        ),
        (
            Some("oauth"),
            Some("active"),
            Some(NOW + 40 * MIN),
            Some(NOW - 20 * MIN)
        )
    );
    assert_eq!(
        personal["subscription"],
        serde_json::json!({
            "status": "allowed_warning",
            "utilization_5h": 0.42,
            "resets_5h": NOW + 90 * MIN,
            "utilization_7d": 0.87,
            "resets_7d": NOW + 3 * DAY + 4 * HOUR,
        })
    );
    let lapsed = by_name("lapsed");
    assert_eq!(
        (
            lapsed["status"].as_str(),
            lapsed["token_refreshed_at"].as_i64()
        ),
        (Some("invalid"), Some(NOW - 2 * DAY))
    );
    let work = by_name("work");
    for field in ["token_expires_at", "token_refreshed_at", "subscription"] {
        assert!(
            work.get(field).is_none(),
            "API-key account has no {field}: {work}"
        );
    }
    // doctor gives the same advice (the upstream is a port nothing listens on: no internet).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut doctor = cli.command(&["doctor", "--json"]);
    doctor.env("CCFLARE_UPSTREAM_URL", format!("http://127.0.0.1:{port}"));
    let doctor = common::output(doctor).await.stdout;
    let report: serde_json::Value = serde_json::from_str(&doctor).unwrap();
    let advice: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["check"] == "account" && c["status"] == "warn")
        .map(|c| c["detail"].as_str().unwrap())
        .collect();
    assert_eq!(
        advice,
        ["lapsed: Invalid (login refused; needs re-auth: `ccflare-cli accounts reauth lapsed`)"]
    );
    let everything = format!("{table}{listed}{doctor}");
    for token in [
        "first-access",
        "second-access",
        "first-refresh",
        "lapsed-access",
    ] {
        assert!(!everything.contains(token), "{token} leaked: {everything}");
    }
}
