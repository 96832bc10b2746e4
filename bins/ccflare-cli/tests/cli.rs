//! The real `ccflare-cli` binary against a temp database: snapshots of every `--help` and of
//! every table (reviewed like code: they are the spec of the output), JSON output, and the
//! one-line errors. The clock is fixed with `CCFLARE_NOW_MS` and the zone with `TZ=UTC`, so
//! "2 min ago" and the day boundaries do not depend on when or where the tests run.

mod common;

use ccflare_core::AccountStatus;
use common::{Cli, DAY, HOUR, MIN, NOW, Request, benched, key, record};

/// Every command and subcommand, for the `--help` snapshots.
const COMMANDS: &[&str] = &[
    "",
    "accounts",
    "accounts add",
    "accounts list",
    "accounts remove",
    "accounts pause",
    "accounts resume",
    "accounts rename",
    "accounts reauth",
    "keys",
    "keys create",
    "keys list",
    "keys disable",
    "keys enable",
    "keys rename",
    "keys delete",
    "keys set-limits",
    "stats",
    "stats daily",
    "stats hourly",
    "stats models",
    "logs",
    "replay",
    "config",
    "config show",
    "config set",
    "config unset",
    "doctor",
    "db",
    "db check",
    "db recover",
    "secrets",
    "secrets status",
    "secrets encrypt",
    "secrets rotate",
    "secrets decrypt",
    "db backup",
];

fn assert_fits_80_columns(text: &str) {
    for line in text.lines() {
        assert!(
            line.chars().count() <= 80,
            "wider than 80 columns ({}): {line:?}",
            line.chars().count()
        );
    }
}

#[tokio::test]
async fn help_everywhere_with_examples() {
    let cli = Cli::new();
    for command in COMMANDS {
        let mut args: Vec<&str> = command.split_whitespace().collect();
        args.push("--help");
        let text = cli.run(&args).await.ok();
        assert_fits_80_columns(&text);
        if !matches!(*command, "accounts" | "keys" | "stats" | "config" | "db") {
            assert!(text.contains("Example"), "{command}: no example:\n{text}");
        }
        let name = if command.is_empty() {
            "help".to_owned()
        } else {
            format!("help_{}", command.replace(' ', "_"))
        };
        insta::assert_snapshot!(name, text);
    }
}

#[tokio::test]
async fn config_set_help_names_every_option_it_cannot_store() {
    let text = Cli::new().run(&["config", "set", "--help"]).await.ok();
    // The help's words, whatever the line breaks.
    let words = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for key in ccflare_core::config::NOT_STORABLE {
        let named = key.replace('_', " ");
        assert!(
            words.contains(key) || words.contains(&named),
            "`config set --help` does not say that {key} cannot be stored:\n{text}"
        );
    }
}

/// Five accounts in every state, and requests over three days, three models and two accounts.
async fn seeded() -> Cli {
    let cli = Cli::new();
    for (tail, args) in [
        ("AAAA", vec!["--name", "work", "--priority", "1"]),
        ("BBBB", vec!["--name", "spare"]),
        ("CCCC", vec!["--name", "old"]),
        ("DDDD", vec!["--name", "dead"]),
        ("zzzz", vec![]),
    ] {
        let key = key(tail);
        let mut add = vec!["accounts", "add", key.as_str()];
        add.extend(args);
        cli.run(&add).await.ok();
    }
    cli.run(&["accounts", "pause", "old"]).await.ok();

    let work = (1, "work");
    let sonnet = "claude-sonnet-4-5";
    // In the order a server records them: when each request ends.
    let requests = vec![
        Request {
            status: 401,
            latency_ms: 90,
            input: 0,
            output: 0,
            cost: 0.0,
            error: Some(("authentication_error", "invalid x-api-key")),
            ..Request::ok(NOW - 2 * DAY, "claude-haiku-4-5", (4, "dead"))
        },
        Request {
            latency_ms: 8_000,
            input: 20_000,
            output: 4_000,
            cache_read: 100_000,
            cost: 1.23,
            ..Request::ok(NOW - DAY - 2 * HOUR, "claude-opus-4-1", work)
        },
        Request {
            status: 529,
            latency_ms: 300,
            input: 0,
            output: 0,
            cost: 0.0,
            error: Some(("overloaded_error", "Overloaded")),
            ..Request::ok(NOW - 3 * HOUR, sonnet, work)
        },
        Request {
            latency_ms: 400,
            input: 500,
            output: 100,
            cost: 0.0012,
            ..Request::ok(NOW - 30 * MIN, "claude-haiku-4-5", work)
        },
        Request::ok(NOW - 10 * MIN, sonnet, (2, "spare")),
        Request {
            status: 503,
            latency_ms: 2,
            input: 0,
            output: 0,
            cost: 0.0,
            account: None,
            error: Some((
                "overloaded_error",
                "no account can serve this request: every account is cooling down or paused",
            )),
            ..Request::ok(NOW - 5 * MIN, sonnet, work)
        },
        Request {
            latency_ms: 2_500,
            cache_read: 12_000,
            ..Request::ok(NOW - 2 * MIN, sonnet, work)
        },
    ];
    let states = [
        benched(2, AccountStatus::Active, Some(NOW + 250_000)),
        benched(4, AccountStatus::Invalid, None),
    ];
    record(&cli.db().await, &requests, &states).await;
    cli
}

