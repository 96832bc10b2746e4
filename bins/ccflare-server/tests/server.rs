//! The `ccflare-server` binary as a user runs it: start-up messages, configuration from flags,
//! environment, `.env` and the config file, start-up failures as one clear line, accounts
//! added while it runs, and graceful shutdown that lets streams finish and flushes records.

mod common;

use ccflare_testkit::db::WriteLock;
use ccflare_testkit::http::request;
use ccflare_testkit::process::Server;
use ccflare_testkit::{PROCESS_GUARD, Reply, eventually, get, key, open, send};
use common::{
    db_path, health_until, messages_request, mock, proxy_command, records, run_to_end,
    server_command,
};
use http::{Method, StatusCode};
use http_body_util::BodyExt;

/// The strategy the banner names.
fn strategy_of(server: &Server) -> String {
    server
        .banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("strategy"))
        .map(|s| s.trim().to_owned())
        .unwrap()
}

#[tokio::test]
async fn starts_with_no_accounts_on_the_default_database_and_explains_the_empty_pool() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(server_command(dir.path())).await;
    let default_db = dir.path().join(".local/share/ccflare/ccflare.db");
    assert!(
        server.banner.contains(&default_db.display().to_string()),
        "{}",
        server.banner
    );
    assert!(server.banner.contains("0 total"), "{}", server.banner);
    assert!(
        server.banner.contains("no accounts yet"),
        "{}",
        server.banner
    );
    assert!(default_db.exists());

    let health = send(get(&format!("{}/health", server.url))).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "degraded");
    let reply = send(messages_request(&server.url, false, &[])).await;
    assert_eq!(reply.status, 503);
    assert!(!reply.header("retry-after").is_empty());
    assert!(
        reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ccflare-cli accounts add")
    );

    server.terminate().await;
}

#[tokio::test]
async fn seed_env_file_and_file_database_url_work() {
    let upstream = mock().await;
    let dir = tempfile::tempdir().unwrap();
    // The seed's setup: `cp .env.example .env` and edit it.
    let env = format!(
        "DATABASE_URL=\"file:./ccflare.db\"\nCLAUDE_API_KEYS=\"\n{},\n{}\n\"\nSESSION_TIMEOUT=18000  # five hours\nLOG_LEVEL=info\nCCFLARE_UPSTREAM_URL={}\n",
        key("one"),
        key("two"),
        upstream.url()
    );
    std::fs::write(dir.path().join(".env"), env).unwrap();
    let server = Server::start(server_command(dir.path())).await;
    assert!(
        server.banner.contains("2 total: 2 active"),
        "{}",
        server.banner
    );
    assert!(db_path(dir.path()).exists());
    let reply = send(messages_request(&server.url, false, &[])).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json()["content"][0]["text"],
        "Hello from the mock upstream."
    );
    server.terminate().await;

    // Starting again with the same keys adds nothing.
    let server = Server::start(server_command(dir.path())).await;
    assert!(server.banner.contains("2 total"), "{}", server.banner);
    server.terminate().await;
}

#[tokio::test]
async fn flag_beats_environment_beats_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ccflare.toml");
    std::fs::write(
        &config,
        "lb_strategy = \"round-robin\"\nsession_timeout = 60\n",
    )
    .unwrap();

    let mut command = server_command(dir.path());
    command.env("CCFLARE_CONFIG", &config);
    let server = Server::start(command).await;
    assert_eq!(strategy_of(&server), "round-robin");
    server.terminate().await;

    let mut command = server_command(dir.path());
    command
        .env("CCFLARE_CONFIG", &config)
        .env("LB_STRATEGY", "priority");
    let server = Server::start(command).await;
    assert_eq!(strategy_of(&server), "priority");
    server.terminate().await;

    let mut command = server_command(dir.path());
    command
        .env("CCFLARE_CONFIG", &config)
        .env("LB_STRATEGY", "priority")
        .args(["--strategy", "least-requests"]);
    let server = Server::start(command).await;
    assert_eq!(strategy_of(&server), "least-requests");
    server.terminate().await;
}

