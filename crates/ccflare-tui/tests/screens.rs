//! Every tab, dialog and overlay drawn on a `TestBackend` at 80×24 and 120×40 from the seeded
//! [`FakeSource`] (its clock stands still, so no text depends on the wall clock), compared with
//! the insta snapshots in `tests/snapshots/`. Review a changed snapshot like code.

mod common;

use ccflare_core::record::{AttemptFailure, RequestRecord};
use ccflare_core::usage::Usage;
use ccflare_storage::WriterHealth;
use ccflare_tui::app::Modal;
use ccflare_tui::fake::NOW;
use ccflare_tui::{App, DatabaseHealth, Event, FakeSource, FeedItem, Source, Theme};
use common::{code, key, opened, press, render, type_text};
use crossterm::event::KeyCode;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::style::Color;
use std::sync::Arc;

const SIZES: [(u16, u16); 2] = [(80, 24), (120, 40)];

fn snapshot(name: &str, app: &App) {
    for (width, height) in SIZES {
        let text = render(app, width, height, Theme::COLOR);
        insta::assert_snapshot!(format!("{name}_{width}x{height}"), text);
    }
}

/// A request that failed over once and was then served, with cache use.
fn failed_over() -> RequestRecord {
    RequestRecord {
        id: "ccf_live_0001".into(),
        started_at: NOW - 2_000,
        method: "POST".into(),
        path: "/v1/messages".into(),
        model: Some("claude-sonnet-4-5".into()),
        account_name: Some("work".into()),
        status: 200,
        success: true,
        attempts: 2,
        attempt_failures: vec![AttemptFailure {
            account: "max-2".into(),
            status: Some(429),
            reason: "rate_limited".into(),
        }],
        latency_ms: 1_840,
        ttfb_ms: Some(420),
        streamed: true,
        usage: Usage {
            input_tokens: 1_200,
            output_tokens: 340,
            cache_read_input_tokens: 18_000,
            cache_creation_input_tokens: 2_000,
            cache_write_5m: 2_000,
            ..Usage::default()
        },
        cost_usd: 0.0213,
        output_tokens_per_second: Some(239.4),
        session_key: Some("session-live".into()),
        upstream_request_id: Some("req_011CVmock0001".into()),
        message_id: Some("msg_01XFDUDYJgAACzvnptvVoYEL".into()),
        route: Some(
            "work: priority; skipped max-2: already tried, max-1: rate limited until \
             2026-12-06T10:00:00.000Z"
                .into(),
        ),
        ..RequestRecord::default()
    }
}

async fn at_tab(fake: &FakeSource, tab: char) -> App {
    let mut app = opened(fake).await;
    press(&mut app, fake, key(tab)).await;
    app
}

#[tokio::test]
async fn overview() {
    snapshot("overview", &at_tab(&FakeSource::seeded(), '1').await);
}

#[tokio::test]
async fn overview_when_the_database_cannot_be_written() {
    let fake = FakeSource::seeded();
    fake.set_health(DatabaseHealth {
        writer: WriterHealth {
            failing: Some("disk I/O error".into()),
            attempts: 3,
            ..WriterHealth::default()
        },
        waiting_records: 1_234,
        ..DatabaseHealth::default()
    });
    let app = at_tab(&fake, '1').await;
    let text = render(&app, 80, 24, Theme::COLOR);
    insta::assert_snapshot!("overview_database_failing_80x24", text);
}

#[tokio::test]
async fn accounts() {
    snapshot("accounts", &at_tab(&FakeSource::seeded(), '2').await);
}

#[tokio::test]
async fn requests() {
    snapshot("requests", &at_tab(&FakeSource::seeded(), '3').await);
}

#[tokio::test]
async fn request_details() {
    let fake = FakeSource::seeded();
    let mut app = at_tab(&fake, '3').await;
    app.update(Event::Request(FeedItem::Item(Arc::new(failed_over()))));
    press(&mut app, &fake, code(KeyCode::Enter)).await;
    snapshot("request_details", &app);
}

#[tokio::test]
async fn analytics() {
    snapshot("analytics", &at_tab(&FakeSource::seeded(), '4').await);
}

#[tokio::test]
async fn analytics_last_hour() {
    let fake = FakeSource::seeded();
    let mut app = at_tab(&fake, '4').await;
    press(&mut app, &fake, key('h')).await;
    press(&mut app, &fake, key('h')).await;
    snapshot("analytics_1h", &app);
}

#[tokio::test]
async fn logs() {
    snapshot("logs", &at_tab(&FakeSource::seeded(), '5').await);
}

#[tokio::test]
async fn settings() {
    snapshot("settings", &at_tab(&FakeSource::seeded(), '6').await);
}

#[tokio::test]
async fn help() {
    let fake = FakeSource::seeded();
    let mut app = at_tab(&fake, '2').await;
    press(&mut app, &fake, key('?')).await;
    snapshot("help_accounts", &app);
}

