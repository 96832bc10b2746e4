//! Key → action → state: what each key does to the UI's state and which operations it runs on
//! the source, with the [`FakeSource`] standing in for the server. Also checks that
//! `docs/tui.md` lists the keymap as it is.

mod common;

use ccflare_analytics::Range;
use ccflare_core::AccountStatus;
use ccflare_core::config::Strategy;
use ccflare_core::record::RequestRecord;
use ccflare_tui::app::{
    Change, Command, DialogKind, LevelFilter, Modal, NOTICE_MS, REQUEST_ROWS, Tab,
};
use ccflare_tui::fake::NOW;
use ccflare_tui::source::{SESSION_TIMEOUT_KEY, SettingChange};
use ccflare_tui::{Event, FakeSource, FeedItem, Source, Theme, keymap};
use common::{code, ctrl, key, opened, press, render, type_text};
use crossterm::event::KeyCode;
use std::sync::Arc;

fn dialog(app: &ccflare_tui::App) -> &ccflare_tui::app::Dialog {
    match &app.modal {
        Some(Modal::Dialog(dialog)) => dialog,
        other => panic!("expected a dialog, found {other:?}"),
    }
}

fn finished(id: &str, account: &str, status: u16) -> Arc<RequestRecord> {
    Arc::new(RequestRecord {
        id: id.to_owned(),
        started_at: NOW,
        method: "POST".into(),
        path: "/v1/messages".into(),
        model: Some("claude-haiku-4-5".into()),
        account_name: Some(account.into()),
        status,
        success: status == 200,
        attempts: 1,
        latency_ms: 100,
        ..RequestRecord::default()
    })
}

#[tokio::test]
async fn number_keys_and_tab_switch_tabs() {
    let fake = FakeSource::seeded();
    let mut app = opened(&fake).await;
    assert_eq!(app.tab, Tab::Overview);
    for (c, tab) in ('1'..='6').zip(Tab::ALL) {
        press(&mut app, &fake, key(c)).await;
        assert_eq!(app.tab, tab);
    }
    press(&mut app, &fake, code(KeyCode::Tab)).await;
    assert_eq!(app.tab, Tab::Overview, "Tab wraps around");
    press(&mut app, &fake, code(KeyCode::BackTab)).await;
    assert_eq!(app.tab, Tab::Settings, "Shift-Tab goes back");
}

#[tokio::test]
async fn q_quits_except_where_it_is_typed_or_closes_the_help() {
    let fake = FakeSource::seeded();
    let mut app = opened(&fake).await;
    press(&mut app, &fake, key('?')).await;
    assert!(app.help);
    assert!(press(&mut app, &fake, key('q')).await.is_empty());
    assert!(!app.help, "q closes the help");

    press(&mut app, &fake, key('2')).await;
    press(&mut app, &fake, key('r')).await;
    type_text(&mut app, &fake, "q").await;
    assert_eq!(dialog(&app).fields[0].text, "workq");
    assert!(!app.quitting, "q is typed into a dialog");
    assert_eq!(press(&mut app, &fake, ctrl('c')).await, [Command::Quit]);
    assert!(app.quitting, "Ctrl-C quits from a dialog too");

    let mut app = opened(&fake).await;
    assert_eq!(press(&mut app, &fake, key('q')).await, [Command::Quit]);
}

#[tokio::test]
async fn pausing_and_resuming_the_selected_account() {
    let fake = FakeSource::seeded();
    let mut app = opened(&fake).await;
    press(&mut app, &fake, key('2')).await;
    assert_eq!(app.selected_account().unwrap().name, "work");
    let commands = press(&mut app, &fake, key('p')).await;
    assert_eq!(
        commands[0],
        Command::Change(Change::SetPaused {
            name: "work".into(),
            paused: true
        })
    );
    assert_eq!(fake.account("work").unwrap().status, AccountStatus::Paused);
    assert_eq!(
        app.accounts[0].status,
        AccountStatus::Paused,
        "the accounts are read again after a change"
    );
    assert_eq!(app.notice.as_ref().unwrap().text, "work paused");

    // backup (the fourth) is paused: p resumes it.
    press(&mut app, &fake, key('G')).await;
    assert_eq!(app.selected_account().unwrap().name, "backup");
    press(&mut app, &fake, key('p')).await;
    assert_eq!(
        fake.account("backup").unwrap().status,
        AccountStatus::Active
    );
    press(&mut app, &fake, key('k')).await;
    assert_eq!(app.selected_account().unwrap().name, "max-2");
}

