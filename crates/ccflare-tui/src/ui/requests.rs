//! Tab 3, Requests: the live table of finished requests (time, status, model, account, tokens
//! in and out, cost, latency, attempts), newest first, with the filters and the follow mode in
//! the title and how many rows were dropped or missed; `Enter` opens a request's details
//! (ids, timings, usage with cache, cost, every failed attempt with its account and reason).

use super::{Theme, field, scroll_offset};
use crate::app::App;
use crate::format::{self, fit, inert};
use ccflare_core::record::RequestRecord;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table, TableState};

fn title(app: &App) -> String {
    let requests = &app.requests;
    let mut parts = vec!["Requests".to_owned()];
    parts.push(
        if requests.follow {
            "following"
        } else {
            "paused"
        }
        .to_owned(),
    );
    if requests.errors_only {
        parts.push("errors only".to_owned());
    }
    if let Some(account) = &requests.account {
        parts.push(format!("account {account}"));
    }
    if let Some(model) = &requests.model {
        parts.push(format!("model {model}"));
    }
    if !requests.text.is_empty() {
        parts.push(format!("\"{}\"", requests.text));
    }
    parts.push(format!(
        "{} rows",
        format::count(requests.rows.len() as i64)
    ));
    if requests.dropped > 0 {
        parts.push(format!(
            "{} older dropped",
            format::count(requests.dropped as i64)
        ));
    }
    if requests.missed > 0 {
        parts.push(format!(
            "{} skipped (UI behind)",
            format::count(requests.missed as i64)
        ));
    }
    format!(" {} ", parts.join(" · "))
}

pub fn draw(frame: &mut Frame<'_>, area: Rect, app: &App, theme: Theme) {
    let (table_area, detail_area) = if app.requests.detail {
        let table_rows = (area.height / 3).max(5);
        let [table, detail] =
            Layout::vertical([Constraint::Length(table_rows), Constraint::Min(0)]).areas(area);
        (table, Some(detail))
    } else {
        (area, None)
    };
    draw_table(frame, table_area, app, theme);
    if let (Some(area), Some(record)) = (detail_area, app.requests.selected_record()) {
        draw_detail(frame, area, app, &record, theme);
    }
}

fn draw_table(frame: &mut Frame<'_>, area: Rect, app: &App, theme: Theme) {
    let wide = area.width >= 110;
    let model_width = if wide { 22 } else { 17 };
    let offset = app.info.utc_offset_ms;
    let visible = app.requests.visible();
    let selected = app.requests.selected_index(&visible);
    let height = area.height.saturating_sub(3) as usize;
    let first = scroll_offset(selected, height);
    // Only the rows on screen are turned into cells.
    let rows: Vec<Row<'_>> = visible
        .iter()
        .skip(first)
        .take(height.max(1))
        .map(|r| {
            let status_style = if r.success {
                theme.plain()
            } else {
                theme.bad()
            };
            let mut cells = vec![
                Cell::from(format::clock(r.started_at, offset)),
                Cell::from(Span::styled(r.status.to_string(), status_style)),
                Cell::from(fit(r.model.as_deref().unwrap_or("-"), model_width)),
                Cell::from(inert(r.account_name.as_deref().unwrap_or("-")).into_owned()),
                Cell::from(format::compact(
                    (r.usage.input_tokens
                        + r.usage.cache_read_input_tokens
                        + r.usage.cache_creation_input_tokens) as i64,
                )),
                Cell::from(format::compact(r.usage.output_tokens as i64)),
                Cell::from(format::money(r.cost_usd)),
                Cell::from(format::latency(r.latency_ms)),
                Cell::from(r.attempts.to_string()),
            ];
            if wide {
                // Why it failed, or why an earlier attempt failed over.
                let why = match (&r.error_type, r.attempt_failures.last()) {
                    (Some(error), _) => error.clone(),
                    (None, Some(failure)) => {
                        format!("after {} {}", failure.account, failure.reason)
                    }
                    (None, None) => String::new(),
                };
                cells.push(Cell::from(Span::styled(
                    inert(&why).into_owned(),
                    status_style,
                )));
            }
            Row::new(cells)
        })
        .collect();
    let mut widths = vec![
        Constraint::Length(8),
        Constraint::Length(3),
        Constraint::Length(model_width as u16),
        Constraint::Length(if wide { 14 } else { 10 }),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(3),
    ];
    let mut header = vec![
        "time", "st", "model", "account", "in", "out", "cost", "latency", "try",
    ];
    if wide {
        widths.push(Constraint::Min(10));
        header.push("why");
    }
    let header = Row::new(header).style(theme.header());
    let mut state = TableState::default().with_selected(selected.map(|at| at - first));
    let block = Block::bordered().title(Span::styled(
        fit(&title(app), area.width.saturating_sub(2) as usize),
        theme.title(),
    ));
    let table = Table::new(rows, widths)
        .header(header)
        .row_highlight_style(theme.selected())
        .highlight_symbol("›")
        .block(block);
    frame.render_stateful_widget(table, area, &mut state);
    if visible.is_empty() && area.height > 3 {
        let text = if !app.requests.loaded {
            "loading…"
        } else if app.request_filters_on() {
            "no request matches the filters (c clears them)"
        } else {
            "no requests yet: point a client at the listening address"
        };
        frame.render_widget(
            Paragraph::new(Span::styled(text, theme.label())),
            Rect {
                x: area.x + 2,
                y: area.y + 2,
                width: area.width.saturating_sub(4),
                height: 1,
            },
        );
    }
}

