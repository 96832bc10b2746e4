//! What the TUI's tests share: an [`App`] opened on a [`FakeSource`] with every load done,
//! keys pressed with their commands run to the end, and a frame drawn to text.

#![allow(dead_code)]

use ccflare_tui::app::Command;
use ccflare_tui::run::load;
use ccflare_tui::{App, Event, FakeSource, Source, Theme};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

/// Runs `commands` on the fake, feeding each outcome back, until no command is left; returns
/// the commands seen (Quit included).
pub async fn settle(app: &mut App, fake: &FakeSource, commands: Vec<Command>) -> Vec<Command> {
    let mut seen = Vec::new();
    let mut queue = commands;
    while !queue.is_empty() {
        let command = queue.remove(0);
        seen.push(command.clone());
        if let Some(outcome) = load(fake.clone(), command).await {
            queue.extend(app.update(Event::Done(outcome)));
        }
    }
    seen
}

/// The UI as the run loop opens it, with its first loads done.
pub async fn opened(fake: &FakeSource) -> App {
    let mut app = App::new(fake.info(), fake.now(), fake.health(), fake.settings());
    let (history, _) = fake.subscribe_logs();
    app.update(Event::LogHistory(history));
    let commands = app.start();
    settle(&mut app, fake, commands).await;
    app
}

pub fn key(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
}

pub fn ctrl(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
}

pub fn code(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

/// Presses one key and runs what it asks for; returns the commands.
pub async fn press(app: &mut App, fake: &FakeSource, event: KeyEvent) -> Vec<Command> {
    let commands = app.update(Event::Key(event));
    settle(app, fake, commands).await
}

/// Types `text` one key at a time (into a dialog's field).
pub async fn type_text(app: &mut App, fake: &FakeSource, text: &str) {
    for c in text.chars() {
        press(app, fake, key(c)).await;
    }
}

/// The frame as text: one line per row, trailing spaces cut.
pub fn render(app: &App, width: u16, height: u16, theme: Theme) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("a test terminal");
    terminal
        .draw(|frame| ccflare_tui::draw(frame, app, theme))
        .expect("drawing to a test terminal");
    text_of(terminal.backend().buffer())
}

pub fn text_of(buffer: &ratatui::buffer::Buffer) -> String {
    let area = buffer.area;
    let mut lines = Vec::new();
    for y in area.top()..area.bottom() {
        let mut line = String::new();
        for x in area.left()..area.right() {
            line.push_str(buffer[(x, y)].symbol());
        }
        lines.push(line.trim_end().to_owned());
    }
    lines.join("\n")
}