#[tokio::test]
async fn an_api_key_is_added_through_a_masked_dialog() {
    let fake = FakeSource::seeded();
    let mut app = opened(&fake).await;
    press(&mut app, &fake, key('2')).await;
    press(&mut app, &fake, key('a')).await;
    assert_eq!(dialog(&app).kind, DialogKind::AddApiKey);

    // A pasted key that is not one: the CLI's message, nothing stored, the dialog stays.
    app.update(Event::Paste("hello-not-a-key\n".into()));
    press(&mut app, &fake, code(KeyCode::Enter)).await;
    let error = dialog(&app).error.clone().unwrap();
    assert!(
        error.starts_with("api_key: not an Anthropic key"),
        "{error}"
    );
    assert_eq!(fake.account_rows().len(), 4);

    let key_text = "sk-ant-api03-secretsecretsecret-9999";
    press(&mut app, &fake, ctrl('u')).await;
    app.update(Event::Paste(key_text.into()));
    let shown = render(&app, 80, 24, Theme::MONOCHROME);
    assert!(
        !shown.contains("secret"),
        "the key is shown masked:\n{shown}"
    );
    assert!(shown.contains(&"•".repeat(20)), "{shown}");
    assert!(
        !format!("{app:?}").contains("secretsecret"),
        "Debug masks it too"
    );
    press(&mut app, &fake, code(KeyCode::Tab)).await;
    type_text(&mut app, &fake, "spare").await;
    press(&mut app, &fake, code(KeyCode::Enter)).await;

    assert!(
        app.modal.is_none(),
        "the dialog closes when the key is stored"
    );
    assert_eq!(app.notice.as_ref().unwrap().text, "account spare added");
    let spare = fake.account("spare").expect("stored");
    assert_eq!(spare.credential, "sk-ant-…9999");
    assert!(app.accounts.iter().any(|a| a.name == "spare"));
}

#[tokio::test]
async fn a_client_key_is_created_and_shown_once() {
    let fake = FakeSource::seeded();
    let mut app = opened(&fake).await;
    press(&mut app, &fake, key('2')).await;
    press(&mut app, &fake, key('n')).await;
    assert_eq!(dialog(&app).kind, DialogKind::CreateClientKey);
    press(&mut app, &fake, code(KeyCode::Enter)).await;
    assert!(dialog(&app).error.is_some(), "a key needs a name");

    type_text(&mut app, &fake, "alice").await;
    press(&mut app, &fake, code(KeyCode::Enter)).await;
    let shown_key = match &dialog(&app).kind {
        DialogKind::ClientKeyCreated { name, key } => {
            assert_eq!(name, "alice");
            key.expose().to_owned()
        }
        other => panic!("expected the new key, found {other:?}"),
    };
    assert!(shown_key.starts_with("ccf_"), "{shown_key}");
    assert_eq!(
        app.notice.as_ref().unwrap().text,
        "client key alice created"
    );
    let screen = render(&app, 80, 24, Theme::MONOCHROME);
    assert!(
        screen.contains(&shown_key),
        "the key is on screen once:\n{screen}"
    );
    assert!(screen.contains("not shown again"), "{screen}");
    assert!(
        !format!("{app:?}").contains(&shown_key),
        "Debug masks it, as every secret"
    );

    press(&mut app, &fake, code(KeyCode::Enter)).await;
    assert!(app.modal.is_none(), "read and closed");
    assert!(!render(&app, 80, 24, Theme::MONOCHROME).contains(&shown_key));

    // The same name again: the source's refusal, in the dialog, which stays for another try.
    press(&mut app, &fake, key('n')).await;
    type_text(&mut app, &fake, "alice").await;
    press(&mut app, &fake, code(KeyCode::Enter)).await;
    assert_eq!(dialog(&app).kind, DialogKind::CreateClientKey);
    assert!(
        dialog(&app).error.as_deref().unwrap().contains("alice"),
        "{:?}",
        dialog(&app).error
    );
}

