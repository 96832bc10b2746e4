//! Tab 1, Overview: the server (address, uptime, strategy, accounts by state, the database's
//! health as `/health` tells it), the last hour (requests and tokens per minute, success
//! rate, latency percentiles, cost today), each account's 5-hour and 7-day utilisation with
//! the time to its reset, and the most recent errors.

use super::{Theme, field};
use crate::app::App;
use crate::format::{self, fit};
use crate::source::AccountRow;
use ccflare_analytics::Range;
use ccflare_core::Millis;
use ccflare_pool::RoutingState;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Sparkline};

pub fn draw(frame: &mut Frame<'_>, area: Rect, app: &App, theme: Theme) {
    let accounts_rows = (app.accounts.len().max(1) as u16 + 2)
        .min(area.height / 3)
        .max(3);
    let [top, middle, bottom] = Layout::vertical([
        Constraint::Length(8),
        Constraint::Length(accounts_rows),
        Constraint::Min(3),
    ])
    .areas(area);
    let [server, hour] =
        Layout::horizontal([Constraint::Percentage(52), Constraint::Percentage(48)]).areas(top);
    draw_server(frame, server, app, theme);
    draw_hour(frame, hour, app, theme);
    draw_utilisation(frame, middle, app, theme);
    draw_errors(frame, bottom, app, theme);
}

fn block(title: &str, theme: Theme) -> Block<'_> {
    Block::bordered().title(Span::styled(format!(" {title} "), theme.title()))
}

/// "2 active, 1 limited, 1 paused".
fn account_counts(accounts: &[AccountRow]) -> String {
    let mut counts = [0usize; 5];
    for account in accounts {
        let at = match account.state {
            RoutingState::Active => 0,
            RoutingState::RateLimited { .. } => 1,
            RoutingState::Overloaded { .. } => 2,
            RoutingState::Paused => 3,
            RoutingState::Invalid => 4,
        };
        counts[at] += 1;
    }
    let names = ["active", "limited", "overloaded", "paused", "invalid"];
    let parts: Vec<String> = counts
        .iter()
        .zip(names)
        .enumerate()
        .filter(|(at, (n, _))| **n > 0 || *at == 0)
        .map(|(_, (n, name))| format!("{n} {name}"))
        .collect();
    parts.join(", ")
}

fn draw_server(frame: &mut Frame<'_>, area: Rect, app: &App, theme: Theme) {
    let width = area.width.saturating_sub(12) as usize;
    let database = if app.health.is_ok() {
        Span::styled("ok", theme.good())
    } else {
        let writer = &app.health.writer;
        let text = if let Some(damage) = &writer.damaged {
            format!("DAMAGED: {damage}")
        } else if let Some(error) = &writer.failing {
            format!(
                "NOT WRITABLE ({} waiting): {error}",
                format::count(app.health.waiting_records as i64)
            )
        } else if writer.spilled_waiting > 0 {
            format!(
                "catching up: {} records in the spill file",
                format::count(writer.spilled_waiting as i64)
            )
        } else if let Some(error) = &writer.spill_failing {
            format!("spill file failing: {error}")
        } else {
            format!(
                "{} records dropped",
                format::count(app.health.dropped_records as i64)
            )
        };
        Span::styled(fit(&text, width), theme.bad())
    };
    let accounts = if app.accounts_loaded {
        account_counts(&app.accounts)
    } else {
        "loading…".to_owned()
    };
    let lines = vec![
        field(
            "listening",
            10,
            vec![Span::raw(fit(&app.info.listen, width))],
            theme,
        ),
        field(
            "uptime",
            10,
            vec![Span::raw(format!(
                "{} · v{}",
                format::duration(app.now - app.info.started_at),
                app.info.version
            ))],
            theme,
        ),
        field(
            "strategy",
            10,
            vec![Span::raw(app.settings.strategy.as_str())],
            theme,
        ),
        field(
            "accounts",
            10,
            vec![Span::raw(fit(&accounts, width))],
            theme,
        ),
        field("database", 10, vec![database], theme),
        field(
            "own time",
            10,
            vec![Span::raw(fit(&own_time(app), width))],
            theme,
        ),
    ];
    frame.render_widget(Paragraph::new(lines).block(block("Server", theme)), area);
}

