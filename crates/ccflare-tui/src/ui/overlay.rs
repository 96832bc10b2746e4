//! What is drawn over a tab: the help screen (generated from the keymap for the screen
//! beneath it), the dialogs (text fields; masked ones show one `•` per character, never the
//! text) and the strategy picker.

use super::{Theme, centered};
use crate::app::{App, Dialog, DialogKind, Modal, Picker};
use crate::format::{self, fit};
use crate::keymap::{self, Screen};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};

pub fn help(frame: &mut Frame<'_>, area: Rect, app: &App, theme: Theme) {
    let screen = app.screen_under_help();
    let entries = keymap::help_lines(screen);
    let box_area = centered(area, area.width.min(100), area.height);
    frame.render_widget(Clear, box_area);
    let block = Block::bordered().title(Span::styled(" Keys (Esc, ? or q closes) ", theme.title()));
    let inner = block.inner(box_area);
    frame.render_widget(block, box_area);
    let height = inner.height.max(1) as usize;
    let columns = entries.len().div_ceil(height).max(1);
    let areas =
        Layout::horizontal(vec![Constraint::Ratio(1, columns as u32); columns]).split(inner);
    for (column, area) in entries.chunks(height).zip(areas.iter()) {
        let width = area.width as usize;
        let key_width = 12.min(width / 3);
        let lines: Vec<Line<'_>> = column
            .iter()
            .map(|(heading, keys, text)| match heading {
                Some(heading) => Line::from(Span::styled(fit(heading, width), theme.header())),
                None => Line::from(vec![
                    Span::styled(
                        format!(" {:<key_width$}", fit(keys, key_width.saturating_sub(1))),
                        theme.title(),
                    ),
                    Span::raw(fit(text, width.saturating_sub(key_width + 2))),
                ]),
            })
            .collect();
        frame.render_widget(Paragraph::new(lines), *area);
    }
}

pub fn modal(frame: &mut Frame<'_>, area: Rect, modal: &Modal, app: &App, theme: Theme) {
    match modal {
        Modal::Dialog(dialog) => draw_dialog(frame, area, dialog, app, theme),
        Modal::Picker(picker) => draw_picker(frame, area, picker, theme),
    }
}

/// `text` cut into lines of `width` characters (URLs have no spaces to wrap at).
fn chunks(text: &str, width: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(width.max(1))
        .map(|c| c.iter().collect())
        .collect()
}

/// Wraps prose at spaces to `width`.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

fn hint_line(screen: Screen, theme: Theme) -> Line<'static> {
    let mut spans = Vec::new();
    for (keys, hint) in keymap::hints(screen) {
        spans.push(Span::styled(keys, theme.header()));
        spans.push(Span::styled(format!(" {hint}  "), theme.label()));
    }
    Line::from(spans)
}