#[tokio::test]
async fn an_oauth_login_shows_the_address_and_takes_the_pasted_code_with_retries() {
    let fake = FakeSource::seeded();
    let mut app = opened(&fake).await;
    press(&mut app, &fake, key('2')).await;
    press(&mut app, &fake, key('o')).await;
    press(&mut app, &fake, code(KeyCode::Enter)).await;
    assert_eq!(
        dialog(&app).error.as_deref(),
        Some("type a name for the new account")
    );
    type_text(&mut app, &fake, "max-3").await;
    press(&mut app, &fake, code(KeyCode::Enter)).await;
    let DialogKind::LoginCode { start, name, .. } = &dialog(&app).kind else {
        panic!("expected the code step, found {:?}", dialog(&app).kind);
    };
    assert_eq!(name, "max-3");
    assert!(
        start
            .authorize_url
            .starts_with("https://claude.ai/oauth/authorize?")
    );
    assert!(start.warning.is_some(), "a subscription login warns");
    let shown = render(&app, 120, 40, Theme::MONOCHROME);
    assert!(
        shown.contains("https://claude.ai/oauth/authorize?code=true"),
        "{shown}"
    );

    // A code from another login: said in the dialog, nothing stored, try again.
    app.update(Event::Paste("abc#someotherstate".into()));
    press(&mut app, &fake, code(KeyCode::Enter)).await;
    assert!(
        dialog(&app)
            .error
            .as_deref()
            .unwrap()
            .contains("state mismatch"),
        "{:?}",
        dialog(&app).error
    );
    assert!(fake.account("max-3").is_none());

    press(&mut app, &fake, ctrl('u')).await;
    app.update(Event::Paste("abc#state1".into()));
    press(&mut app, &fake, code(KeyCode::Enter)).await;
    assert!(app.modal.is_none());
    assert_eq!(app.notice.as_ref().unwrap().text, "account max-3 logged in");
    assert!(fake.account("max-3").is_some());

    // A login the server no longer knows: the dialog says to start again.
    press(&mut app, &fake, key('O')).await;
    type_text(&mut app, &fake, "console-1").await;
    press(&mut app, &fake, code(KeyCode::Enter)).await;
    app.update(Event::Paste("abc#state2".into()));
    fake.oauth_complete("flow-2".into(), ccflare_core::Secret::new("x#state2"))
        .await
        .unwrap();
    press(&mut app, &fake, code(KeyCode::Enter)).await;
    assert_eq!(
        dialog(&app).error.as_deref(),
        Some("the login expired: press Esc and start a new one")
    );
    press(&mut app, &fake, code(KeyCode::Esc)).await;
    assert!(app.modal.is_none());
}

#[tokio::test]
async fn removing_asks_for_the_name_typed() {
    let fake = FakeSource::seeded();
    let mut app = opened(&fake).await;
    press(&mut app, &fake, key('2')).await;
    press(&mut app, &fake, key('j')).await;
    press(&mut app, &fake, key('d')).await;
    assert_eq!(
        dialog(&app).kind,
        DialogKind::Remove {
            name: "max-1".into()
        }
    );
    type_text(&mut app, &fake, "max-").await;
    assert!(
        press(&mut app, &fake, code(KeyCode::Enter))
            .await
            .is_empty()
    );
    assert_eq!(
        dialog(&app).error.as_deref(),
        Some("type max-1 exactly to remove it")
    );
    assert!(fake.account("max-1").is_some());
    type_text(&mut app, &fake, "1").await;
    press(&mut app, &fake, code(KeyCode::Enter)).await;
    assert!(fake.account("max-1").is_none());
    assert!(app.modal.is_none());
    assert!(app.accounts.iter().all(|a| a.name != "max-1"));
}