fn draw_detail(frame: &mut Frame<'_>, area: Rect, app: &App, r: &RequestRecord, theme: Theme) {
    let block = Block::bordered().title(Span::styled(" Request ", theme.title()));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let width = inner.width.saturating_sub(10) as usize;
    let line = |label: &'static str, text: String| {
        field(label, 10, vec![Span::raw(fit(&text, width))], theme)
    };
    let u = &r.usage;
    let mut lines: Vec<Line<'_>> = vec![line("id", r.id.clone())];
    if r.upstream_request_id.is_some() || r.message_id.is_some() {
        lines.push(line(
            "upstream",
            format!(
                "request-id {} · message {}",
                r.upstream_request_id.as_deref().unwrap_or("–"),
                r.message_id.as_deref().unwrap_or("–")
            ),
        ));
    }
    lines.extend([
        line(
            "started",
            format!(
                "{} · {} {}{}",
                format::day_clock(r.started_at, app.info.utc_offset_ms),
                r.method,
                r.path,
                if r.streamed { " · streamed" } else { "" }
            ),
        ),
        field(
            "status",
            10,
            vec![Span::styled(
                fit(
                    &match (&r.error_type, &r.error_message) {
                        (None, _) if r.success => format!("{} ok", r.status),
                        (kind, message) => format!(
                            "{} {}{}",
                            r.status,
                            kind.as_deref().unwrap_or("error"),
                            message
                                .as_deref()
                                .map(|m| format!(": {m}"))
                                .unwrap_or_default()
                        ),
                    },
                    width,
                ),
                if r.success { theme.good() } else { theme.bad() },
            )],
            theme,
        ),
        line(
            "model",
            format!(
                "{} · account {}",
                r.model.as_deref().unwrap_or("-"),
                r.account_name.as_deref().unwrap_or("none")
            ),
        ),
        line(
            "timings",
            format!(
                "first byte {} · total {}{}",
                r.ttfb_ms.map_or("–".to_owned(), format::latency),
                format::latency(r.latency_ms),
                r.output_tokens_per_second
                    .map(|t| format!(" · {t:.1} tokens/s"))
                    .unwrap_or_default()
            ),
        ),
        line(
            "usage",
            format!(
                "in {} · out {} · cache read {} · cache write {} (5m {}, 1h {}){}",
                format::count(u.input_tokens as i64),
                format::count(u.output_tokens as i64),
                format::count(u.cache_read_input_tokens as i64),
                format::count(u.cache_creation_input_tokens as i64),
                format::count(u.cache_write_5m as i64),
                format::count(u.cache_write_1h as i64),
                if r.usage_incomplete {
                    " · incomplete"
                } else {
                    ""
                }
            ),
        ),
        line(
            "cost",
            format!(
                "{}{}",
                format::money(r.cost_usd),
                if r.cost_estimated {
                    " (estimated: model not in the price table)"
                } else {
                    ""
                }
            ),
        ),
    ]);
    if let Some(session) = &r.session_key {
        lines.push(line("session", session.clone()));
    }
    lines.push(line(
        "attempts",
        format!("{} ({} failed over)", r.attempts, r.attempt_failures.len()),
    ));
    for (n, failure) in r.attempt_failures.iter().enumerate() {
        lines.push(line(
            "",
            format!(
                "{}. {}: {}{}",
                n + 1,
                failure.account,
                failure.status.map(|s| format!("{s} ")).unwrap_or_default(),
                failure.reason
            ),
        ));
    }
    // Why it went to its account (docs/routing.md), wrapped over as many lines as it takes.
    if let Some(route) = &r.route {
        let chars: Vec<char> = route.text().chars().collect();
        for (n, piece) in chars.chunks(width.max(1)).enumerate() {
            let label = if n == 0 { "route" } else { "" };
            lines.push(line(label, piece.iter().collect()));
        }
    }
    frame.render_widget(Paragraph::new(lines), inner);
}
