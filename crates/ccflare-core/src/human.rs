//! Numbers and times as people read them in a terminal — "2 min ago", "4m 10s", "1,234",
//! "12k", "$0.0421", "850ms", "98.5%" — one definition shared by `ccflare-cli` and the
//! terminal UI, so the same figure reads the same in both. Pure functions of their
//! arguments (the caller passes `now`), so snapshot tests can fix the clock.
//!
//! Also [`inert`], which every text from outside (a client's model name or path, an upstream's
//! error message) goes through before it reaches the operator's terminal.

use crate::Millis;
use std::borrow::Cow;
use std::iter::Peekable;
use std::str::Chars;

const SECOND: Millis = 1_000;
const MINUTE: Millis = 60 * SECOND;
const HOUR: Millis = 60 * MINUTE;
const DAY: Millis = 24 * HOUR;

/// How long ago `then` was, in one unit: "12 s ago", "2 min ago", "3 h ago", "5 d ago"; "never"
/// without a time, and "just now" for the current second or a time slightly in the future
/// (another machine's clock).
pub fn ago(now: Millis, then: Option<Millis>) -> String {
    let Some(then) = then else {
        return "never".to_owned();
    };
    let elapsed = now.saturating_sub(then);
    if elapsed < SECOND {
        "just now".to_owned()
    } else if elapsed < MINUTE {
        format!("{} s ago", elapsed / SECOND)
    } else if elapsed < HOUR {
        format!("{} min ago", elapsed / MINUTE)
    } else if elapsed < DAY {
        format!("{} h ago", elapsed / HOUR)
    } else {
        format!("{} d ago", elapsed / DAY)
    }
}

/// A duration in its two largest units: "45s", "4m 10s", "2h 05m", "3d 4h". Rounded up to
/// the second, so a reset 200 ms away reads "1s" rather than "0s".
pub fn duration(ms: Millis) -> String {
    let seconds = (ms.max(0) + SECOND - 1) / SECOND;
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds % 86_400 / 3_600,
        seconds % 3_600 / 60,
        seconds % 60,
    );
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

