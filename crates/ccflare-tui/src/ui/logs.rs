//! Tab 5, Logs: the server's log lines as they come (info and above, from the same feed as
//! `GET /api/logs/stream`), newest at the bottom, with the level filter, the search and the
//! pause in the title.

use super::Theme;
use crate::app::{App, Level};
use crate::format::{self, fit};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};

fn title(app: &App) -> String {
    let logs = &app.logs;
    let mut parts = vec!["Logs".to_owned(), logs.level.as_str().to_owned()];
    if !logs.search.is_empty() {
        parts.push(format!("\"{}\"", logs.search));
    }
    if logs.paused_at.is_some() {
        parts.push(format!("paused, {} new", format::count(logs.held() as i64)));
    }
    if logs.scroll > 0 {
        parts.push(format!("{} lines up", logs.scroll));
    }
    if logs.missed > 0 {
        parts.push(format!("{} skipped (UI behind)", logs.missed));
    }
    format!(" {} ", parts.join(" · "))
}

pub fn draw(frame: &mut Frame<'_>, area: Rect, app: &App, theme: Theme) {
    let block = Block::bordered().title(Span::styled(
        fit(&title(app), area.width.saturating_sub(2) as usize),
        theme.title(),
    ));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let visible = app.logs.visible();
    let height = inner.height as usize;
    let end = visible.len().saturating_sub(app.logs.scroll);
    let start = end.saturating_sub(height);
    let width = inner.width as usize;
    let offset = app.info.utc_offset_ms;
    let lines: Vec<Line<'_>> = visible[start..end]
        .iter()
        .map(|line| {
            let level_style = match line.level {
                Level::Error => theme.bad(),
                Level::Warn => theme.warn(),
                _ => theme.label(),
            };
            let time = line
                .time
                .map_or("        ".to_owned(), |t| format::clock(t, offset));
            let text = if line.fields.is_empty() {
                line.message.clone()
            } else {
                format!("{}  {}", line.message, line.fields)
            };
            let rest = width.saturating_sub(15);
            Line::from(vec![
                Span::styled(time, theme.label()),
                Span::raw(" "),
                Span::styled(format!("{:<5}", line.level.as_str()), level_style),
                Span::raw(" "),
                Span::raw(fit(&text, rest)),
            ])
        })
        .collect();
    if lines.is_empty() {
        let text = if app.logs.lines.is_empty() {
            "no log lines yet"
        } else {
            "no line matches (c clears the search and level filter)"
        };
        frame.render_widget(Paragraph::new(Span::styled(text, theme.label())), inner);
    } else {
        frame.render_widget(Paragraph::new(lines), inner);
    }
}