/// ccflare's own time per request (its duration less the time waiting on the upstream,
/// `ccflare_proxy_overhead_seconds` in `/metrics`): p50 and p95, nearest rank, over the
/// requests finished since the UI opened that are still in the Requests table.
fn own_time(app: &App) -> String {
    let mut micros: Vec<i64> = app
        .requests
        .rows
        .iter()
        .filter_map(|r| r.proxy_overhead_us)
        .collect();
    if micros.is_empty() {
        return "–".to_owned();
    }
    micros.sort_unstable();
    let rank =
        |q: f64| micros[((q * micros.len() as f64).ceil() as usize).clamp(1, micros.len()) - 1];
    format!(
        "p50 {:.2} ms · p95 {:.2} ms",
        rank(0.5) as f64 / 1000.0,
        rank(0.95) as f64 / 1000.0
    )
}

/// Per-minute values of the last hour, oldest first (missing minutes are zero).
fn per_minute(app: &App, value: impl Fn(&ccflare_analytics::Point) -> i64) -> Vec<u64> {
    let Some(report) = app.reports.get(Range::Hour) else {
        return Vec::new();
    };
    report
        .series
        .iter()
        .map(|p| value(p).max(0) as u64)
        .collect()
}

fn draw_hour(frame: &mut Frame<'_>, area: Rect, app: &App, theme: Theme) {
    let outer = block("Last hour", theme);
    let inner = outer.inner(area);
    frame.render_widget(outer, area);
    if inner.height == 0 {
        return;
    }
    let rows = Layout::vertical([Constraint::Length(1); 5]).split(inner);
    let hour = app.reports.get(Range::Hour);
    let day = app.reports.get(Range::Day);
    for (row, (label, data)) in [
        ("req/min", per_minute(app, |p| p.requests)),
        ("tok/min", per_minute(app, |p| p.total_tokens)),
    ]
    .into_iter()
    .enumerate()
    {
        let Some(line) = rows.get(row) else { break };
        let [name, spark] =
            Layout::horizontal([Constraint::Length(9), Constraint::Min(0)]).areas(*line);
        let peak = data.iter().max().copied().unwrap_or(0);
        frame.render_widget(Paragraph::new(Span::styled(label, theme.label())), name);
        // The newest minutes on the right, as many as fit.
        let take = spark.width.saturating_sub(6) as usize;
        let start = data.len().saturating_sub(take);
        let [bars, max] =
            Layout::horizontal([Constraint::Min(0), Constraint::Length(6)]).areas(spark);
        frame.render_widget(
            Sparkline::default()
                .data(data[start..].iter().copied())
                .style(theme.series(row)),
            bars,
        );
        frame.render_widget(
            Paragraph::new(Span::styled(
                format!(" {}", format::compact(peak as i64)),
                theme.label(),
            )),
            max,
        );
    }
    let figures = match hour {
        Some(report) if report.totals.requests > 0 => vec![
            field(
                "requests",
                9,
                vec![Span::raw(format!(
                    "{} · success {}",
                    format::count(report.totals.requests),
                    format::percent(report.totals.success_rate)
                ))],
                theme,
            ),
            field(
                "latency",
                9,
                vec![Span::raw(format!(
                    "p50 {} · p95 {}",
                    report.latency_ms.p50.map_or("–".into(), format::latency),
                    report.latency_ms.p95.map_or("–".into(), format::latency),
                ))],
                theme,
            ),
        ],
        Some(_) => vec![field(
            "requests",
            9,
            vec![Span::raw("none in the last hour")],
            theme,
        )],
        None => vec![field("requests", 9, vec![Span::raw("loading…")], theme)],
    };
    let cost = day.map(|report| {
        let since = format::start_of_day(app.now, app.info.utc_offset_ms);
        let today: f64 = report
            .series
            .iter()
            .filter(|p| p.time >= since)
            .map(|p| p.cost_usd)
            .sum();
        field(
            "cost",
            9,
            vec![Span::raw(format!(
                "today {} · 24h {}",
                format::money(today),
                format::money(report.totals.cost_usd)
            ))],
            theme,
        )
    });
    let lines: Vec<Line<'_>> = figures.into_iter().chain(cost).collect();
    for (line, area) in lines.into_iter().zip(rows.iter().skip(2)) {
        frame.render_widget(Paragraph::new(line), *area);
    }
}