/// A count with thousands separators: "1,234,567".
pub fn count(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A token count in at most four characters: "999", "1.2k", "345k", "12M", "1.5B".
pub fn compact(n: i64) -> String {
    if n.abs() < 1000 {
        return n.to_string();
    }
    let mut value = n as f64;
    for unit in ["k", "M", "B", "T"] {
        value /= 1000.0;
        if value.abs() < 9.95 {
            return format!("{value:.1}{unit}");
        }
        if value.abs() < 999.5 {
            return format!("{value:.0}{unit}");
        }
    }
    format!("{value:.0}T")
}

/// Dollars: four decimals below a dollar (one request's cost), cents up to a thousand, whole
/// dollars with separators above.
pub fn money(usd: f64) -> String {
    if usd == 0.0 {
        "$0".to_owned()
    } else if usd < 1.0 {
        format!("${usd:.4}")
    } else if usd < 1000.0 {
        format!("${usd:.2}")
    } else {
        format!("${}", count(usd.round() as i64))
    }
}

/// A fraction as a percentage with one decimal: 0.985 → "98.5%".
pub fn percent(fraction: f64) -> String {
    format!("{:.1}%", fraction * 100.0)
}

/// A latency: "850ms", "1.2s", "12s", "2m 05s".
pub fn latency(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 10_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 60_000 {
        format!("{}s", ms / 1000)
    } else {
        duration(ms)
    }
}

/// Text from outside made safe to print on a terminal: escape sequences are removed whole
/// (CSI such as `ESC [2J`, OSC such as `ESC ]0;title BEL` — which can retitle the window, set
/// the clipboard or make links —, DCS, SOS, PM and APC strings, and two-character ones), their
/// one-character C1 forms too, and every other control character is dropped: C0, DEL, C1, and
/// the bidirectional overrides and isolates that would reorder what is shown after them.
/// Newlines, carriage returns and tabs become spaces, so one field stays on one line. Clean
/// text (nearly all of it) is returned as it is, without a copy.
pub fn inert(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() || is_bidi_control(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => skip_escape(&mut chars),
            '\u{9b}' => skip_csi(&mut chars),
            // C1 DCS, SOS, OSC, PM, APC: a string up to its terminator.
            '\u{90}' | '\u{98}' | '\u{9d}' | '\u{9e}' | '\u{9f}' => skip_string(&mut chars),
            '\t' | '\n' | '\r' => out.push(' '),
            c if c.is_control() || is_bidi_control(c) => {}
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Unicode's explicit directional formatting characters (embeddings, overrides, isolates, and
/// the marks): invisible, but they reorder the text around them.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// After an ESC: the rest of the sequence it starts.
fn skip_escape(chars: &mut Peekable<Chars<'_>>) {
    match chars.peek() {
        Some('[') => {
            chars.next();
            skip_csi(chars);
        }
        Some(']' | 'P' | 'X' | '^' | '_') => {
            chars.next();
            skip_string(chars);
        }
        // Intermediate bytes, then one final byte (`ESC ( B`, `ESC 7`, `ESC c`).
        Some(' '..='/') => {
            while chars.next_if(|c| matches!(c, ' '..='/')).is_some() {}
            chars.next_if(|c| matches!(c, '0'..='~'));
        }
        Some('0'..='~') => {
            chars.next();
        }
        // A lone ESC: dropped, and what follows is ordinary text.
        _ => {}
    }
}

/// A control sequence's parameters and intermediates up to its final byte (`ESC [ 1 ; 31 m`).
/// Anything else ends it, the final byte included.
fn skip_csi(chars: &mut Peekable<Chars<'_>>) {
    while chars
        .next_if(|c| matches!(c, '0'..='?' | ' '..='/'))
        .is_some()
    {}
    chars.next_if(|c| matches!(c, '@'..='~'));
}

/// A string sequence up to its terminator: BEL, ST (`ESC \\`) or C1 ST. Unterminated, it runs
/// to the end, as a terminal would take it.
fn skip_string(chars: &mut Peekable<Chars<'_>>) {
    while let Some(c) = chars.next() {
        match c {
            '\x07' | '\u{9c}' => return,
            '\x1b' => {
                chars.next_if_eq(&'\\');
                return;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_outside_is_made_inert() {
        let cases = [
            ("claude-sonnet-4-5", "claude-sonnet-4-5"),
            // Retitles the window, then clears the screen.
            ("claude\x1b]0;pwned\x07\x1b[2J-x", "claude-x"),
            ("\x1b]0;pwned\x07\x1b[2J", ""),
            // OSC 8 link and OSC 52 clipboard, terminated by ST.
            ("a\x1b]8;;http://evil\x1b\\b\x1b]8;;\x1b\\c", "abc"),
            ("a\x1b]52;c;cGF5bG9hZA==\x07b", "ab"),
            // SGR colours, a cursor move, a DCS string, two-character escapes.
            ("\x1b[1;31mred\x1b[0m \x1b[10;20H.", "red ."),
            ("a\x1bPq#0;2;0;0;0\x1b\\b", "ab"),
            ("a\x1b(Bb\x1b7c\x1bcd", "abcd"),
            // C1 forms: CSI and OSC in one character.
            ("a\u{9b}2Jb\u{9d}0;t\u{9c}c", "abc"),
            // Other controls dropped; line breaks and tabs become spaces.
            ("a\x00b\x08c\x7fd\u{85}e", "abcde"),
            ("line\r\nnext\tcol", "line  next col"),
            // Bidirectional overrides would show `exe.txt` as `txt.exe`.
            ("file\u{202e}txt.exe", "filetxt.exe"),
            ("a\u{2066}b\u{2069}", "ab"),
            // An unterminated string swallows the rest; a lone ESC at the end goes.
            ("a\x1b]0;never ends", "a"),
            ("a\x1b", "a"),
            // Wide and combining characters are text.
            ("회사 café 🚀", "회사 café 🚀"),
        ];
        for (text, expected) in cases {
            assert_eq!(inert(text), expected, "{text:?}");
        }
        assert!(matches!(inert("plain"), Cow::Borrowed(_)));
    }

    mod properties {
        use super::super::{inert, is_bidi_control};
        use proptest::prelude::*;

        /// Characters with escapes, controls and sequence bytes well represented.
        fn text() -> impl Strategy<Value = String> {
            let char = prop_oneof![
                any::<char>(),
                proptest::char::range('\0', '\u{9f}'),
                proptest::sample::select(&['\x1b', '[', ']', '\\', '\x07', '\u{202e}'][..]),
            ];
            proptest::collection::vec(char, 0..64).prop_map(|chars| chars.into_iter().collect())
        }

        proptest! {
            #[test]
            fn nothing_a_terminal_acts_on_survives(text in text()) {
                let out = inert(&text);
                prop_assert!(
                    !out.chars().any(|c| c.is_control() || is_bidi_control(c)),
                    "{:?} gave {:?}", text, out
                );
                // Nothing is invented: what is left is taken from the text, in order (a space
                // may stand for a line break or a tab).
                let mut source = text.chars();
                for c in out.chars() {
                    let found = source.any(|s| s == c || (c == ' ' && matches!(s, '\t' | '\n' | '\r')));
                    prop_assert!(found, "{:?} is not from {:?}", c, text);
                }
            }
        }
    }

    #[test]
    fn ago_uses_one_unit() {
        let now = 10 * DAY;
        let cases = [
            (None, "never"),
            (Some(now), "just now"),
            (Some(now + 5 * SECOND), "just now"),
            (Some(now - 12 * SECOND), "12 s ago"),
            (Some(now - 2 * MINUTE - 59 * SECOND), "2 min ago"),
            (Some(now - 3 * HOUR), "3 h ago"),
            (Some(now - 5 * DAY - HOUR), "5 d ago"),
        ];
        for (then, expected) in cases {
            assert_eq!(ago(now, then), expected, "{then:?}");
        }
    }

    #[test]
    fn durations_show_two_units() {
        let cases = [
            (0, "0s"),
            (200, "1s"),
            (45 * SECOND, "45s"),
            (4 * MINUTE + 10 * SECOND, "4m 10s"),
            (2 * HOUR + 5 * MINUTE, "2h 05m"),
            (3 * DAY + 4 * HOUR + 59 * MINUTE, "3d 4h"),
            (-5, "0s"),
        ];
        for (ms, expected) in cases {
            assert_eq!(duration(ms), expected, "{ms}");
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(count(0), "0");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(-1_000), "-1,000");
        assert_eq!(compact(987), "987");
        assert_eq!(compact(4_500), "4.5k");
        assert_eq!(compact(12_345), "12k");
        assert_eq!(compact(9_960), "10k");
        assert_eq!(compact(4_500_000), "4.5M");
        assert_eq!(compact(1_500_000_000), "1.5B");
        assert_eq!(money(0.0), "$0");
        assert_eq!(money(0.04213), "$0.0421");
        assert_eq!(money(12.345), "$12.35");
        assert_eq!(money(12_345.6), "$12,346");
        assert_eq!(percent(0.985), "98.5%");
        assert_eq!(latency(850), "850ms");
        assert_eq!(latency(1_240), "1.2s");
        assert_eq!(latency(12_400), "12s");
        assert_eq!(latency(125_000), "2m 05s");
    }
}