#[tokio::test]
async fn renaming_and_setting_the_priority() {
    let fake = FakeSource::seeded();
    let mut app = opened(&fake).await;
    press(&mut app, &fake, key('2')).await;
    press(&mut app, &fake, key('r')).await;
    press(&mut app, &fake, ctrl('u')).await;
    type_text(&mut app, &fake, "max-1").await;
    press(&mut app, &fake, code(KeyCode::Enter)).await;
    assert_eq!(
        dialog(&app).error.as_deref(),
        Some("an account named \"max-1\" already exists"),
        "a taken name is refused by the source, and the dialog says so"
    );
    for _ in 0..5 {
        press(&mut app, &fake, code(KeyCode::Backspace)).await;
    }
    type_text(&mut app, &fake, "office").await;
    press(&mut app, &fake, code(KeyCode::Enter)).await;
    assert!(fake.account("office").is_some() && fake.account("work").is_none());
    assert_eq!(app.accounts[0].name, "office");

    press(&mut app, &fake, key('P')).await;
    press(&mut app, &fake, ctrl('u')).await;
    type_text(&mut app, &fake, "high").await;
    press(&mut app, &fake, code(KeyCode::Enter)).await;
    assert_eq!(
        dialog(&app).error.as_deref(),
        Some("priority: expected a whole number, got \"high\"")
    );
    press(&mut app, &fake, ctrl('u')).await;
    type_text(&mut app, &fake, "-2").await;
    press(&mut app, &fake, code(KeyCode::Enter)).await;
    assert_eq!(fake.account("office").unwrap().priority, -2);
}

#[tokio::test]
async fn following_filters_and_details_of_requests() {
    let fake = FakeSource::empty();
    let mut app = opened(&fake).await;
    press(&mut app, &fake, key('3')).await;
    for (id, account, status) in [("a", "work", 200), ("b", "max-1", 429), ("c", "work", 200)] {
        app.update(Event::Request(FeedItem::Item(finished(
            id, account, status,
        ))));
    }
    assert!(app.requests.follow);
    assert_eq!(app.requests.selected_record().unwrap().id, "c");

    // Moving stops following; the selection stays on its request as new ones arrive.
    press(&mut app, &fake, key('j')).await;
    assert!(!app.requests.follow);
    assert_eq!(app.requests.selected_record().unwrap().id, "b");
    app.update(Event::Request(FeedItem::Item(finished("d", "work", 200))));
    assert_eq!(app.requests.selected_record().unwrap().id, "b");
    press(&mut app, &fake, key('f')).await;
    assert_eq!(app.requests.selected_record().unwrap().id, "d");

    press(&mut app, &fake, key('e')).await;
    let ids = |app: &ccflare_tui::App| -> Vec<String> {
        app.requests
            .visible()
            .iter()
            .map(|r| r.id.clone())
            .collect()
    };
    assert_eq!(ids(&app), ["b"], "errors only");
    press(&mut app, &fake, key('e')).await;
    press(&mut app, &fake, key('a')).await;
    assert_eq!(app.requests.account.as_deref(), Some("work"));
    assert_eq!(ids(&app), ["d", "c", "a"]);
    press(&mut app, &fake, key('a')).await;
    assert_eq!(ids(&app), ["b"], "the next account filter");
    press(&mut app, &fake, key('c')).await;
    press(&mut app, &fake, key('/')).await;
    type_text(&mut app, &fake, "429").await;
    press(&mut app, &fake, code(KeyCode::Enter)).await;
    assert_eq!(ids(&app), ["b"], "text matches the status too");
    press(&mut app, &fake, key('c')).await;
    assert_eq!(ids(&app).len(), 4);

    press(&mut app, &fake, code(KeyCode::Enter)).await;
    assert!(app.requests.detail);
    let shown = render(&app, 80, 24, Theme::MONOCHROME);
    assert!(shown.contains("id        d"), "{shown}");
    press(&mut app, &fake, key('j')).await;
    assert_eq!(
        app.requests.selected_record().unwrap().id,
        "c",
        "↓ moves in details too"
    );
    press(&mut app, &fake, code(KeyCode::Esc)).await;
    assert!(!app.requests.detail);
}

