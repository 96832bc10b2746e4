//! Text that clients and the upstream chose — a model name, an error message, a path — reaches
//! the operator's terminal through `logs` and `stats`: an escape sequence in it must print
//! inert, never retitle the window or clear the screen (issue 12, risk 5).

mod common;

use common::{Cli, MIN, NOW, Request, key, record};

/// Retitles the terminal window, then clears the screen.
const EVIL_MODEL: &str = "claude\x1b]0;pwned\x07\x1b[2J-x";
const EVIL_MESSAGE: &str = "bad\x1b]52;c;cGF5bG9hZA==\x07 request\x1b[31m";

fn assert_inert(output: &str) {
    assert!(
        !output.chars().any(|c| c.is_control() && c != '\n'),
        "a control character reached the terminal: {output:?}"
    );
    assert!(
        !output.contains("pwned") && !output.contains("cGF5bG9hZA"),
        "an escape sequence's text was shown: {output}"
    );
}

#[tokio::test]
async fn escape_sequences_from_clients_print_inert() {
    let cli = Cli::new();
    cli.run(&["accounts", "add", &key("AAAA"), "--name", "work"])
        .await
        .ok();
    let requests = [
        Request::ok(NOW - 10 * MIN, EVIL_MODEL, (1, "work")),
        Request {
            status: 400,
            error: Some(("invalid_request_error", EVIL_MESSAGE)),
            ..Request::ok(NOW - 5 * MIN, EVIL_MODEL, (1, "work"))
        },
    ];
    record(&cli.db().await, &requests, &[]).await;

    let logs = cli.run(&["logs"]).await.ok();
    assert_inert(&logs);
    assert!(logs.contains("claude-x"), "{logs}");
    assert!(
        logs.contains("invalid_request_error: bad request"),
        "{logs}"
    );
    let stats = cli.run(&["stats", "models"]).await.ok();
    assert_inert(&stats);
    assert!(stats.contains("claude-x"), "{stats}");
    // JSON is for programs: it carries the text as recorded, escaped by JSON itself.
    let json = cli.run(&["logs", "--json"]).await.ok();
    assert!(
        !json.contains('\x1b') && json.contains("\\u001b]0;pwned"),
        "{json}"
    );
}
