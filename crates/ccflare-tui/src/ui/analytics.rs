//! Tab 4, Analytics: one range (1h, 6h, 24h, 7d, 30d) of `ccflare_analytics::report` — the
//! very figures `/api/analytics?range=` gives — as totals, four charts over time (requests,
//! tokens, cost, and each point's latency p50 and p95, with the range's p50/p95/p99) and
//! breakdowns by model and by account.

use super::Theme;
use crate::app::App;
use crate::format::{self, fit};
use ccflare_analytics::{Group, Point, Range, Report};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Cell, Chart, Dataset, GraphType, Paragraph, Row, Table};

pub fn draw(frame: &mut Frame<'_>, area: Rect, app: &App, theme: Theme) {
    let [ranges, totals, charts, breakdowns] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Percentage(60),
        Constraint::Min(4),
    ])
    .areas(area);
    draw_ranges(frame, ranges, app, theme);
    let slot = app.reports.slot(app.range);
    let Some(report) = &slot.report else {
        let text = match &slot.error {
            Some(error) => Span::styled(format!(" {error}"), theme.bad()),
            None => Span::styled(" loading…", theme.label()),
        };
        frame.render_widget(Paragraph::new(text), totals);
        return;
    };
    draw_totals(frame, totals, report, slot.error.as_deref(), theme);
    draw_charts(frame, charts, app, report, theme);
    let [models, accounts] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
            .areas(breakdowns);
    draw_groups(frame, models, "By model", &report.models, theme);
    draw_groups(frame, accounts, "By account", &report.accounts, theme);
}