#[tokio::test]
async fn a_flood_keeps_the_last_rows_and_counts_the_rest() {
    let fake = FakeSource::empty();
    let mut app = opened(&fake).await;
    press(&mut app, &fake, key('3')).await;
    for n in 0..REQUEST_ROWS + 500 {
        app.update(Event::Request(FeedItem::Item(finished(
            &format!("r{n}"),
            "work",
            200,
        ))));
    }
    app.update(Event::Request(FeedItem::Lagged(30)));
    assert_eq!(app.requests.rows.len(), REQUEST_ROWS);
    assert_eq!((app.requests.dropped, app.requests.missed), (500, 30));
    assert_eq!(
        app.requests.rows.front().unwrap().id,
        format!("r{}", REQUEST_ROWS + 499)
    );
    let shown = render(&app, 120, 40, Theme::MONOCHROME);
    assert!(
        shown.contains("500 older dropped · 30 skipped (UI behind)"),
        "{shown}"
    );
}

#[tokio::test]
async fn logs_filter_by_level_pause_and_search() {
    let fake = FakeSource::seeded();
    let mut app = opened(&fake).await;
    press(&mut app, &fake, key('5')).await;
    let messages = |app: &ccflare_tui::App| -> Vec<String> {
        app.logs
            .visible()
            .iter()
            .map(|l| l.message.clone())
            .collect()
    };
    assert_eq!(messages(&app).len(), 5);
    press(&mut app, &fake, key('l')).await;
    assert_eq!(app.logs.level, LevelFilter::Warnings);
    assert_eq!(
        messages(&app),
        ["upstream rate limited", "every account failed"]
    );
    press(&mut app, &fake, key('l')).await;
    assert_eq!(messages(&app), ["every account failed"]);
    press(&mut app, &fake, key('c')).await;

    press(&mut app, &fake, key('p')).await;
    app.update(Event::Log(FeedItem::Item(Arc::from(
        r#"{"time":1769860800000,"level":"INFO","target":"t","message":"later","fields":{}}"#,
    ))));
    assert_eq!(messages(&app).len(), 5, "paused: the new line waits");
    assert_eq!(app.logs.held(), 1);
    press(&mut app, &fake, key(' ')).await;
    assert_eq!(messages(&app).last().unwrap(), "later");

    press(&mut app, &fake, key('/')).await;
    type_text(&mut app, &fake, "MAX-2").await;
    press(&mut app, &fake, code(KeyCode::Enter)).await;
    assert_eq!(
        messages(&app),
        ["upstream rate limited"],
        "search ignores case"
    );
}