#[tokio::test]
async fn bad_configuration_fails_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    type Case = (
        Vec<(&'static str, &'static str)>,
        Vec<&'static str>,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            vec![("PORT", "eighty")],
            vec![],
            "invalid value \"eighty\" for PORT: expected a port number",
        ),
        (vec![("LB_STRATEGY", "random")], vec![], "LB_STRATEGY"),
        (vec![("SESSION_TIMEOUT", "-5")], vec![], "SESSION_TIMEOUT"),
        (
            vec![("CLAUDE_API_KEYS", "not-a-key-at-all")],
            vec![],
            "expected a value starting with `sk-ant-`",
        ),
        (
            vec![("CCFLARE_UPSTREAM_URL", "ftp://x")],
            vec![],
            "CCFLARE_UPSTREAM_URL",
        ),
        (
            vec![("DATABASE_URL", "file:/proc/ccflare-nope/x.db")],
            vec![],
            "cannot open database at /proc/ccflare-nope/x.db",
        ),
        (
            vec![("DATABASE_URL", "postgres://localhost/x")],
            vec![],
            "unsupported DATABASE_URL",
        ),
        (
            vec![("CCFLARE_CONFIG", "/nonexistent/ccflare.toml")],
            vec![],
            "reading config file /nonexistent/ccflare.toml",
        ),
        (vec![], vec!["--port", "70000"], "PORT"),
        (vec![], vec!["--no-such-flag"], "--no-such-flag"),
    ];
    for (env, args, expected) in cases {
        let mut command = server_command(dir.path());
        command.envs(env.iter().copied()).args(&args);
        let (code, stdout, stderr) = run_to_end(command).await;
        assert_ne!(code, Some(0), "{env:?} {args:?} must fail");
        assert!(
            stderr.contains(expected),
            "{env:?} {args:?}: expected {expected:?} in {stderr:?}"
        );
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{stderr}"
        );
        assert!(
            !stderr.contains("not-a-key-at-all"),
            "the rejected key is not echoed: {stderr}"
        );
        assert!(
            stdout.is_empty() || !stdout.contains("listening on"),
            "{stdout}"
        );
    }
}

#[tokio::test]
async fn an_unknown_key_in_the_config_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "prot = 9000\n").unwrap();
    let mut command = server_command(dir.path());
    command.args(["--config", config.to_str().unwrap()]);
    let (code, _, stderr) = run_to_end(command).await;
    assert_ne!(code, Some(0));
    assert!(stderr.contains("unknown option \"prot\""), "{stderr}");
}

#[tokio::test]
async fn a_port_in_use_is_named_and_exits_non_zero() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut command = server_command(dir.path());
    command.env("PORT", &port);
    let (code, _, stderr) = run_to_end(command).await;
    assert_ne!(code, Some(0));
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains(&format!("port {port} on 127.0.0.1 is already in use")),
        "{stderr}"
    );
}

#[tokio::test]
async fn sigterm_lets_a_running_stream_finish_and_flushes_its_record() {
    let upstream = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(proxy_command(dir.path(), &upstream, &[key("one")])).await;
    let request = messages_request(
        &server.url,
        true,
        &[
            ("x-mock-chunk-delay-ms", "40"),
            (
                "x-mock-text",
                "one two three four five six seven eight nine ten",
            ),
        ],
    );
    let response = open(request).await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = tokio::time::timeout(PROCESS_GUARD, body.frame())
        .await
        .expect("a first frame in time")
        .expect("a first frame")
        .expect("no error");
    let mut received = first.into_data().unwrap_or_default().to_vec();

    let pid = server.child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    while let Some(frame) = tokio::time::timeout(PROCESS_GUARD, body.frame())
        .await
        .unwrap()
    {
        received.extend_from_slice(
            &frame
                .expect("stream finishes cleanly")
                .into_data()
                .unwrap_or_default(),
        );
    }
    assert!(String::from_utf8_lossy(&received).ends_with("data: {\"type\":\"message_stop\"}\n\n"));

    let (code, _) = server.terminate_after_signal().await;
    assert_eq!(code, Some(0));
    let rows = records(dir.path(), 10).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].status, rows[0].success, rows[0].usage.output_tokens),
        (200, true, 10)
    );
}