#[tokio::test]
async fn accounts_list_is_the_seed_table() {
    let cli = seeded().await;
    let table = cli.run(&["accounts", "list"]).await.ok();
    assert_fits_80_columns(&table);
    insta::assert_snapshot!("accounts_list", table);

    let json: serde_json::Value =
        serde_json::from_str(&cli.run(&["accounts", "list", "--json"]).await.ok()).unwrap();
    insta::assert_snapshot!(
        "accounts_list_json",
        serde_json::to_string_pretty(&json).unwrap()
    );
}

#[tokio::test]
async fn no_full_key_is_ever_printed() {
    let cli = seeded().await;
    let mut everything = String::new();
    for args in [
        vec!["accounts", "list"],
        vec!["accounts", "list", "--json"],
        vec!["config", "show"],
        vec!["config", "show", "--json"],
        vec!["logs", "--json"],
        vec!["doctor", "--json"],
    ] {
        let output = cli.run(&args).await;
        everything.push_str(&output.stdout);
        everything.push_str(&output.stderr);
    }
    let added = cli.run(&["accounts", "add", &key("EEEE")]).await.ok();
    everything.push_str(&added);
    for tail in ["AAAA", "BBBB", "CCCC", "DDDD", "EEEE", "zzzz"] {
        assert!(!everything.contains(&key(tail)), "{tail} leaked");
    }
    assert!(!everything.contains("0123456789abcdefghij"), "{everything}");
    assert!(everything.contains("sk-ant-…EEEE"), "{added}");
}

#[tokio::test]
async fn account_changes_and_their_errors() {
    let cli = Cli::new();
    assert_eq!(
        cli.run(&["accounts", "list"]).await.ok(),
        "no accounts yet: add one with `ccflare-cli accounts add sk-ant-…`\n"
    );
    assert_eq!(cli.run(&["accounts", "list", "--json"]).await.ok(), "[]\n");

    let added = cli
        .run(&["accounts", "add", &key("wxyz"), "--priority", "-1"])
        .await
        .ok();
    assert_eq!(
        added,
        "added account key-wxyz (sk-ant-…wxyz); a running server picks this up within 2 seconds\n"
    );
    // Idempotent for scripts: the same key again changes nothing.
    let again = cli.run(&["accounts", "add", &key("wxyz")]).await.ok();
    assert!(
        again.contains("already stored as account key-wxyz"),
        "{again}"
    );

    let steps: &[(&[&str], &str)] = &[
        (
            &["accounts", "rename", "key-wxyz", "work"],
            "renamed account key-wxyz to work",
        ),
        (&["accounts", "pause", "work"], "paused account work"),
        (
            &["accounts", "pause", "work"],
            "account work is already paused",
        ),
        (&["accounts", "resume", "work"], "resumed account work"),
        (
            &["accounts", "resume", "work"],
            "account work is already active",
        ),
        (
            &["accounts", "remove", "work", "--yes"],
            "removed account work",
        ),
    ];
    for (args, expected) in steps {
        let out = cli.run(args).await.ok();
        assert!(out.starts_with(expected), "{args:?}: {out}");
    }
    assert_eq!(cli.run(&["accounts", "list", "--json"]).await.ok(), "[]\n");

    cli.run(&["accounts", "add", &key("aaaa"), "--name", "one"])
        .await
        .ok();
    cli.run(&["accounts", "add", &key("bbbb"), "--name", "two"])
        .await
        .ok();
    let errors: &[(&[&str], &str)] = &[
        (
            &["accounts", "add", "sk-proj-0123456789abcdefghij"],
            "ccflare-cli: error: not an Anthropic key: expected a value starting with `sk-ant-`",
        ),
        (
            &["accounts", "add", &key("cccc"), "--name", "one"],
            "ccflare-cli: error: an account named \"one\" already exists",
        ),
        (
            &["accounts", "add", &key("aaaa"), "--name", "other"],
            "ccflare-cli: error: this key is already stored as account \"one\"; to rename it: \
             ccflare-cli accounts rename one other",
        ),
        (
            &[
                "accounts",
                "add",
                &key("cccc"),
                "--name",
                "sk-ant-api03-oops",
            ],
            "ccflare-cli: error: invalid account name \"sk-ant-…oops\": it looks like a key or \
             token (names are shown in full everywhere)",
        ),
        (
            &[
                "accounts",
                "add",
                &key("dddd"),
                "--name",
                "3f9a0c7e1b2d4f6a8c0e2b4d6f8a0c1e3b5d7f9a",
            ],
            "ccflare-cli: error: invalid account name \"…7f9a\": it looks like a key or token \
             (names are shown in full everywhere)",
        ),
        (
            &["accounts", "pause", "nobody"],
            "ccflare-cli: error: no account named \"nobody\"",
        ),
        (
            &["accounts", "rename", "one", "two"],
            "ccflare-cli: error: an account named \"two\" already exists",
        ),
        (
            &["accounts", "rename", "nobody", "three"],
            "ccflare-cli: error: no account named \"nobody\"",
        ),
        (
            &["accounts", "remove", "one"],
            "ccflare-cli: error: refusing to remove account \"one\" without confirmation: \
             standard input is not a terminal; pass --yes",
        ),
        (
            &["accounts", "remove", "nobody", "--yes"],
            "ccflare-cli: error: no account named \"nobody\"",
        ),
    ];
    for (args, expected) in errors {
        assert_eq!(&cli.run(args).await.fails(), expected, "{args:?}");
    }
    // Nothing was removed without confirmation.
    assert!(cli.run(&["accounts", "list"]).await.ok().contains("one "));
}