#[tokio::test]
async fn settings_change_through_the_source_unless_pinned() {
    let fake = FakeSource::seeded();
    let mut app = opened(&fake).await;
    press(&mut app, &fake, key('6')).await;
    press(&mut app, &fake, code(KeyCode::Enter)).await;
    assert!(matches!(app.modal, Some(Modal::Picker(_))));
    press(&mut app, &fake, key('j')).await;
    let commands = press(&mut app, &fake, code(KeyCode::Enter)).await;
    assert_eq!(
        commands[0],
        Command::Change(Change::Setting(SettingChange::Strategy(
            Strategy::RoundRobin
        )))
    );
    assert_eq!(fake.settings().strategy, Strategy::RoundRobin);
    assert_eq!(app.settings.strategy, Strategy::RoundRobin);
    assert!(app.modal.is_none());

    press(&mut app, &fake, key('j')).await;
    press(&mut app, &fake, code(KeyCode::Enter)).await;
    press(&mut app, &fake, ctrl('u')).await;
    type_text(&mut app, &fake, "soon").await;
    press(&mut app, &fake, code(KeyCode::Enter)).await;
    assert_eq!(
        dialog(&app).error.as_deref(),
        Some("expected a number of seconds, got \"soon\"")
    );
    press(&mut app, &fake, ctrl('u')).await;
    type_text(&mut app, &fake, "600").await;
    press(&mut app, &fake, code(KeyCode::Enter)).await;
    assert_eq!(fake.settings().session_timeout_s, 600);

    fake.pin(SESSION_TIMEOUT_KEY);
    app.update(Event::Tick {
        now: fake.now(),
        health: fake.health(),
        settings: fake.settings(),
    });
    press(&mut app, &fake, code(KeyCode::Enter)).await;
    assert!(app.modal.is_none(), "a pinned setting opens no dialog");
    assert!(app.notice.as_ref().unwrap().error);
}

#[tokio::test]
async fn analytics_ranges_load_their_report() {
    let fake = FakeSource::seeded();
    let mut app = opened(&fake).await;
    // The Overview already read the last 24 hours, at this same instant.
    assert!(press(&mut app, &fake, key('4')).await.is_empty());
    assert_eq!(app.range, Range::Day);
    assert!(app.reports.get(Range::Day).is_some());
    let commands = press(&mut app, &fake, code(KeyCode::Right)).await;
    assert_eq!(commands, [Command::LoadReport(Range::Week)]);
    assert_eq!(app.range, Range::Week);
    press(&mut app, &fake, code(KeyCode::Right)).await;
    press(&mut app, &fake, code(KeyCode::Right)).await;
    assert_eq!(app.range, Range::Month, "the longest range is the last");
    for _ in 0..5 {
        press(&mut app, &fake, key('h')).await;
    }
    assert_eq!(app.range, Range::Hour);
    // Loaded at the same instant: not read again until it is stale.
    assert!(press(&mut app, &fake, key('l')).await.is_empty());
}

#[tokio::test]
async fn ticks_move_the_clock_expire_notices_and_never_overlap_loads() {
    let fake = FakeSource::seeded();
    let mut app = opened(&fake).await;
    press(&mut app, &fake, key('2')).await;
    press(&mut app, &fake, key('p')).await;
    assert!(app.notice.is_some());
    let tick = |fake: &FakeSource| Event::Tick {
        now: fake.now(),
        health: fake.health(),
        settings: fake.settings(),
    };
    fake.advance(NOTICE_MS);
    let commands = app.update(tick(&fake));
    assert!(app.notice.is_none());
    assert_eq!(commands, [Command::LoadAccounts]);
    assert!(
        app.update(tick(&fake)).is_empty(),
        "no second read while the first runs"
    );
}

#[test]
fn docs_tui_md_lists_every_key() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/tui.md");
    let doc = std::fs::read_to_string(&path).expect("docs/tui.md exists");
    const START: &str = "<!-- keys: generated from crates/ccflare-tui/src/keymap.rs -->\n";
    const END: &str = "<!-- end of keys -->";
    let (Some(start), Some(end)) = (doc.find(START), doc.find(END)) else {
        panic!("docs/tui.md lacks the markers {START:?} and {END:?}");
    };
    let expected = keymap::markdown();
    let found = &doc[start + START.len()..end];
    if found.trim() != expected.trim() {
        if std::env::var_os("UPDATE_TUI_DOC").is_some() {
            let updated = format!(
                "{}{START}\n{}\n{}",
                &doc[..start],
                expected.trim(),
                &doc[end..]
            );
            std::fs::write(&path, updated).expect("writing docs/tui.md");
            return;
        }
        panic!(
            "docs/tui.md's key tables differ from the keymap; run \
             `UPDATE_TUI_DOC=1 cargo test -p ccflare-tui --test keys` to write them:\n{expected}"
        );
    }
}