/// `[██████░░░░] 62% 1h 20m`: a window's utilisation and the time to its reset.
fn gauge(
    utilisation: Option<f64>,
    reset: Option<Millis>,
    now: Millis,
    width: usize,
) -> (String, f64) {
    let Some(used) = utilisation else {
        return (format!("{:width$}", "–"), 0.0);
    };
    let used = used.clamp(0.0, 1.0);
    let filled = (used * width as f64).round() as usize;
    let reset = reset
        .filter(|at| *at > now)
        .map(|at| format::duration(at - now))
        .unwrap_or_default();
    (
        format!(
            "{}{} {:>3.0}% {:<7}",
            "█".repeat(filled),
            "░".repeat(width - filled),
            used * 100.0,
            reset
        ),
        used,
    )
}

fn draw_utilisation(frame: &mut Frame<'_>, area: Rect, app: &App, theme: Theme) {
    let outer = block("Utilisation: 5 hours · 7 days", theme);
    let inner = outer.inner(area);
    frame.render_widget(outer, area);
    let name_width = 14usize;
    // Two gauges share what the name leaves: "5h " + bar + " 100% 1h 20m " each.
    let bar = ((inner.width as usize).saturating_sub(name_width + 2 * 17) / 2).clamp(4, 30);
    let mut lines = Vec::new();
    if app.accounts.is_empty() {
        lines.push(Line::from(Span::styled(
            if app.accounts_loaded {
                "no accounts: add one on the Accounts tab (2)"
            } else {
                "loading…"
            },
            theme.label(),
        )));
    }
    for account in &app.accounts {
        let snapshot = account.last_ratelimit.as_ref();
        let mut spans = vec![Span::raw(format!(
            "{:<name_width$}",
            fit(&account.name, name_width - 1)
        ))];
        if snapshot.is_some_and(|s| {
            s.unified_5h_utilization.is_some() || s.unified_7d_utilization.is_some()
        }) {
            let snapshot = snapshot.expect("checked above");
            for (label, utilisation, reset) in [
                (
                    "5h ",
                    snapshot.unified_5h_utilization,
                    snapshot.unified_5h_reset,
                ),
                (
                    "7d ",
                    snapshot.unified_7d_utilization,
                    snapshot.unified_7d_reset,
                ),
            ] {
                let (text, used) = gauge(utilisation, reset, app.now, bar);
                let style = if used >= 0.9 {
                    theme.bad()
                } else if used >= 0.7 {
                    theme.warn()
                } else {
                    theme.good()
                };
                spans.push(Span::styled(label, theme.label()));
                spans.push(Span::styled(text, style));
                spans.push(Span::raw(" "));
            }
        } else {
            spans.push(Span::styled(
                match account.kind {
                    ccflare_core::AccountKind::ApiKey => "API key: no subscription windows",
                    ccflare_core::AccountKind::OAuth => "no rate-limit headers seen yet",
                },
                theme.label(),
            ));
        }
        lines.push(Line::from(spans));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

fn draw_errors(frame: &mut Frame<'_>, area: Rect, app: &App, theme: Theme) {
    let outer = block("Recent errors", theme);
    let inner = outer.inner(area);
    frame.render_widget(outer, area);
    let lines: Vec<Line<'_>> = app
        .requests
        .rows
        .iter()
        .filter(|r| !r.success)
        .take(inner.height as usize)
        .map(|r| {
            let what = r
                .error_type
                .clone()
                .unwrap_or_else(|| format!("http_{}", r.status));
            let text = format!(
                "{:<10} {} {} {} {}{}",
                format::ago(app.now, Some(r.started_at)),
                r.status,
                what,
                r.account_name.as_deref().unwrap_or("-"),
                r.model.as_deref().unwrap_or("-"),
                r.error_message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            );
            Line::from(Span::styled(fit(&text, inner.width as usize), theme.bad()))
        })
        .collect();
    if lines.is_empty() {
        frame.render_widget(Paragraph::new(Span::styled("none", theme.label())), inner);
    } else {
        frame.render_widget(Paragraph::new(lines), inner);
    }
}
