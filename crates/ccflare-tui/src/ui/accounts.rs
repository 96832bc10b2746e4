//! Tab 2, Accounts: one row per account — name, kind, state with the time until it returns,
//! 5-hour and 7-day utilisation, requests in flight, requests served, last use, priority —
//! and the selected account's masked credential and rate-limit windows below.

use super::{Theme, field, scroll_offset};
use crate::app::App;
use crate::format::{self, fit};
use crate::source::AccountRow;
use ccflare_core::Millis;
use ccflare_pool::RoutingState;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table, TableState};

/// "active", "limited 4m 10s", "paused", …, and its style.
pub fn state(account: &AccountRow, now: Millis, theme: Theme) -> (String, Style) {
    match account.state {
        RoutingState::Active => ("active".to_owned(), theme.good()),
        RoutingState::Paused => ("paused".to_owned(), theme.warn()),
        RoutingState::RateLimited { until } => (
            format!("limited {}", format::duration(until - now)),
            theme.warn(),
        ),
        RoutingState::Overloaded { until } => (
            format!("overloaded {}", format::duration(until - now)),
            theme.warn(),
        ),
        RoutingState::Invalid => ("invalid".to_owned(), theme.bad()),
    }
}

fn percent(value: Option<f64>) -> String {
    value.map_or("–".to_owned(), |v| format!("{:.0}%", v * 100.0))
}

pub fn draw(frame: &mut Frame<'_>, area: Rect, app: &App, theme: Theme) {
    let [table_area, detail_area] =
        Layout::vertical([Constraint::Min(4), Constraint::Length(5)]).areas(area);
    let wide = area.width >= 110;
    let header = [
        "name",
        "kind",
        "state",
        "5h",
        "7d",
        "busy",
        "requests",
        "last used",
        "prio",
    ];
    let mut widths = vec![
        Constraint::Min(10),
        Constraint::Length(7),
        Constraint::Length(16),
        Constraint::Length(4),
        Constraint::Length(4),
        Constraint::Length(4),
        Constraint::Length(8),
        Constraint::Length(10),
        Constraint::Length(4),
    ];
    let mut header: Vec<&str> = header.to_vec();
    if wide {
        header.insert(2, "credential");
        widths.insert(2, Constraint::Length(14));
    }
    let rows: Vec<Row<'_>> = app
        .accounts
        .iter()
        .map(|account| {
            let (state, style) = state(account, app.now, theme);
            let snapshot = account.last_ratelimit.as_ref();
            let mut cells = vec![
                Cell::from(format::inert(&account.name).into_owned()),
                Cell::from(match account.kind {
                    ccflare_core::AccountKind::ApiKey => "api key",
                    ccflare_core::AccountKind::OAuth => "oauth",
                }),
                Cell::from(Span::styled(state, style)),
                Cell::from(percent(snapshot.and_then(|s| s.unified_5h_utilization))),
                Cell::from(percent(snapshot.and_then(|s| s.unified_7d_utilization))),
                Cell::from(account.in_flight.to_string()),
                Cell::from(format::count(account.requests)),
                Cell::from(format::ago(app.now, account.last_used)),
                Cell::from(account.priority.to_string()),
            ];
            if wide {
                cells.insert(2, Cell::from(account.credential.clone()));
            }
            Row::new(cells)
        })
        .collect();
    let title = match (&app.accounts_error, app.accounts_loaded) {
        (Some(error), _) => Span::styled(format!(" Accounts: {error} "), theme.bad()),
        (None, false) => Span::styled(" Accounts: loading… ", theme.title()),
        (None, true) => Span::styled(
            format!(" Accounts ({}) ", app.accounts.len()),
            theme.title(),
        ),
    };
    let selected = (!app.accounts.is_empty()).then_some(app.account_selected);
    let height = table_area.height.saturating_sub(3) as usize;
    let mut table_state = TableState::default()
        .with_offset(scroll_offset(selected, height))
        .with_selected(selected);
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(theme.header()))
        .row_highlight_style(theme.selected())
        .highlight_symbol("›")
        .block(Block::bordered().title(title));
    frame.render_stateful_widget(table, table_area, &mut table_state);
    if app.accounts.is_empty() && app.accounts_loaded {
        let inner = Rect {
            y: table_area.y + 2,
            height: 1,
            x: table_area.x + 2,
            width: table_area.width.saturating_sub(4),
        };
        frame.render_widget(
            Paragraph::new(Span::styled(
                "no accounts yet: a adds an API key, o a Claude Pro/Max login",
                theme.label(),
            )),
            inner,
        );
    }
    draw_selected(frame, detail_area, app, theme);
}

fn draw_selected(frame: &mut Frame<'_>, area: Rect, app: &App, theme: Theme) {
    let block = Block::bordered();
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(account) = app.selected_account() else {
        return;
    };
    let width = inner.width.saturating_sub(12) as usize;
    let snapshot = account.last_ratelimit.as_ref();
    let windows = match snapshot {
        Some(s) if s.unified_status.is_some() => format!(
            "{} · 5h {} · 7d {}{}",
            s.unified_status.as_deref().unwrap_or("-"),
            percent(s.unified_5h_utilization),
            percent(s.unified_7d_utilization),
            s.unified_reset
                .filter(|at| *at > app.now)
                .map(|at| format!(" · resets in {}", format::duration(at - app.now)))
                .unwrap_or_default()
        ),
        Some(s) => match (s.requests.remaining, s.requests.limit) {
            (Some(left), Some(limit)) => format!("requests {left}/{limit} left this minute"),
            _ => "no windows in its last answer".to_owned(),
        },
        None => "no answer seen yet".to_owned(),
    };
    let lines = vec![
        field(
            "account",
            11,
            vec![Span::styled(
                fit(&format!("{} · {}", account.name, account.credential), width),
                theme.header(),
            )],
            theme,
        ),
        field(
            "status",
            11,
            vec![Span::raw(format!(
                "set {} · {} in flight",
                account.status.as_str(),
                account.in_flight
            ))],
            theme,
        ),
        field("limits", 11, vec![Span::raw(fit(&windows, width))], theme),
    ];
    frame.render_widget(
        Paragraph::new(lines.into_iter().collect::<Vec<Line<'_>>>()),
        inner,
    );
}