#[tokio::test]
async fn accounts_are_found_by_their_key_and_a_key_is_never_echoed() {
    let cli = Cli::new();
    for (tail, name) in [("wxyz", "work"), ("vvvv", "other")] {
        cli.run(&["accounts", "add", &key(tail), "--name", name])
            .await
            .ok();
    }
    let work = key("wxyz");
    // As the tutorial does it: the account given by its full key.
    let steps: &[(&[&str], &str)] = &[
        (&["accounts", "pause", &work], "paused account work;"),
        (
            &["accounts", "pause", &work],
            "account work is already paused",
        ),
        (&["accounts", "resume", &work], "resumed account work;"),
        (
            &["accounts", "rename", &work, "job"],
            "renamed account work to job;",
        ),
        (
            &["accounts", "remove", &work, "--yes"],
            "removed account job;",
        ),
    ];
    let mut printed = String::new();
    for (args, expected) in steps {
        let out = cli.run(args).await.ok();
        assert!(out.starts_with(expected), "{args:?}: {out}");
        printed.push_str(&out);
    }
    let listed: serde_json::Value =
        serde_json::from_str(&cli.run(&["accounts", "list", "--json"]).await.ok()).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["other"],
        "only the account with that key was removed"
    );
    let paused = cli
        .run(&["accounts", "pause", &key("vvvv"), "--json"])
        .await
        .ok();
    let paused: serde_json::Value = serde_json::from_str(&paused).unwrap();
    assert_eq!(
        paused,
        serde_json::json!({"name": "other", "result": "paused"})
    );

    // Unknown keys, and a key where a new name goes: refused, with the key masked.
    let unknown = key("nope");
    let token = "Zx81kQpL0vN3mT7yR2wS9uB4cD6eF8gH1iJ5kL7m";
    let long_key = format!("sk-ant-api03-{}-wxyz", token.repeat(2));
    let no_such_key = "ccflare-cli: error: no account has the key sk-ant-…nope; \
                       `ccflare-cli accounts list` shows each account's name and masked key";
    let errors: &[(&[&str], &str)] = &[
        (&["accounts", "pause", &unknown], no_such_key),
        (&["accounts", "resume", &unknown], no_such_key),
        (&["accounts", "rename", &unknown, "x"], no_such_key),
        (&["accounts", "remove", &unknown, "--yes"], no_such_key),
        (&["accounts", "remove", &unknown], no_such_key),
        (
            &["accounts", "pause", token],
            "ccflare-cli: error: no account named \"…kL7m\"",
        ),
        (
            &["accounts", "reauth", &unknown],
            "ccflare-cli: error: no account named \"sk-ant-…nope\"",
        ),
        (
            &["accounts", "rename", "other", &long_key],
            "ccflare-cli: error: invalid account name \"sk-ant-…wxyz\": it looks like a key or \
             token (names are shown in full everywhere)",
        ),
        (
            &["accounts", "remove", &key("vvvv")],
            "ccflare-cli: error: refusing to remove account \"other\" without confirmation: \
             standard input is not a terminal; pass --yes",
        ),
    ];
    for (args, expected) in errors {
        let output = cli.run(args).await;
        printed.push_str(&output.stdout);
        printed.push_str(&output.stderr);
        assert_eq!(&output.fails(), expected, "{args:?}");
    }
    for secret in [&work, &key("vvvv"), &unknown, &long_key] {
        assert!(
            !printed.contains(secret.as_str()),
            "{secret} leaked:\n{printed}"
        );
    }
    assert!(!printed.contains("0123456789abcdefghij"), "{printed}");
    assert!(!printed.contains(&token[..20]), "{printed}");
}

