//! `accounts add --oauth` and `accounts reauth` with the real binary, the mock upstream as the
//! token endpoint, and a person's paste played by the test: it reads the printed URL, takes its
//! `state`, and writes `CODE#STATE` to the CLI's standard input.

mod common;

use ccflare_mock::MockUpstream;
use common::{Cli, GUARD, Output};
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
    let url = tokio::time::timeout(GUARD, async {
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
    let rest = {
        let mut rest = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut rest)
            .await
            .unwrap();
        rest
    };
    child.stdout = None;
    let mut done = output_of(child).await;
    done.stdout = format!("{printed}{rest}");
    done
}

async fn output_of(child: tokio::process::Child) -> Output {
    let result = tokio::time::timeout(GUARD, child.wait_with_output())
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
    let mock = MockUpstream::start().await.unwrap();
    let cli = Cli::new();
    let out = login(
        &cli,
        &mock,
        &["accounts", "add", "--oauth", "max", "personal"],
        |state| format!("the-code#{state}"),
    )
    .await;
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
    let mock = MockUpstream::start().await.unwrap();
    let cli = Cli::new();
    let out = login(
        &cli,
        &mock,
        &["accounts", "add", "--oauth", "max", "personal"],
        |_| "the-code#someone-elses-state".into(),
    )
    .await;
    let line = out.fails();
    assert!(line.contains("state mismatch"), "{line}");
    assert_eq!(mock.code_grants(), 0, "nothing was exchanged");
    let listed = cli.run(&["accounts", "list", "--json"]).await.ok();
    assert_eq!(listed.trim(), "[]");
}

#[tokio::test]
async fn a_console_login_stores_a_minted_api_key() {
    let mock = MockUpstream::start().await.unwrap();
    let cli = Cli::new();
    let out = login(
        &cli,
        &mock,
        &["accounts", "add", "--oauth", "console", "team"],
        |state| format!("c#{state}"),
    )
    .await;
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
    let mock = MockUpstream::start().await.unwrap();
    let cli = Cli::new();
    login(
        &cli,
        &mock,
        &["accounts", "add", "--oauth", "max", "personal"],
        |s| format!("a#{s}"),
    )
    .await
    .ok();
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