#[tokio::test]
async fn dialogs() {
    let fake = FakeSource::seeded();
    let mut app = at_tab(&fake, '2').await;
    press(&mut app, &fake, key('a')).await;
    app.update(Event::Paste("sk-ant-api03-notshown-notshown-1234".into()));
    snapshot("dialog_add_key", &app);

    press(&mut app, &fake, code(KeyCode::Esc)).await;
    press(&mut app, &fake, key('o')).await;
    type_text(&mut app, &fake, "max-3").await;
    press(&mut app, &fake, code(KeyCode::Enter)).await;
    app.update(Event::Paste("wrong#wrong".into()));
    press(&mut app, &fake, code(KeyCode::Enter)).await;
    snapshot("dialog_oauth_code", &app);

    press(&mut app, &fake, code(KeyCode::Esc)).await;
    press(&mut app, &fake, key('d')).await;
    type_text(&mut app, &fake, "wor").await;
    press(&mut app, &fake, code(KeyCode::Enter)).await;
    snapshot("dialog_remove", &app);

    press(&mut app, &fake, code(KeyCode::Esc)).await;
    press(&mut app, &fake, key('6')).await;
    press(&mut app, &fake, code(KeyCode::Enter)).await;
    assert!(matches!(app.modal, Some(Modal::Picker(_))));
    snapshot("picker_strategy", &app);
}

#[tokio::test]
async fn an_empty_server() {
    let fake = FakeSource::empty();
    for tab in ['1', '2', '3'] {
        let app = at_tab(&fake, tab).await;
        let text = render(&app, 80, 24, Theme::COLOR);
        insta::assert_snapshot!(format!("empty_{tab}_80x24"), text);
    }
}

#[tokio::test]
async fn a_small_terminal_gets_one_line() {
    let app = opened(&FakeSource::seeded()).await;
    let text = render(&app, 59, 16, Theme::COLOR);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "ccflare needs at least 60×16; this terminal is 59×16"
    );
    assert!(lines[1..].iter().all(|l| l.is_empty()), "{text}");
}

/// Every screen at every size from tiny to large draws without a panic.
#[tokio::test]
async fn every_screen_draws_at_any_size() {
    let fake = FakeSource::seeded();
    let mut screens = Vec::new();
    for tab in '1'..='6' {
        screens.push(at_tab(&fake, tab).await);
    }
    let mut app = at_tab(&fake, '3').await;
    press(&mut app, &fake, code(KeyCode::Enter)).await;
    screens.push(app.clone());
    press(&mut app, &fake, key('?')).await;
    screens.push(app);
    let mut app = at_tab(&fake, '2').await;
    press(&mut app, &fake, key('o')).await;
    type_text(&mut app, &fake, "x").await;
    press(&mut app, &fake, code(KeyCode::Enter)).await;
    screens.push(app);
    let sizes = [
        (0, 0),
        (1, 1),
        (10, 5),
        (59, 15),
        (60, 16),
        (61, 17),
        (79, 23),
        (80, 24),
        (200, 16),
        (60, 60),
        (133, 41),
        (200, 60),
    ];
    for app in &screens {
        for (width, height) in sizes {
            render(app, width, height, Theme::COLOR);
        }
    }
}

/// `NO_COLOR`: no cell has a colour, and what colour would tell is still in the text.
#[tokio::test]
async fn monochrome_has_no_colour_and_says_everything_in_words() {
    let fake = FakeSource::seeded();
    for tab in '1'..='6' {
        let app = at_tab(&fake, tab).await;
        let mut terminal = Terminal::new(TestBackend::new(120, 40)).unwrap();
        terminal
            .draw(|frame| ccflare_tui::draw(frame, &app, Theme::MONOCHROME))
            .unwrap();
        let buffer = terminal.backend().buffer();
        for cell in &buffer.content {
            assert_eq!(
                (cell.fg, cell.bg),
                (Color::Reset, Color::Reset),
                "tab {tab}: a coloured cell {:?}",
                cell.symbol()
            );
        }
        // Same text as in colour.
        assert_eq!(
            common::text_of(buffer),
            render(&app, 120, 40, Theme::COLOR),
            "tab {tab}"
        );
    }
    let accounts = render(&at_tab(&fake, '2').await, 120, 40, Theme::MONOCHROME);
    for state in ["active", "limited 4m 10s", "paused"] {
        assert!(accounts.contains(state), "{state} missing:\n{accounts}");
    }
}

#[tokio::test]
async fn countdowns_follow_the_source_clock() {
    let fake = FakeSource::seeded();
    let mut app = at_tab(&fake, '2').await;
    assert!(render(&app, 80, 24, Theme::COLOR).contains("limited 4m 10s"));
    fake.advance(70_000);
    app.update(Event::Tick {
        now: fake.now(),
        health: fake.health(),
        settings: fake.settings(),
    });
    assert!(render(&app, 80, 24, Theme::COLOR).contains("limited 3m 00s"));
}