#[tokio::test]
async fn a_key_can_come_from_standard_input() {
    let cli = Cli::new();
    let mut command = cli.command(&["accounts", "add", "-", "--name", "piped"]);
    command.stdin(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, format!("\n{}\n", key("pipe")).as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let output = tokio::time::timeout(ccflare_testkit::PROCESS_GUARD, child.wait_with_output())
        .await
        .expect("the CLI exits in time")
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.starts_with("added account piped (sk-ant-…pipe)"),
        "{stdout}"
    );

    // `-` finds an account by the key on standard input, for pause, rename and remove.
    let with_key_on_stdin = |args: &[&str]| {
        let mut command = cli.command(args);
        command.stdin(std::process::Stdio::piped());
        let mut child = command.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        async move {
            tokio::io::AsyncWriteExt::write_all(
                &mut stdin,
                format!("{}\n", key("pipe")).as_bytes(),
            )
            .await
            .unwrap();
            drop(stdin);
            let output =
                tokio::time::timeout(ccflare_testkit::PROCESS_GUARD, child.wait_with_output())
                    .await
                    .expect("the CLI exits in time")
                    .unwrap();
            let printed = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(!printed.contains(&key("pipe")[..20]), "{printed}");
            (output.status.code(), printed)
        }
    };
    let (code, printed) = with_key_on_stdin(&["accounts", "pause", "-"]).await;
    assert_eq!(code, Some(0), "{printed}");
    assert!(printed.contains("piped"), "{printed}");
    let (code, printed) = with_key_on_stdin(&["accounts", "rename", "-", "renamed"]).await;
    assert_eq!(code, Some(0), "{printed}");
    let (code, printed) = with_key_on_stdin(&["accounts", "remove", "-", "--yes"]).await;
    assert_eq!(code, Some(0), "{printed}");
    assert!(printed.contains("renamed"), "{printed}");
    let listed = cli.run(&["accounts", "list", "--json"]).await.ok();
    assert!(!listed.contains("renamed"), "{listed}");
}

#[tokio::test]
async fn stats_tables_per_day_hour_and_model() {
    let cli = seeded().await;
    for (name, args) in [
        ("stats_daily", vec!["stats", "daily"]),
        ("stats_hourly", vec!["stats", "hourly"]),
        ("stats_models", vec!["stats", "models"]),
    ] {
        let table = cli.run(&args).await.ok();
        assert_fits_80_columns(&table);
        insta::assert_snapshot!(name, table);
    }
    let json: serde_json::Value =
        serde_json::from_str(&cli.run(&["stats", "models", "--json"]).await.ok()).unwrap();
    insta::assert_snapshot!(
        "stats_models_json",
        serde_json::to_string_pretty(&json).unwrap()
    );
    assert_eq!(
        cli.run(&["stats", "daily", "--days", "0"]).await.code,
        Some(2),
        "clap rejects a zero window"
    );

    let empty = Cli::new();
    assert_eq!(
        empty.run(&["stats", "hourly", "--hours", "6"]).await.ok(),
        "no requests in the last 6 hours\n"
    );
}

