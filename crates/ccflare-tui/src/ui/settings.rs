//! Tab 6, Strategy & settings: the options a running server changes at once (strategy,
//! session timeout, retention), where each is pinned by a flag or the environment, and what
//! the selected one means.

use super::{Theme, field};
use crate::app::{App, SETTING_KEYS};
use crate::format::{self, fit};
use crate::source::{RETENTION_KEY, SESSION_TIMEOUT_KEY};
use ccflare_core::config::Strategy;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};

fn strategy_help(strategy: Strategy) -> &'static str {
    match strategy {
        Strategy::Session => {
            "one account serves a session until it is unavailable or the session timeout ends \
             its turn; new sessions go to the next account"
        }
        Strategy::RoundRobin => "each new session or request goes to the next account in turn",
        Strategy::LeastRequests => "fewest requests in flight, then fewest in total",
        Strategy::Priority => "fill the highest priority first (the lowest priority number)",
        Strategy::Headroom => "the most remaining capacity by the last rate-limit headers",
    }
}

fn value(app: &App, key: &str) -> String {
    let settings = &app.settings;
    match key {
        SESSION_TIMEOUT_KEY => format!(
            "{} ({} s)",
            format::duration(settings.session_timeout_s as i64 * 1000),
            settings.session_timeout_s
        ),
        RETENTION_KEY if settings.retention_days == 0 => "keep everything".to_owned(),
        RETENTION_KEY => format!("{} days", settings.retention_days),
        _ => settings.strategy.as_str().to_owned(),
    }
}

fn label(key: &str) -> &'static str {
    match key {
        SESSION_TIMEOUT_KEY => "session timeout",
        RETENTION_KEY => "retention",
        _ => "strategy",
    }
}

pub fn draw(frame: &mut Frame<'_>, area: Rect, app: &App, theme: Theme) {
    let [list, about] = Layout::vertical([
        Constraint::Length(SETTING_KEYS.len() as u16 + 2),
        Constraint::Min(0),
    ])
    .areas(area);
    let width = list.width.saturating_sub(2) as usize;
    let lines: Vec<Line<'_>> = SETTING_KEYS
        .iter()
        .enumerate()
        .map(|(at, key)| {
            let pinned = if app.settings.is_pinned(key) {
                "  set by a flag or the environment"
            } else {
                ""
            };
            let text = fit(
                &format!(" {:<17}{}{pinned}", label(key), value(app, key)),
                width,
            );
            let style = if at == app.setting_selected {
                theme.selected()
            } else {
                theme.plain()
            };
            Line::from(Span::styled(format!("{text:<width$}"), style))
        })
        .collect();
    frame.render_widget(
        Paragraph::new(lines)
            .block(Block::bordered().title(Span::styled(" Strategy & settings ", theme.title()))),
        list,
    );
    let key = SETTING_KEYS[app.setting_selected.min(SETTING_KEYS.len() - 1)];
    let about_text = match key {
        SESSION_TIMEOUT_KEY => {
            "Seconds a session stays on its account after its last request (session \
             affinity keeps prompt caches warm)."
                .to_owned()
        }
        RETENTION_KEY => "Days of request rows (and their rollups) kept; older whole days are \
                          deleted in small batches. 0 keeps everything."
            .to_owned(),
        _ => format!(
            "{}: {}.",
            app.settings.strategy.as_str(),
            strategy_help(app.settings.strategy)
        ),
    };
    let lines = vec![
        Line::from(Span::raw(about_text)),
        Line::raw(""),
        field(
            "",
            0,
            vec![Span::styled(
                "Enter changes it: applied to the running server at once and stored, as \
                 PATCH /api/config does. A flag or an environment variable outranks it.",
                theme.label(),
            )],
            theme,
        ),
    ];
    frame.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: true }).block(
            Block::bordered().title(Span::styled(format!(" {} ", label(key)), theme.title())),
        ),
        about,
    );
}
