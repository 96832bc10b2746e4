//! A request whose model name, path and error message carry escape sequences (a client chose
//! them) is drawn inert in the Requests tab and its details: no sequence reaches the terminal,
//! and none of its text shows (issue 12, risk 5).

mod common;

use ccflare_core::record::RequestRecord;
use ccflare_tui::fake::NOW;
use ccflare_tui::{Event, FakeSource, FeedItem, Theme};
use common::{code, key, opened, press, render};
use crossterm::event::KeyCode;
use std::sync::Arc;

/// Retitles the terminal window, then clears the screen.
const EVIL_MODEL: &str = "claude\x1b]0;pwned\x07\x1b[2J-x";

fn assert_inert(screen: &str) {
    assert!(
        !screen.chars().any(|c| c.is_control() && c != '\n'),
        "{screen:?}"
    );
    for shown in ["pwned", "]0;", "[2J", "cGF5bG9hZA", "[31m"] {
        assert!(!screen.contains(shown), "{shown:?} is shown:\n{screen}");
    }
}

#[tokio::test]
async fn escape_sequences_in_a_request_are_drawn_inert() {
    let fake = FakeSource::seeded();
    let mut app = opened(&fake).await;
    press(&mut app, &fake, key('3')).await;
    let record = RequestRecord {
        id: "ccf_evil_0001".into(),
        started_at: NOW - 1_000,
        method: "POST".into(),
        path: "/v1/messages\x1b[2J".into(),
        model: Some(EVIL_MODEL.into()),
        account_name: Some("work".into()),
        status: 400,
        success: false,
        error_type: Some("invalid_request_error".into()),
        error_message: Some("bad\x1b]52;c;cGF5bG9hZA==\x07 request\x1b[31m".into()),
        attempts: 1,
        latency_ms: 120,
        ..RequestRecord::default()
    };
    app.update(Event::Request(FeedItem::Item(Arc::new(record))));
    let table = render(&app, 120, 40, Theme::COLOR);
    assert_inert(&table);
    assert!(table.contains("claude-x"), "{table}");
    press(&mut app, &fake, code(KeyCode::Enter)).await;
    let details = render(&app, 120, 40, Theme::COLOR);
    assert_inert(&details);
    assert!(details.contains("bad request"), "{details}");
    assert!(details.contains("/v1/messages"), "{details}");
}