/// Each row's key and request count, from `stats … --json` output.
fn rows_and_requests(json: &str) -> Vec<(String, i64)> {
    let json: serde_json::Value = serde_json::from_str(json).unwrap();
    json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_owned(),
                r["requests"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn days_and_times_follow_the_local_time_zone() {
    let cli = seeded().await;
    // Eight hours west (a POSIX zone, so no tz database is needed): the request at 07:00 UTC
    // today was at 23:00 yesterday there.
    let daily = |zone: &'static str, utc: bool| {
        let mut args = vec!["stats", "daily", "--json"];
        if utc {
            args.push("--utc");
        }
        let mut command = cli.command(&args);
        command.env("TZ", zone);
        async move { rows_and_requests(&common::output(command).await.ok()) }
    };
    let day = |d: &str, n: i64| (d.to_owned(), n);
    assert_eq!(
        daily("XST8", true).await,
        [
            day("2026-11-24", 1),
            day("2026-11-25", 1),
            day("2026-11-26", 5)
        ]
    );
    assert_eq!(
        daily("XST8", false).await,
        [
            day("2026-11-24", 1),
            day("2026-11-25", 2),
            day("2026-11-26", 4)
        ]
    );
    let mut command = cli.command(&["logs", "--last", "1"]);
    command.env("TZ", "XST8");
    let log = common::output(command).await.ok();
    assert!(log.contains("11-26 01:58:00"), "{log}");
}

#[tokio::test]
async fn in_a_zone_half_an_hour_off_utc_hours_start_at_the_half_hour() {
    // The rollups are kept per UTC hour, so in UTC+5:30 an hour's row runs from :30 to :30
    // and says so: the requests of 09:30 to 09:58 UTC are in the UTC hour from 09:00, which
    // is 14:30 to 15:30 there.
    let cli = seeded().await;
    let mut command = cli.command(&["stats", "hourly", "--hours", "3", "--json"]);
    command.env("TZ", "XST-5:30");
    assert_eq!(
        rows_and_requests(&common::output(command).await.ok()),
        [("2026-11-26 14:30".to_owned(), 4)]
    );
}

#[tokio::test]
async fn logs_with_filters() {
    let cli = seeded().await;
    for (name, args) in [
        ("logs", vec!["logs"]),
        ("logs_errors", vec!["logs", "--error-only"]),
        (
            "logs_model_account_since",
            vec![
                "logs",
                "--model",
                "claude-sonnet",
                "--account",
                "work",
                "--since",
                "4h",
            ],
        ),
        ("logs_last_2", vec!["logs", "--last", "2"]),
    ] {
        let table = cli.run(&args).await.ok();
        assert_fits_80_columns(&table);
        insta::assert_snapshot!(name, table);
    }
    let json: serde_json::Value =
        serde_json::from_str(&cli.run(&["logs", "--last", "1", "--json"]).await.ok()).unwrap();
    insta::assert_snapshot!("logs_json", serde_json::to_string_pretty(&json).unwrap());
    assert_eq!(
        cli.run(&["logs", "--account", "nobody"]).await.ok(),
        "no requests match\n"
    );
    let err = cli.run(&["logs", "--since", "yesterday"]).await;
    assert_eq!(err.code, Some(2));
    assert!(
        err.stderr.contains("such as 30s, 15m, 1h or 7d"),
        "{}",
        err.stderr
    );
}

#[tokio::test]
async fn config_show_names_every_source_and_masks_keys() {
    let cli = Cli::new();
    std::fs::write(
        cli.path().join("ccflare.toml"),
        "port = 9000\nlb_strategy = \"priority\"\nidle_timeout = 120\n",
    )
    .unwrap();
    cli.run(&["config", "set", "lb_strategy", "Round_Robin"])
        .await
        .ok();
    let mut command = cli.command(&["config", "show"]);
    command
        .env("CCFLARE_CONFIG", "ccflare.toml")
        .env("SESSION_TIMEOUT", "600")
        .env(
            "CLAUDE_API_KEYS",
            format!("{},{}", key("k001"), key("k002")),
        );
    let shown = common::output(command).await.ok();
    assert_fits_80_columns(&shown);
    for option in ccflare_core::config::OPTIONS {
        assert_eq!(
            shown
                .lines()
                .filter(|l| l.starts_with(&format!("{} ", option.key)))
                .count(),
            1,
            "{} is shown once:\n{shown}",
            option.key
        );
    }
    // Options come and go with other work: the snapshot keeps the header and the rows whose
    // source is not the default (a wrapped value's further lines go with their row), with the
    // column padding, which the longest option name sets, reduced to two spaces.
    let mut set = String::new();
    let mut keep = true;
    for line in shown.lines() {
        if !line.starts_with(' ') {
            keep = !line.ends_with(" default");
        }
        if keep {
            let cells: Vec<&str> = line
                .split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect();
            set.push_str(&cells.join("  "));
            set.push('\n');
        }
    }
    insta::assert_snapshot!("config_show", set);

    // A bad value is named, and the rest is still shown.
    let mut command = cli.command(&["config", "show"]);
    command.env("PORT", "eighty");
    let output = common::output(command).await;
    let port_row: Vec<&str> = output
        .stdout
        .lines()
        .find(|l| l.starts_with("port "))
        .expect("a port row")
        .split_whitespace()
        .collect();
    assert_eq!(port_row, ["port", "eighty", "env"], "{}", output.stdout);
    assert_eq!(
        output.fails(),
        "ccflare-cli: error: the configuration is not valid: invalid value \"eighty\" for PORT: \
         expected a port number from 0 to 65535"
    );
}

#[tokio::test]
async fn config_set_validates_and_says_when_it_applies() {
    let cli = Cli::new();
    assert_eq!(
        cli.run(&["config", "set", "strategy", "least_requests"])
            .await
            .ok(),
        "stored lb_strategy = least-requests; a running server applies it within about a second\n"
    );
    assert_eq!(
        cli.run(&["config", "set", "CCFLARE_MAX_ATTEMPTS", "3"])
            .await
            .ok(),
        "stored max_attempts = 3; a running server applies it at its next start\n"
    );
    let mut command = cli.command(&["config", "set", "session_timeout", "60"]);
    command.env("SESSION_TIMEOUT", "30");
    let out = common::output(command).await.ok();
    assert!(
        out.ends_with(
            "note: SESSION_TIMEOUT is set in this environment (or .env), which outranks the \
             database\n"
        ),
        "{out}"
    );
    let errors: &[(&[&str], &str)] = &[
        (
            &["config", "set", "lb_strategy", "random"],
            "ccflare-cli: error: invalid value \"random\" for LB_STRATEGY: expected one of \
             session, round-robin, least-requests, priority, headroom",
        ),
        (
            &["config", "set", "database_url", "x.db"],
            "ccflare-cli: error: database_url cannot be stored in the database: it is read \
             before the database is opened; set DATABASE_URL or the config file instead",
        ),
        (
            &["config", "set", "api_keys", "not-a-key-oops-secret"],
            "ccflare-cli: error: invalid value \"<hidden>\" for CLAUDE_API_KEYS: expected not \
             an Anthropic key: expected a value starting with `sk-ant-`",
        ),
    ];
    for (args, expected) in errors {
        assert_eq!(&cli.run(args).await.fails(), expected, "{args:?}");
    }
    let unknown = cli.run(&["config", "set", "prot", "1"]).await.fails();
    assert!(
        unknown
            .starts_with("ccflare-cli: error: unknown option \"prot\": expected one of port, host"),
        "{unknown}"
    );

    let db = cli.db().await;
    let stored = ccflare_storage::settings::all(&db).await.unwrap();
    assert_eq!(stored["lb_strategy"], "least-requests");
    assert_eq!(stored["max_attempts"], "3");
    assert!(!stored.contains_key("api_keys"));

    assert!(
        cli.run(&["config", "unset", "max_attempts"])
            .await
            .ok()
            .starts_with("removed the stored max_attempts")
    );
    assert_eq!(
        cli.run(&["config", "unset", "max_attempts"]).await.ok(),
        "no stored value for max_attempts; nothing changed\n"
    );
}

#[tokio::test]
async fn doctor_checks_everything_without_spending_quota() {
    let upstream = ccflare_mock::MockUpstream::start().await.unwrap();
    let cli = seeded().await;
    // A port nothing listens on: taken from the system, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let mut command = cli.command(&["doctor"]);
    command
        .env("CCFLARE_UPSTREAM_URL", upstream.url())
        .env("PORT", &port);
    let output = common::output(command).await;
    assert_eq!(output.code, Some(0), "{}{}", output.stdout, output.stderr);
    assert_fits_80_columns(&output.stdout);
    // The mock's and the free port's numbers change per run, the schema version with every
    // migration: neither is what this snapshot is about.
    let version = output
        .stdout
        .split("schema version ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .expect("the migrations line names the version")
        .to_owned();
    let text = output
        .stdout
        .replace(&upstream.url(), "http://[mock]")
        .replace(&format!(":{port} "), ":[port] ")
        .replace(&format!("schema version {version},"), "schema version [n],");
    insta::assert_snapshot!("doctor", text);
    // The upstream saw one GET of /v1/models, without any key.
    let received = upstream.requests();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(
        (received[0].method.as_str(), received[0].path.as_str()),
        ("GET", "/v1/models")
    );
    assert_eq!(received[0].credential, None);
    assert_eq!(received[0].header("x-api-key"), None);

    // No accounts and an upstream nobody answers for: two failures, a non-zero exit.
    let empty = Cli::new();
    let mut command = empty.command(&["doctor", "--json"]);
    command
        .env("CCFLARE_UPSTREAM_URL", format!("http://127.0.0.1:{port}"))
        .env("PORT", &port);
    let output = common::output(command).await;
    assert_eq!(output.code, Some(1));
    let report: serde_json::Value = serde_json::from_str(&output.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let failed: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["accounts", "upstream"]);
}

#[tokio::test]
async fn an_unreadable_database_is_one_clear_line() {
    let cli = Cli::new();
    std::fs::write(cli.path().join("ccflare.db"), "not a database ".repeat(100)).unwrap();
    assert_eq!(
        cli.run(&["accounts", "list"]).await.fails(),
        "ccflare-cli: error: cannot open database at ./ccflare.db: error returned from \
         database: (code: 26) file is not a database"
    );
    let err = cli
        .run(&["stats", "daily", "--database-url", "/proc/nope/x.db"])
        .await
        .fails();
    assert!(
        err.starts_with("ccflare-cli: error: cannot open database at /proc/nope/x.db"),
        "{err}"
    );
    let err = cli
        .run(&["logs", "--database-url", "postgres://db/ccflare"])
        .await
        .fails();
    assert!(err.contains("unsupported DATABASE_URL"), "{err}");
}

#[tokio::test]
async fn a_locked_database_is_one_clear_line_and_reads_still_work() {
    let cli = Cli::new();
    cli.run(&["accounts", "add", &key("lock")]).await.ok();
    let db = cli.db().await;
    // Another process holding the write lock (a long migration, a stuck writer).
    let tx = db.begin_write().await.unwrap();
    assert!(
        cli.run(&["accounts", "list"])
            .await
            .ok()
            .contains("key-lock")
    );
    let err = cli.run(&["accounts", "pause", "key-lock"]).await.fails();
    assert!(
        err.starts_with("ccflare-cli: error: the database is locked by another process"),
        "{err}"
    );
    drop(tx);
}

#[tokio::test]
async fn client_keys_are_printed_once_and_managed_by_name() {
    let cli = Cli::new();
    let created = cli
        .run(&[
            "keys",
            "create",
            "alice",
            "--budget-usd",
            "20",
            "--period",
            "week",
            "--rpm",
            "60",
        ])
        .await
        .ok();
    let key = created
        .split_whitespace()
        .find(|word| word.starts_with("ccf_") && word.len() == 47)
        .unwrap_or_else(|| panic!("no key in {created}"))
        .to_owned();
    assert!(created.contains("$20.00 per week, 60/min"), "{created}");
    let shown = |text: &str| text.contains(&key[4..]);
    assert!(
        cli.run(&["keys", "create", "alice"])
            .await
            .fails()
            .contains("already exists")
    );
    let refused = cli.run(&["keys", "create", &key]).await.fails();
    assert!(!shown(&refused), "{refused}");

    // A request made with it, as the server records it.
    let db = cli.db().await;
    let stored = ccflare_storage::keys::find(&db, "alice").await.unwrap();
    let writer = ccflare_storage::Writer::spawn(db.clone());
    writer.handle().record(ccflare_core::record::RequestRecord {
        id: "ccf_test_key".into(),
        started_at: NOW - 60_000,
        method: "POST".into(),
        path: "/v1/messages".into(),
        status: 200,
        success: true,
        attempts: 1,
        cost_usd: 0.5,
        client_key: Some(stored.id.to_string()),
        ..Default::default()
    });
    writer.handle().record(ccflare_core::record::RequestRecord {
        id: "ccf_test_nokey".into(),
        started_at: NOW - 30_000,
        method: "POST".into(),
        path: "/v1/messages".into(),
        status: 200,
        success: true,
        attempts: 1,
        latency_ms: 700,
        ..Default::default()
    });
    writer.close().await;
    let total = |json: String| {
        let table: serde_json::Value = serde_json::from_str(&json).unwrap();
        table["total"]["requests"].as_i64().unwrap()
    };
    let all = cli.run(&["stats", "daily", "--json"]).await.ok();
    assert_eq!(total(all), 2);
    let alice = cli
        .run(&["stats", "daily", "--key", "alice", "--json"])
        .await
        .ok();
    assert_eq!(total(alice), 1);
    let models = cli
        .run(&["stats", "models", "--key", "alice", "--json"])
        .await
        .ok();
    assert_eq!(total(models), 1);

    let listed = cli.run(&["keys", "list"]).await.ok();
    assert!(!shown(&listed), "{listed}");
    assert!(
        listed.contains("alice") && listed.contains(&stored.prefix),
        "{listed}"
    );
    assert!(listed.contains("$0.5"), "this week's use: {listed}");
    let json = cli.run(&["keys", "list", "--json"]).await.ok();
    assert!(!shown(&json), "{json}");
    let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(rows[0]["period_cost_usd"], 0.5);
    assert_eq!(rows[0]["budget_usd"], 20.0);

    let logs = cli.run(&["logs", "--key", "alice", "--json"]).await.ok();
    let logged: serde_json::Value = serde_json::from_str(&logs).unwrap();
    assert_eq!(logged.as_array().unwrap().len(), 1, "{logs}");
    assert!(
        cli.run(&["logs", "--key", "nobody"])
            .await
            .fails()
            .contains("no client key")
    );

    cli.run(&["keys", "disable", "alice"]).await.ok();
    let listed = cli.run(&["keys", "list"]).await.ok();
    assert!(listed.contains("disabled"), "{listed}");
    cli.run(&["keys", "enable", "alice"]).await.ok();
    cli.run(&["keys", "rename", "alice", "alice2"]).await.ok();
    let limits = cli
        .run(&[
            "keys",
            "set-limits",
            "alice2",
            "--rpm",
            "0",
            "--expires",
            "30d",
        ])
        .await
        .ok();
    assert!(limits.contains("$20.00 per week, expires"), "{limits}");
    let after = ccflare_storage::keys::find(&db, "alice2").await.unwrap();
    assert_eq!((after.limits.rpm, after.id), (None, stored.id));
    assert!(
        cli.run(&["keys", "set-limits", "alice2"])
            .await
            .fails()
            .contains("nothing to change")
    );
    cli.run(&["keys", "delete", "alice2"]).await.ok();
    assert!(
        cli.run(&["keys", "delete", "alice2"])
            .await
            .fails()
            .contains("no client key")
    );
    let empty = cli.run(&["keys", "list"]).await.ok();
    assert!(empty.contains("no client keys yet"), "{empty}");
}

#[tokio::test]
async fn logs_explain_prints_why_each_request_went_where_it_went() {
    let cli = Cli::new();
    let route = "max20: placed (most tokens left per session) [812.0k left of 1.1M; 9 points \
                 over 41 s]; skipped pro: no room (3.1k left < 12.9k needed), max5: rate \
                 limited until 2026-11-26T15:00:00.000Z";
    let writer = ccflare_storage::Writer::spawn(cli.db().await);
    for (id, route) in [("ccf_route_1", None), ("ccf_route_2", Some(route))] {
        writer.handle().record(ccflare_core::record::RequestRecord {
            id: id.to_owned(),
            started_at: NOW,
            method: "POST".into(),
            path: "/v1/messages".into(),
            model: Some("claude-sonnet-4-5".into()),
            account_name: Some("max20".into()),
            status: 200,
            success: true,
            route: route.map(Into::into),
            ..Default::default()
        });
    }
    writer.close().await;
    let shown = cli.run(&["logs", "--explain"]).await.ok();
    assert_fits_80_columns(&shown);
    assert!(shown.contains("→ (not recorded)"), "{shown}");
    assert!(
        shown.contains("→ max20: placed (most tokens left per session)"),
        "{shown}"
    );
    // Wrapped, never cut: the last reason is there.
    assert!(shown.contains("2026-11-26T15:00:00.000Z"), "{shown}");
    let plain = cli.run(&["logs"]).await.ok();
    assert!(!plain.contains("→"), "{plain}");
    let json = cli.run(&["logs", "--json"]).await.ok();
    assert!(json.contains("\"route\": \"max20: placed"), "{json}");
}

#[tokio::test]
async fn stats_say_how_much_cache_the_moves_re_created() {
    let cli = Cli::new();
    let writer = ccflare_storage::Writer::spawn(cli.db().await);
    // Three turns that wrote 12,000 cache tokens each; two of them had moved.
    for (n, moved) in [false, true, true].into_iter().enumerate() {
        writer.handle().record(ccflare_core::record::RequestRecord {
            id: format!("ccf_move_{n}"),
            started_at: NOW - HOUR,
            method: "POST".into(),
            path: "/v1/messages".into(),
            model: Some("claude-sonnet-4-5".into()),
            status: 200,
            success: true,
            usage: ccflare_core::usage::Usage {
                input_tokens: 100,
                cache_creation_input_tokens: 12_000,
                ..Default::default()
            },
            moved,
            ..Default::default()
        });
    }
    writer.close().await;
    let table = cli.run(&["stats", "daily"]).await.ok();
    assert_fits_80_columns(&table);
    assert!(
        table.ends_with("2 sessions moved to another account: 24k cache tokens re-created\n"),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&cli.run(&["stats", "daily", "--json"]).await.ok()).unwrap();
    assert_eq!(json["total"]["session_moves"], 2);
    assert_eq!(json["total"]["moved_cache_write_tokens"], 24_000);
    assert_eq!(json["total"]["cache_write_tokens"], 36_000);
}

#[tokio::test]
async fn replay_compares_the_strategies_on_the_recorded_traffic_and_repeats_itself() {
    let cli = Cli::new();
    for (tail, name) in [("AAAA", "small"), ("BBBB", "big")] {
        cli.run(&["accounts", "add", key(tail).as_str(), "--name", name])
            .await
            .ok();
    }
    // Eight conversations of ten growing turns, seven seconds apart, two hours ago.
    let writer = ccflare_storage::Writer::spawn(cli.db().await);
    for turn in 0..10u64 {
        for conversation in 0..8u64 {
            let n = turn * 8 + conversation;
            writer.handle().record(ccflare_core::record::RequestRecord {
                id: format!("ccf_replay_{n:03}"),
                started_at: NOW - 2 * HOUR + n as i64 * 7_000,
                method: "POST".into(),
                path: "/v1/messages".into(),
                model: Some("claude-sonnet-4-5".into()),
                account_id: Some(ccflare_core::AccountId(1 + (conversation % 2) as i64)),
                account_name: Some(
                    if conversation % 2 == 0 {
                        "small"
                    } else {
                        "big"
                    }
                    .into(),
                ),
                status: 200,
                success: true,
                session_key: Some(format!("c{conversation}")),
                usage: ccflare_core::usage::Usage {
                    input_tokens: 10,
                    cache_read_input_tokens: 5_000 + turn * 1_500,
                    cache_creation_input_tokens: 1_500,
                    output_tokens: 400,
                    ..Default::default()
                },
                ..Default::default()
            });
        }
    }
    writer.close().await;
    let args = [
        "replay",
        "--since",
        "1d",
        "--window",
        "small=60000",
        "--window",
        "big=400000",
    ];
    let table = cli.run(&args).await.ok();
    assert_fits_80_columns(&table);
    assert!(
        table.starts_with("80 requests; five-hour windows: small 60k, big 400k"),
        "{table}"
    );
    for strategy in [
        "session",
        "round-robin",
        "least-requests",
        "priority",
        "headroom",
    ] {
        assert!(table.contains(&format!("\n{strategy} ")), "{table}");
    }
    // Deterministic: the same rows give the same table.
    assert_eq!(cli.run(&args).await.ok(), table);
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let json: serde_json::Value = serde_json::from_str(&cli.run(&json_args).await.ok()).unwrap();
    let of = |name: &str| {
        json["strategies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["strategy"] == name)
            .unwrap()
            .clone()
    };
    assert!(
        of("session")["rejected_windows"].as_u64().unwrap() > 0,
        "{json}"
    );
    assert_eq!(of("headroom")["rejected_windows"], 0, "{json}");
    let err = cli.run(&["replay", "--strategies", "random"]).await;
    assert!(err.stderr.contains("unknown strategy"), "{}", err.stderr);
}