fn draw_dialog(frame: &mut Frame<'_>, area: Rect, dialog: &Dialog, app: &App, theme: Theme) {
    let login = matches!(dialog.kind, DialogKind::LoginCode { .. });
    // A login takes the whole width (no side borders): the address copies cleanly.
    let width = if login {
        area.width
    } else {
        area.width.saturating_sub(4).min(76)
    };
    let inner_width = if login {
        width as usize
    } else {
        width.saturating_sub(2) as usize
    };
    let mut lines: Vec<Line<'_>> = Vec::new();
    match &dialog.kind {
        DialogKind::AddApiKey => {
            lines.push(Line::from(Span::styled(
                "Paste a Console API key (sk-ant-…); it is stored and never shown again.",
                theme.label(),
            )));
        }
        DialogKind::LoginName(_) => {
            lines.push(Line::from(Span::styled(
                "Name the new account; the next step shows the login page to open.",
                theme.label(),
            )));
        }
        DialogKind::LoginCode { start, .. } => {
            if let Some(warning) = &start.warning {
                for line in wrap(warning, inner_width) {
                    lines.push(Line::from(Span::styled(line, theme.warn())));
                }
            }
            lines.push(Line::from(Span::styled(
                format!(
                    "Open this address, log in, and paste the code it shows (expires in {}):",
                    format::duration(start.expires_at - app.now)
                ),
                theme.label(),
            )));
            // The address alone on its lines, without borders beside it, so that it can be
            // selected and copied from the terminal.
            for line in chunks(&start.authorize_url, inner_width) {
                lines.push(Line::from(Span::raw(line)));
            }
        }
        DialogKind::Remove { name } => {
            lines.push(Line::from(Span::styled(
                format!("Removing {name} deletes its credential; its requests stay recorded."),
                theme.label(),
            )));
            lines.push(Line::from(Span::styled(
                format!("Type {name} to confirm."),
                theme.label(),
            )));
        }
        DialogKind::SessionTimeout => lines.push(Line::from(Span::styled(
            "Seconds a session stays on its account after its last request.",
            theme.label(),
        ))),
        DialogKind::Retention => lines.push(Line::from(Span::styled(
            "Days of requests to keep; older whole days are deleted.",
            theme.label(),
        ))),
        DialogKind::CreateClientKey => lines.push(Line::from(Span::styled(
            "A key for one person or tool to send to /v1; it is shown once.",
            theme.label(),
        ))),
        DialogKind::ClientKeyCreated { key, .. } => {
            lines.push(Line::from(Span::styled(
                "Copy it now: it is not shown again (only its hash is stored).",
                theme.warn(),
            )));
            // The key alone on its lines, so that it can be selected and copied.
            for line in chunks(key.expose(), inner_width) {
                lines.push(Line::from(Span::styled(line, theme.header())));
            }
            lines.push(Line::from(Span::styled(
                "Clients send it as their API key (ANTHROPIC_API_KEY=ccf_…).",
                theme.label(),
            )));
        }
        DialogKind::Rename { .. }
        | DialogKind::Priority { .. }
        | DialogKind::RequestFilter
        | DialogKind::LogSearch => {}
    }
    lines.push(Line::raw(""));
    for (at, field) in dialog.fields.iter().enumerate() {
        let focused = at == dialog.focus;
        let shown = if field.masked {
            "•".repeat(field.text.chars().count())
        } else {
            field.text.clone()
        };
        let label = format!("{} {}: ", if focused { "›" } else { " " }, field.label);
        let room = inner_width.saturating_sub(label.chars().count() + 1);
        // The end of a long value is what was typed last: show that.
        let skip = shown.chars().count().saturating_sub(room);
        let visible: String = shown.chars().skip(skip).collect();
        let cursor = if focused && !dialog.busy { "█" } else { "" };
        lines.push(Line::from(vec![
            Span::styled(label, theme.label()),
            Span::styled(format!("{visible}{cursor}"), theme.header()),
        ]));
    }
    lines.push(Line::raw(""));
    if dialog.busy {
        lines.push(Line::from(Span::styled("working…", theme.label())));
    } else if let Some(error) = &dialog.error {
        for line in wrap(error, inner_width) {
            lines.push(Line::from(Span::styled(line, theme.bad())));
        }
    }
    lines.push(hint_line(Screen::Dialog, theme));
    let height = (lines.len() as u16 + 2).min(area.height);
    let box_area = if login {
        // Full width, top and bottom borders only: the address copies cleanly.
        let height = height.min(area.height);
        Rect {
            x: area.x,
            y: area.y + (area.height - height) / 2,
            width: area.width,
            height,
        }
    } else {
        centered(area, width, height)
    };
    frame.render_widget(Clear, box_area);
    let block = if login {
        Block::new().borders(Borders::TOP | Borders::BOTTOM)
    } else {
        Block::bordered()
    }
    .title(Span::styled(
        format!(" {} ", dialog.kind.title()),
        theme.title(),
    ));
    frame.render_widget(Paragraph::new(lines).block(block), box_area);
}

fn draw_picker(frame: &mut Frame<'_>, area: Rect, picker: &Picker, theme: Theme) {
    let mut lines: Vec<Line<'_>> = picker
        .options
        .iter()
        .enumerate()
        .map(|(at, strategy)| {
            let marker = if at == picker.selected { "›" } else { " " };
            let text = format!("{marker}{:<16}", strategy.as_str());
            if at == picker.selected {
                Line::from(Span::styled(text, theme.selected()))
            } else {
                Line::from(Span::raw(text))
            }
        })
        .collect();
    lines.push(Line::raw(""));
    if picker.busy {
        lines.push(Line::from(Span::styled("working…", theme.label())));
    } else if let Some(error) = &picker.error {
        for line in wrap(error, 40) {
            lines.push(Line::from(Span::styled(line, theme.bad())));
        }
    }
    lines.push(hint_line(Screen::Picker, theme));
    let box_area = centered(area, 44, lines.len() as u16 + 2);
    frame.render_widget(Clear, box_area);
    frame.render_widget(
        Paragraph::new(lines)
            .block(Block::bordered().title(Span::styled(" Strategy ", theme.title()))),
        box_area,
    );
}