#[tokio::test]
async fn accounts_added_by_another_process_are_used_without_a_restart() {
    let upstream = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(proxy_command(dir.path(), &upstream, &[])).await;
    assert_eq!(
        send(messages_request(&server.url, false, &[])).await.status,
        503
    );

    // What `ccflare-cli accounts add` does: write the row from another connection.
    let db = ccflare_storage::Db::open_path(&db_path(dir.path()))
        .await
        .unwrap();
    ccflare_storage::accounts::upsert_api_key(
        &db,
        &ccflare_core::Secret::new(key("late")),
        Some("late"),
        None,
        0,
    )
    .await
    .unwrap();
    // The server re-reads accounts every second; poll its health until the account shows.
    health_until(&server, |h| h["accounts"]["available"] == 1).await;
    let reply = send(messages_request(&server.url, false, &[])).await;
    assert_eq!(
        (reply.status, reply.header("x-ccflare-account")),
        (StatusCode::OK, "late")
    );

    ccflare_storage::accounts::set_status(&db, "late", ccflare_core::AccountStatus::Paused, 1)
        .await
        .unwrap();
    health_until(&server, |h| h["accounts"]["paused"] == 1).await;
    assert_eq!(
        send(messages_request(&server.url, false, &[])).await.status,
        503
    );
    server.terminate().await;
}

#[tokio::test]
async fn no_account_key_appears_in_any_log_line_at_trace() {
    let upstream = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (key("one"), key("two"));
    upstream.push_fault(
        &one,
        ccflare_mock::Fault::RateLimited {
            retry_after: Some(5),
            reset: None,
        },
    );
    let mut command = server_command(dir.path());
    command
        .env("CLAUDE_API_KEYS", format!("{one},{two}"))
        .env("CCFLARE_UPSTREAM_URL", upstream.url())
        .env("LOG_LEVEL", "trace")
        .env("LB_STRATEGY", "round-robin");
    let server = Server::start(command).await;
    assert_eq!(
        send(messages_request(&server.url, false, &[])).await.status,
        200
    );
    assert_eq!(
        send(messages_request(&server.url, true, &[])).await.status,
        200
    );
    upstream.revoke(&two);
    send(messages_request(&server.url, false, &[])).await;
    send(messages_request(
        &server.url,
        false,
        &[(
            "authorization",
            "Bearer sk-ant-api03-client-bearer-must-not-leak",
        )],
    ))
    .await;
    let banner = server.banner.clone();
    let rest = server.terminate().await;
    let output = format!("{banner}{rest}");
    assert!(
        output.contains("request finished"),
        "trace logging is on: {output}"
    );
    assert!(output.contains("failing over"), "{output}");
    for secret in [
        one.as_str(),
        two.as_str(),
        "0123456789abcdefghij",
        "client-own-key-must-not-leak",
        "client-bearer-must-not-leak",
    ] {
        assert!(
            !output.contains(secret),
            "{secret:?} leaked into the logs:\n{output}"
        );
    }
}

#[tokio::test]
async fn a_strategy_stored_in_the_database_applies_at_start_and_while_running() {
    let upstream = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let db = ccflare_storage::Db::open_path(&db_path(dir.path()))
        .await
        .unwrap();
    ccflare_storage::settings::set(&db, "lb_strategy", "priority", 0)
        .await
        .unwrap();
    let command = || proxy_command(dir.path(), &upstream, &[key("one"), key("two")]);
    // The environment outranks the database.
    let mut overridden = command();
    overridden.env("LB_STRATEGY", "headroom");
    let server = Server::start(overridden).await;
    assert_eq!(strategy_of(&server), "headroom");
    server.terminate().await;

    let server = Server::start(command()).await;
    assert_eq!(strategy_of(&server), "priority");
    let account = |reply: Reply| reply.header("x-ccflare-account").to_owned();
    let first = account(send(messages_request(&server.url, false, &[])).await);
    assert_eq!(
        account(send(messages_request(&server.url, false, &[])).await),
        first
    );

    // Stored while running: round-robin takes over within the sync interval.
    ccflare_storage::settings::set(&db, "lb_strategy", "round-robin", 1)
        .await
        .unwrap();
    eventually(
        PROCESS_GUARD,
        "the stored strategy takes effect",
        || async {
            let a = account(send(messages_request(&server.url, false, &[])).await);
            let b = account(send(messages_request(&server.url, false, &[])).await);
            (a != b).then_some(())
        },
    )
    .await;
    server.terminate().await;
}