fn draw_ranges(frame: &mut Frame<'_>, area: Rect, app: &App, theme: Theme) {
    let mut spans = vec![Span::styled(" range ", theme.label())];
    for range in Range::ALL {
        let text = format!(" {} ", range.as_str());
        spans.push(if range == app.range {
            Span::styled(format!("[{}]", range.as_str()), theme.active_tab())
        } else {
            Span::raw(text)
        });
    }
    spans.push(Span::styled("  ←/→ to change", theme.label()));
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_totals(
    frame: &mut Frame<'_>,
    area: Rect,
    report: &Report,
    error: Option<&str>,
    theme: Theme,
) {
    let t = &report.totals;
    let mut text = format!(
        " {} requests · {} ok · {} tokens · {} · latency p50 {} p95 {} p99 {}",
        format::count(t.requests),
        format::percent(t.success_rate),
        format::compact(t.total_tokens),
        format::money(t.cost_usd),
        report.latency_ms.p50.map_or("–".into(), format::latency),
        report.latency_ms.p95.map_or("–".into(), format::latency),
        report.latency_ms.p99.map_or("–".into(), format::latency),
    );
    // The prompt cache written again because sessions moved (docs/routing.md), when any did.
    if t.session_moves > 0 {
        text.push_str(&format!(
            " · {} moved, {} cache re-created",
            format::count(t.session_moves),
            format::compact(t.moved_cache_write_tokens)
        ));
    }
    let mut spans = vec![Span::raw(fit(&text, area.width as usize))];
    if let Some(error) = error {
        // The last figures stay up; say that the newest read failed.
        spans = vec![Span::styled(
            fit(
                &format!(" (not refreshed: {error}) {text}"),
                area.width as usize,
            ),
            theme.bad(),
        )];
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// What a chart plots of each point (nothing where the point has no value), and how its axis
/// labels a value.
type Value = fn(&Point) -> Option<f64>;
type Label = fn(f64) -> String;

/// One line of a chart: its name in the legend (none for a chart of one line) and its values.
type Plotted = (Option<&'static str>, Value);

fn draw_charts(frame: &mut Frame<'_>, area: Rect, app: &App, report: &Report, theme: Theme) {
    let [top, bottom] =
        Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
    let [a, b] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(top);
    let [c, d] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(bottom);
    let latency_title = format!(
        "latency p50 · p95: {} · {}",
        report.latency_ms.p50.map_or("–".into(), format::latency),
        report.latency_ms.p95.map_or("–".into(), format::latency),
    );
    let charts: [(Rect, String, Vec<Plotted>, Label); 4] = [
        (
            a,
            "requests".to_owned(),
            vec![(None, |p| Some(p.requests as f64))],
            |v| format::count(v as i64),
        ),
        (
            b,
            "tokens".to_owned(),
            vec![(None, |p| Some(p.total_tokens as f64))],
            |v| format::compact(v as i64),
        ),
        (
            c,
            "cost".to_owned(),
            vec![(None, |p| Some(p.cost_usd))],
            format::money,
        ),
        (
            d,
            latency_title,
            vec![
                (Some("p50"), |p| p.latency_p50_ms.map(|ms| ms as f64)),
                (Some("p95"), |p| p.latency_p95_ms.map(|ms| ms as f64)),
            ],
            |v| format::latency(v as i64),
        ),
    ];
    for (index, (area, title, lines, label)) in charts.into_iter().enumerate() {
        chart(
            frame, area, app, report, &title, &lines, label, index, theme,
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn chart(
    frame: &mut Frame<'_>,
    area: Rect,
    app: &App,
    report: &Report,
    title: &str,
    lines: &[Plotted],
    label: Label,
    index: usize,
    theme: Theme,
) {
    let series: Vec<Vec<(f64, f64)>> = lines
        .iter()
        .map(|(_, value)| {
            report
                .series
                .iter()
                .filter_map(|p| value(p).map(|y| (p.time as f64, y)))
                .collect()
        })
        .collect();
    let peak = series.iter().flatten().map(|(_, y)| *y).fold(0.0, f64::max);
    let top = if peak > 0.0 { peak } else { 1.0 };
    let offset = app.info.utc_offset_ms;
    // Short labels: the chart's left margin is as wide as the first one.
    let when = |at: i64| {
        if report.bucket_ms >= 3_600_000 {
            format::day_clock(at, offset)[..5].to_owned()
        } else {
            format::clock(at, offset)[..5].to_owned()
        }
    };
    let datasets = lines
        .iter()
        .zip(&series)
        .enumerate()
        .map(|(line, ((name, _), points))| {
            let dataset = Dataset::default()
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(theme.series(index + line))
                .data(points);
            match name {
                Some(name) => dataset.name(*name),
                None => dataset,
            }
        })
        .collect();
    let chart = Chart::new(datasets)
        .block(Block::bordered().title(Span::styled(
            fit(&format!(" {title} "), area.width.saturating_sub(2) as usize),
            theme.title(),
        )))
        .x_axis(
            Axis::default()
                .bounds([report.since as f64, report.until as f64])
                .labels([when(report.since), when(report.until)])
                .style(theme.label()),
        )
        .y_axis(
            Axis::default()
                .bounds([0.0, top])
                .labels(["0".to_owned(), label(peak)])
                .style(theme.label()),
        );
    frame.render_widget(chart, area);
}

fn draw_groups(frame: &mut Frame<'_>, area: Rect, title: &str, groups: &[Group], theme: Theme) {
    // Narrow: model names lose their common prefix, and the success rate its column.
    let wide = area.width >= 60;
    let rows: Vec<Row<'_>> = groups
        .iter()
        .map(|g| {
            let name = g.name.as_deref().unwrap_or("(none)");
            let name = if wide {
                name
            } else {
                name.strip_prefix("claude-").unwrap_or(name)
            };
            let mut cells = vec![
                // Model names are what clients sent.
                Cell::from(format::inert(name).into_owned()),
                Cell::from(format::count(g.totals.requests)),
                Cell::from(format::compact(g.totals.total_tokens)),
                Cell::from(format::money(g.totals.cost_usd)),
            ];
            if wide {
                cells.push(Cell::from(format::percent(g.totals.success_rate)));
            }
            Row::new(cells)
        })
        .collect();
    let mut widths = vec![
        Constraint::Min(8),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(8),
    ];
    let mut header = vec!["name", "reqs", "tokens", "cost"];
    if wide {
        widths.push(Constraint::Length(6));
        header.push("ok");
    }
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(theme.header()))
        .block(Block::bordered().title(Span::styled(format!(" {title} "), theme.title())));
    frame.render_widget(table, area);
}
