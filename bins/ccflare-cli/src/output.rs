//! Everything the CLI prints for people: tables that fit 80 columns, colour (only on a terminal
//! and never with `NO_COLOR`, in plain ANSI), and the number formats of the tables. JSON output
//! does not come through here: it is serde's.

use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// The widest line any table is rendered to: an 80-column terminal.
pub const WIDTH: usize = 80;

/// A colour for a cell; plain ANSI SGR codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Color {
    Green,
    Yellow,
    Red,
    Dim,
    Bold,
}

impl Color {
    fn code(self) -> &'static str {
        match self {
            Color::Green => "32",
            Color::Yellow => "33",
            Color::Red => "31",
            Color::Dim => "2",
            Color::Bold => "1",
        }
    }
}

/// Whether to colour, decided once per process.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
    /// Colour only when stdout is a terminal and `NO_COLOR` is unset or empty
    /// (<https://no-color.org>).
    pub fn detect() -> Style {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style {
            color: !no_color && std::io::stdout().is_terminal(),
        }
    }

    pub fn paint(&self, text: &str, color: Option<Color>) -> String {
        match color {
            Some(color) if self.color && !text.is_empty() => {
                format!("\x1b[{}m{text}\x1b[0m", color.code())
            }
            _ => text.to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// One cell: its text and an optional colour, applied after padding so that escape codes
/// never count towards the width. The text is made inert ([`ccflare_core::human::inert`]):
/// cells show model names, paths and error messages that clients and the upstream chose, and
/// an escape sequence among them would act on the operator's terminal.
#[derive(Debug, Clone)]
pub struct Cell {
    text: String,
    color: Option<Color>,
}

impl Cell {
    pub fn colored(text: impl Into<String>, color: Option<Color>) -> Cell {
        let text = text.into();
        let text = match inert(&text) {
            Cow::Borrowed(_) => text,
            Cow::Owned(clean) => clean,
        };
        Cell { text, color }
    }
}

impl<T: Into<String>> From<T> for Cell {
    fn from(text: T) -> Cell {
        Cell::colored(text, None)
    }
}

enum Line {
    Row(Vec<Cell>),
    Rule,
}

/// Columns sized to their widest cell, two spaces apart. When the table would be wider than
/// [`WIDTH`], the flexible column (a name, a model, a value) gives way: shortened with "…", or
/// for text that must be read whole (an error, a path) wrapped onto more lines.
pub struct Table {
    headers: Vec<(&'static str, Align)>,
    flex: Option<usize>,
    wrap: bool,
    lines: Vec<Line>,
}

const GAP: usize = 2;
/// The flexible column is never cut below this.
const MIN_FLEX: usize = 8;

/// Width in terminal columns: East Asian wide characters and most emoji take two, combining
/// marks none (Unicode's East Asian Width, through `unicode-width`).
pub fn width(text: &str) -> usize {
    text.width()
}

/// The longest start of `text` at most `max` columns wide, and the rest.
fn split_at_width(text: &str, max: usize) -> (&str, &str) {
    let mut used = 0;
    for (at, c) in text.char_indices() {
        used += c.width().unwrap_or(0);
        if used > max {
            return text.split_at(at);
        }
    }
    (text, "")
}

/// Cuts `text` to `max` columns, ending with "…" when something was cut.
pub fn truncate(text: &str, max: usize) -> String {
    if width(text) <= max {
        return text.to_owned();
    }
    let (kept, _) = split_at_width(text, max.saturating_sub(1));
    format!("{kept}…")
}

/// Breaks `text` into lines of at most `max` columns, at spaces where it can.
pub fn wrap_text(text: &str, max: usize) -> Vec<String> {
    let max = max.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let mut word = word.to_owned();
        let needed = if line.is_empty() {
            width(&word)
        } else {
            width(&line) + 1 + width(&word)
        };
        if needed <= max {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(&word);
            continue;
        }
        if !line.is_empty() {
            lines.push(std::mem::take(&mut line));
        }
        // A word longer than a line (a path, a URL) is cut where the line ends (after at least
        // one character, should that one be wider than the line).
        while width(&word) > max {
            let (mut head, _) = split_at_width(&word, max);
            if head.is_empty() {
                head = &word[..word.chars().next().map_or(0, char::len_utf8)];
            }
            let rest = word[head.len()..].to_owned();
            lines.push(head.to_owned());
            word = rest;
        }
        line = word;
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

fn pad(text: &str, to: usize, align: Align) -> String {
    let fill = " ".repeat(to.saturating_sub(width(text)));
    match align {
        Align::Left => format!("{text}{fill}"),
        Align::Right => format!("{fill}{text}"),
    }
}

impl Table {
    pub fn new(headers: &[(&'static str, Align)]) -> Table {
        Table {
            headers: headers.to_vec(),
            flex: None,
            wrap: false,
            lines: Vec::new(),
        }
    }

    /// Marks the column that gives way when the table is too wide.
    pub fn flex(mut self, column: usize) -> Table {
        self.flex = Some(column);
        self
    }

    /// Wraps the flexible column instead of shortening it.
    pub fn wrap(mut self) -> Table {
        self.wrap = true;
        self
    }

    pub fn row(&mut self, cells: Vec<Cell>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.lines.push(Line::Row(cells));
    }

    /// A thin rule across the table (before a total).
    pub fn rule(&mut self) {
        self.lines.push(Line::Rule);
    }

    fn widths(&self) -> Vec<usize> {
        let mut widths: Vec<usize> = self.headers.iter().map(|(h, _)| width(h)).collect();
        for line in &self.lines {
            if let Line::Row(cells) = line {
                for (w, cell) in widths.iter_mut().zip(cells) {
                    *w = (*w).max(width(&cell.text));
                }
            }
        }
        let total: usize = widths.iter().sum::<usize>() + GAP * (widths.len() - 1);
        if let Some(flex) = self.flex
            && total > WIDTH
        {
            let over = total - WIDTH;
            widths[flex] = widths[flex].saturating_sub(over).max(MIN_FLEX);
        }
        widths
    }

    pub fn render(&self, style: &Style) -> String {
        let widths = self.widths();
        let total: usize = widths.iter().sum::<usize>() + GAP * (widths.len() - 1);
        let gap = " ".repeat(GAP);
        let mut out = String::new();
        let header: Vec<String> = self
            .headers
            .iter()
            .zip(&widths)
            .map(|((h, align), w)| style.paint(&pad(h, *w, *align), Some(Color::Bold)))
            .collect();
        out.push_str(header.join(&gap).trim_end());
        out.push('\n');
        for line in &self.lines {
            match line {
                Line::Rule => {
                    out.push_str(&style.paint(&"─".repeat(total), Some(Color::Dim)));
                }
                Line::Row(cells) => {
                    let wrapped = match self.flex {
                        Some(flex) if self.wrap => wrap_text(&cells[flex].text, widths[flex]),
                        _ => Vec::new(),
                    };
                    let rendered: Vec<String> = cells
                        .iter()
                        .enumerate()
                        .zip(&self.headers)
                        .zip(&widths)
                        .map(|(((i, cell), (_, align)), w)| {
                            let text = match wrapped.first() {
                                Some(first) if Some(i) == self.flex => first.clone(),
                                _ => truncate(&cell.text, *w),
                            };
                            style.paint(&pad(&text, *w, *align), cell.color)
                        })
                        .collect();
                    out.push_str(rendered.join(&gap).trim_end());
                    if let Some(flex) = self.flex {
                        let indent: usize = widths[..flex].iter().map(|w| w + GAP).sum();
                        for more in wrapped.iter().skip(1) {
                            out.push('\n');
                            out.push_str(&" ".repeat(indent));
                            out.push_str(&style.paint(more, cells[flex].color));
                        }
                    }
                }
            }
            out.push('\n');
        }
        out
    }
}

/// Writes to stdout; a reader that went away (`| head`) ends the program quietly instead of
/// with a panic.
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        other => Ok(other?),
    }
}

/// Prints a value as pretty JSON and a newline.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    print(&format!("{}\n", serde_json::to_string_pretty(value)?))
}

// Numbers read the same in the CLI and the terminal UI, and outside text is made inert the same
// way: one definition, in core.
pub use ccflare_core::human::{compact, count, inert, money, percent};

/// A latency as `ccflare_core::human::latency` writes it; `-` when unknown.
pub fn latency(ms: Option<i64>) -> String {
    ms.map_or_else(|| "-".to_owned(), ccflare_core::human::latency)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: Style = Style { color: false };

    #[test]
    fn tables_align_and_shrink_the_flexible_column_to_80() {
        let mut table = Table::new(&[("NAME", Align::Left), ("N", Align::Right)]).flex(0);
        table.row(vec!["short".into(), "1".into()]);
        table.row(vec!["x".repeat(100).into(), "1,234".into()]);
        let text = table.render(&PLAIN);
        let lines: Vec<&str> = text.lines().collect();
        // The name column gives way: 73 + 2 + 5 = 80.
        assert_eq!(lines[0], format!("NAME{}N", " ".repeat(69 + 2 + 4)));
        assert!(lines.iter().all(|l| width(l) <= WIDTH), "{text}");
        assert!(lines[2].contains("xxx…  1,234"), "{text}");
        assert!(lines[1].starts_with("short ") && lines[1].ends_with("    1"));
    }

    #[test]
    fn wide_characters_take_two_columns_and_still_line_up() {
        assert_eq!(width("회사"), 4);
        assert_eq!(width("🚀 go"), 5);
        assert_eq!(width("café"), 4);
        let mut table = Table::new(&[("NAME", Align::Left), ("REQUESTS", Align::Right)]);
        table.row(vec!["회사-계정".into(), "12".into()]);
        table.row(vec!["🚀 rocket".into(), "3,456".into()]);
        table.row(vec!["plain".into(), "7".into()]);
        let text = table.render(&PLAIN);
        let lines: Vec<&str> = text.lines().collect();
        // The right-aligned column ends in the same terminal column on every line, which is
        // where the header's ends: each line is as wide as the header.
        assert!(lines.iter().all(|l| width(l) == width(lines[0])), "{text}");
        assert_eq!(lines[1], format!("회사-계정{}12", " ".repeat(2 + 8 - 2)));
        assert!(lines[2].starts_with("🚀 rocket  "), "{text}");

        // Cut to fit, by columns: a name of 100 wide characters leaves the table at 80.
        let mut table = Table::new(&[("NAME", Align::Left), ("N", Align::Right)]).flex(0);
        table.row(vec!["가".repeat(100).into(), "1".into()]);
        let text = table.render(&PLAIN);
        assert!(text.lines().all(|l| width(l) <= WIDTH), "{text}");
        assert!(text.lines().nth(1).unwrap().contains("가…"), "{text}");
        assert_eq!(truncate("가나다", 4), "가…");
        assert_eq!(wrap_text("가나다라", 5), ["가나", "다라"]);
        assert_eq!(wrap_text("가나", 1), ["가", "나"]);
    }

    #[test]
    fn wrapped_columns_continue_under_themselves() {
        assert_eq!(wrap_text("a bb ccc", 4), ["a bb", "ccc"]);
        assert_eq!(wrap_text("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        assert_eq!(wrap_text("", 4), [""]);
        let mut table = Table::new(&[("K", Align::Left), ("DETAIL", Align::Left)])
            .flex(1)
            .wrap();
        table.row(vec!["k".into(), "word ".repeat(30).trim_end().into()]);
        let text = table.render(&PLAIN);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines.iter().all(|l| width(l) <= WIDTH), "{text}");
        assert!(lines[2].starts_with("   word"), "{text}");
    }

    #[test]
    fn colour_wraps_after_padding_and_only_when_asked() {
        let style = Style { color: true };
        assert_eq!(style.paint("ok", Some(Color::Green)), "\x1b[32mok\x1b[0m");
        assert_eq!(PLAIN.paint("ok", Some(Color::Green)), "ok");
        let mut table = Table::new(&[("A", Align::Left), ("B", Align::Left)]);
        table.row(vec![Cell::colored("x", Some(Color::Red)), "y".into()]);
        let text = table.render(&style);
        assert!(text.contains("\x1b[31mx\x1b[0m  y"), "{text:?}");
    }

    #[test]
    fn escape_sequences_in_cells_are_inert() {
        let mut table = Table::new(&[("MODEL", Align::Left), ("N", Align::Right)]);
        table.row(vec!["claude\x1b]0;pwned\x07\x1b[2J-x".into(), "1".into()]);
        let text = table.render(&PLAIN);
        assert!(
            !text.contains('\x1b') && !text.contains("pwned"),
            "{text:?}"
        );
        assert!(text.contains("claude-x  1"), "{text:?}");
    }

    #[test]
    fn number_formats() {
        assert_eq!(count(0), "0");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(-1_000), "-1,000");
        let compacts = [
            (999, "999"),
            (1_000, "1.0k"),
            (9_949, "9.9k"),
            (9_950, "10k"),
            (345_000, "345k"),
            (999_499, "999k"),
            (999_500, "1.0M"),
            (12_300_000, "12M"),
            (1_500_000_000, "1.5B"),
        ];
        for (n, expected) in compacts {
            assert_eq!(compact(n), expected, "{n}");
        }
        assert_eq!(money(0.0), "$0");
        assert_eq!(money(0.00123), "$0.0012");
        assert_eq!(money(12.345), "$12.35");
        assert_eq!(money(12_345.6), "$12,346");
        assert_eq!(percent(0.0123), "1.2%");
        assert_eq!(latency(Some(850)), "850ms");
        assert_eq!(latency(Some(1_250)), "1.2s");
        assert_eq!(latency(Some(42_000)), "42s");
        assert_eq!(latency(Some(125_000)), "2m 05s");
        assert_eq!(latency(None), "-");
    }
}