#[tokio::test]
async fn a_non_loopback_host_needs_an_admin_key_which_then_guards_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let mut open = server_command(dir.path());
    open.env("HOST", "0.0.0.0");
    let (code, _, stderr) = run_to_end(open).await;
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("HOST=0.0.0.0") && stderr.contains("CCFLARE_ADMIN_KEY"),
        "{stderr}"
    );

    let admin = "0123456789abcdef-admin-key";
    // /v1 there needs client keys, so one must exist (tests/keys.rs tests that rule).
    let db = ccflare_storage::Db::open_path(&db_path(dir.path()))
        .await
        .unwrap();
    let limits = ccflare_core::client_key::KeyLimits::default();
    ccflare_storage::keys::create(&db, "team", &limits, None, 0)
        .await
        .unwrap();
    db.close().await;
    let mut guarded = server_command(dir.path());
    guarded
        .env("HOST", "0.0.0.0")
        .env("CCFLARE_ADMIN_KEY", admin)
        .env("DATABASE_URL", db_path(dir.path()));
    let server = Server::start(guarded).await;
    assert!(
        server.banner.contains("warning: listening on 0.0.0.0"),
        "{}",
        server.banner
    );
    let url = server.url.replace("0.0.0.0", "127.0.0.1");
    let refused = send(get(&format!("{url}/api/accounts"))).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.json()["error"]["type"], "authentication_error");
    let get_with = |path: &str, header: (&str, &str)| {
        request(Method::GET, &format!("{url}{path}"), &[header], "")
    };
    let wrong = get_with("/metrics", ("authorization", "Bearer not-the-key-at-all"));
    assert_eq!(send(wrong).await.status, 401);
    let bearer = format!("Bearer {admin}");
    let right = get_with("/api/accounts", ("authorization", &bearer));
    assert_eq!(send(right).await.status, 200);
    let by_header = get_with("/metrics", ("x-ccflare-admin-key", admin));
    assert_eq!(send(by_header).await.status, 200);
    // Health stays open for probes; /v1 is the proxy's, not the management API's.
    assert_eq!(send(get(&format!("{url}/health"))).await.status, 200);
    let rest = server.terminate().await;
    assert!(
        !rest.contains(admin),
        "the admin key never appears in the output"
    );
}

#[tokio::test]
async fn a_database_locked_through_shutdown_spills_and_the_next_start_writes_it() {
    let upstream = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut command = proxy_command(dir.path(), &upstream, &[key("one")]);
    command.env("CCFLARE_SHUTDOWN_TIMEOUT", "1");
    let server = Server::start(command).await;
    let _lock = WriteLock::take(&db_path(dir.path())).await;
    let reply = send(messages_request(&server.url, false, &[])).await;
    assert_eq!(reply.status, StatusCode::OK);
    let pid = server.child.id().unwrap().to_string();
    let signal = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(signal.success());
    // At exit the writer does not wait out the lock: what the database cannot take goes to
    // the spill file beside it, and the server says so, and why, with exit code 1.
    let (code, rest) = server.terminate_after_signal().await;
    assert_eq!(code, Some(1), "{rest}");
    assert!(
        rest.contains("the database cannot be written") && rest.contains("locked"),
        "{rest}"
    );
    assert!(
        rest.contains("1 records wait in") && rest.contains("ccflare.db-spill.jsonl"),
        "{rest}"
    );
    let spilled = std::fs::read_to_string(dir.path().join("ccflare.db-spill.jsonl")).unwrap();
    assert!(
        spilled.contains(reply.header("x-ccflare-request-id")),
        "{spilled}"
    );
    drop(_lock);
    // The next start writes it to the database.
    let server = Server::start(proxy_command(dir.path(), &upstream, &[key("one")])).await;
    let id = reply.header("x-ccflare-request-id").to_owned();
    eventually(PROCESS_GUARD, "the spilled record is replayed", || async {
        let stored = records(dir.path(), 100).await;
        (stored.len() == 1 && stored[0].id == id).then_some(())
    })
    .await;
    server.terminate().await;
    assert!(!dir.path().join("ccflare.db-spill.jsonl").exists());
}
