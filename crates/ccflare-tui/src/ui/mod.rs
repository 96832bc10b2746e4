//! Drawing: pure functions from the [`App`] state to a frame. Nothing here changes state or
//! reads a clock — the time shown is `app.now`, the server's clock at the last tick — so a
//! `TestBackend` frame is the same every run.
//!
//! The frame is a tab bar, the current tab and a footer (key hints, or the latest notice);
//! the help screen and dialogs are drawn over it. Below [`MIN_WIDTH`]×[`MIN_HEIGHT`] the frame
//! is one line saying so instead of a broken layout.

mod accounts;
mod analytics;
mod logs;
mod overlay;
mod overview;
mod requests;
mod settings;
pub mod theme;

use crate::app::{App, Tab};
use crate::format::fit;
use crate::keymap;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
pub use theme::Theme;

/// The smallest terminal the layout is made for.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 16;

/// Draws the whole screen.
pub fn draw(frame: &mut Frame<'_>, app: &App, theme: Theme) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let text = format!(
            "ccflare needs at least {MIN_WIDTH}×{MIN_HEIGHT}; this terminal is {}×{}",
            area.width, area.height
        );
        frame.render_widget(
            Paragraph::new(fit(&text, area.width as usize)),
            Rect { height: 1, ..area },
        );
        return;
    }
    let [bar, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_tab_bar(frame, bar, app, theme);
    match app.tab {
        Tab::Overview => overview::draw(frame, body, app, theme),
        Tab::Accounts => accounts::draw(frame, body, app, theme),
        Tab::Requests => requests::draw(frame, body, app, theme),
        Tab::Analytics => analytics::draw(frame, body, app, theme),
        Tab::Logs => logs::draw(frame, body, app, theme),
        Tab::Settings => settings::draw(frame, body, app, theme),
    }
    draw_footer(frame, footer, app, theme);
    if app.help {
        overlay::help(frame, body, app, theme);
    } else if let Some(modal) = &app.modal {
        overlay::modal(frame, body, modal, app, theme);
    }
}

fn draw_tab_bar(frame: &mut Frame<'_>, area: Rect, app: &App, theme: Theme) {
    let mut spans = vec![Span::styled(" ccflare ", theme.title()), Span::raw("│")];
    for tab in Tab::ALL {
        let style = if tab == app.tab {
            theme.active_tab()
        } else {
            theme.plain()
        };
        spans.push(Span::raw(" "));
        spans.push(Span::styled(
            format!("{} {}", tab.index() + 1, tab.title()),
            style,
        ));
        spans.push(Span::raw(" "));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_footer(frame: &mut Frame<'_>, area: Rect, app: &App, theme: Theme) {
    let width = area.width as usize;
    let line = match &app.notice {
        Some(notice) => {
            let style = if notice.error {
                theme.bad()
            } else {
                theme.good()
            };
            Line::from(Span::styled(
                fit(&format!(" {}", notice.text), width),
                style,
            ))
        }
        None => {
            let mut spans = Vec::new();
            let mut used = 0;
            for (keys, hint) in keymap::hints(app.screen()) {
                let len = keys.chars().count() + hint.chars().count() + 3;
                if used + len > width {
                    break;
                }
                used += len;
                spans.push(Span::raw(" "));
                spans.push(Span::styled(keys, theme.header()));
                spans.push(Span::styled(format!(" {hint} "), theme.label()));
            }
            Line::from(spans)
        }
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// `label value` with the label dimmed, for the key-value panes.
fn field<'a>(label: &'a str, width: usize, value: Vec<Span<'a>>, theme: Theme) -> Line<'a> {
    let mut spans = vec![Span::styled(format!("{label:<width$}"), theme.label())];
    spans.extend(value);
    Line::from(spans)
}

/// A rectangle of `width`×`height` in the middle of `area` (clipped to it).
fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    }
}

/// The first row to show so that `selected` is visible in `height` rows.
fn scroll_offset(selected: Option<usize>, height: usize) -> usize {
    match selected {
        Some(at) if height > 0 && at >= height => at + 1 - height,
        _ => 0,
    }
}
