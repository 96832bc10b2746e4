//! An inline scanner for Anthropic SSE streams: fed each chunk as it passes through the proxy,
//! it reads usage from `message_start` and the final `message_delta`, notes `error` events and
//! `message_stop`, and never holds more than one capped line. Events it does not need (text
//! deltas, pings, unknown types) are skipped byte by byte without being buffered, so a 100 MB
//! stream costs the same memory as a small one.

use crate::usage::{Usage, WireUsage};
use serde::Deserialize;

/// Longest `data:` line the scanner will keep for an event it needs. `message_start` and
/// `message_delta` lines are a few hundred bytes; anything longer is not one of them.
pub const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// No `event:` line seen yet for this event: the data's `type` decides.
    Unnamed,
    MessageStart,
    MessageDelta,
    MessageStop,
    Error,
    /// Anything else; its data is skipped.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineState {
    /// At the start of a line.
    Start,
    /// Inside a line that is being kept.
    Keep,
    /// Inside a line that is being skipped.
    Skip,
}

/// What the stream said, so far.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StreamSummary {
    pub model: Option<String>,
    /// `message_start`'s `message.id` (`msg_…`): the id the client received.
    pub message_id: Option<String>,
    pub usage: Usage,
    /// A `message_delta` with usage arrived, so `output_tokens` is final rather than the
    /// placeholder from `message_start`.
    pub final_usage: bool,
    pub message_stop: bool,
    /// `error.type` and `error.message` of an `event: error`.
    pub error: Option<(String, String)>,
}

/// The scanner. Feed it with [`SseScanner::feed`]; read [`SseScanner::summary`] at the end.
#[derive(Debug)]
pub struct SseScanner {
    line: Vec<u8>,
    state: LineState,
    event: Event,
    summary: StreamSummary,
}

impl Default for SseScanner {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Deserialize)]
struct Data<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
    message: Option<DataMessage>,
    usage: Option<WireUsage>,
    error: Option<DataError>,
}

#[derive(Deserialize)]
struct DataMessage {
    id: Option<String>,
    model: Option<String>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct DataError {
    #[serde(rename = "type")]
    kind: Option<String>,
    message: Option<String>,
}

impl SseScanner {
    pub fn new() -> Self {
        SseScanner {
            line: Vec::new(),
            state: LineState::Start,
            event: Event::Unnamed,
            summary: StreamSummary::default(),
        }
    }

    pub fn summary(&self) -> &StreamSummary {
        &self.summary
    }

    pub fn into_summary(self) -> StreamSummary {
        self.summary
    }

    /// Scans one chunk. Chunks may split lines, events and UTF-8 characters anywhere.
    pub fn feed(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() {
            match self.state {
                LineState::Start | LineState::Keep => {
                    let newline = memchr::memchr(b'\n', chunk);
                    let available = newline.map_or(chunk.len(), |i| i + 1);
                    let room = MAX_LINE.saturating_sub(self.line.len());
                    if available > room {
                        // Too long to be an event we need: drop what was kept and skip the rest.
                        self.line.clear();
                        chunk = &chunk[available..];
                        self.state = if newline.is_some() {
                            LineState::Start
                        } else {
                            LineState::Skip
                        };
                        continue;
                    }
                    self.line.extend_from_slice(&chunk[..available]);
                    chunk = &chunk[available..];
                    if newline.is_some() {
                        self.finish_line();
                    } else if self.state == LineState::Start {
                        // A line cut by the chunk boundary: decide from its first bytes whether
                        // it can matter, and stop buffering it if not.
                        self.state = self.decide();
                    }
                }
                LineState::Skip => match memchr::memchr(b'\n', chunk) {
                    Some(i) => {
                        chunk = &chunk[i + 1..];
                        self.line.clear();
                        self.state = LineState::Start;
                    }
                    None => chunk = &[],
                },
            }
        }
    }

    /// For a line known only by its first bytes: keep it if it may be one we need.
    fn decide(&mut self) -> LineState {
        let line = self.line.as_slice();
        // A blank line cut before its `\n` ends an event: keep it. Its carriage returns are
        // stripped with the line ending, so `\r\r\n` is as blank as `\r\n`.
        if line.iter().all(|&b| b == b'\r') {
            return LineState::Keep;
        }
        let could_be = |prefix: &[u8]| {
            let n = line.len().min(prefix.len());
            line[..n] == prefix[..n]
        };
        if could_be(b"event:") || (could_be(b"data:") && self.event != Event::Other) {
            LineState::Keep
        } else {
            self.line.clear();
            LineState::Skip
        }
    }

    fn finish_line(&mut self) {
        let mut line = std::mem::take(&mut self.line);
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        self.state = LineState::Start;
        if line.is_empty() {
            // Blank line: the event is complete.
            self.event = Event::Unnamed;
        } else if let Some(name) = line.strip_prefix(b"event:") {
            self.event = match trim(name) {
                b"message_start" => Event::MessageStart,
                b"message_delta" => Event::MessageDelta,
                b"message_stop" => Event::MessageStop,
                b"error" => Event::Error,
                _ => Event::Other,
            };
            if self.event == Event::MessageStop {
                self.summary.message_stop = true;
            }
        } else if let Some(data) = line.strip_prefix(b"data:")
            && self.event != Event::Other
        {
            self.data(trim(data));
        }
        // Comments (`:`), `id:`, `retry:` and unknown fields need nothing.
        line.clear();
        self.line = line;
    }

    fn data(&mut self, data: &[u8]) {
        let Ok(parsed) = serde_json::from_slice::<Data>(data) else {
            return;
        };
        let kind = parsed.kind.as_deref().unwrap_or_default();
        match kind {
            "message_start" => {
                if let Some(message) = parsed.message {
                    if message.model.is_some() {
                        self.summary.model = message.model;
                    }
                    if message.id.is_some() {
                        self.summary.message_id = message.id;
                    }
                    if let Some(usage) = &message.usage {
                        self.summary.usage.merge(usage);
                    }
                }
            }
            "message_delta" => {
                if let Some(usage) = &parsed.usage {
                    self.summary.usage.merge(usage);
                    self.summary.final_usage = true;
                }
            }
            "message_stop" => self.summary.message_stop = true,
            "error" => {
                let error = parsed.error.unwrap_or(DataError {
                    kind: None,
                    message: None,
                });
                self.summary.error = Some((
                    error.kind.unwrap_or_else(|| "error".into()),
                    error.message.unwrap_or_default(),
                ));
            }
            _ => {}
        }
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &bytes[start..end.max(start)]
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-haiku-4-5-20251001\",\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":27,\"cache_creation_input_tokens\":12,\"cache_read_input_tokens\":3,\"cache_creation\":{\"ephemeral_5m_input_tokens\":2,\"ephemeral_1h_input_tokens\":10},\"output_tokens\":1}}}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\n",
        "data: {\"type\": \"ping\"}\n\n",
        ": a comment line\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"ato, luna, café\"}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":5}}\n\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"input_tokens\":27,\"output_tokens\":9}}\n\n",
        "event: message_stop\n",
        "data: {\"type\":\"message_stop\"}\n\n",
    );

    fn expected() -> StreamSummary {
        StreamSummary {
            model: Some("claude-haiku-4-5-20251001".into()),
            message_id: Some("msg_01".into()),
            usage: Usage {
                input_tokens: 27,
                output_tokens: 9,
                cache_read_input_tokens: 3,
                cache_creation_input_tokens: 12,
                cache_write_5m: 2,
                cache_write_1h: 10,
                ..Usage::default()
            },
            final_usage: true,
            message_stop: true,
            error: None,
        }
    }

    fn check(chunks: &[&[u8]], expect: &StreamSummary) {
        let mut scanner = SseScanner::new();
        for chunk in chunks {
            scanner.feed(chunk);
        }
        assert_eq!(scanner.summary(), expect);
    }

    #[test]
    fn whole_stream_in_one_chunk() {
        check(&[STREAM.as_bytes()], &expected());
    }

    #[test]
    fn server_tool_use_of_the_final_delta_is_read() {
        let stream = STREAM.replace(
            "\"usage\":{\"input_tokens\":27,\"output_tokens\":9}",
            "\"usage\":{\"input_tokens\":27,\"output_tokens\":9,\"server_tool_use\":{\"web_search_requests\":2}}",
        );
        assert_ne!(stream, STREAM);
        let mut expect = expected();
        expect.usage.web_search_requests = 2;
        check(&[stream.as_bytes()], &expect);
    }

    #[test]
    fn every_split_point_gives_the_same_answer() {
        let bytes = STREAM.as_bytes();
        for at in 0..bytes.len() {
            check(&[&bytes[..at], &bytes[at..]], &expected());
        }
    }

    #[test]
    fn byte_by_byte() {
        let bytes = STREAM.as_bytes();
        let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        check(&chunks, &expected());
    }

    #[test]
    fn crlf_line_endings() {
        let crlf = STREAM.replace('\n', "\r\n");
        check(&[crlf.as_bytes()], &expected());
    }

    #[test]
    fn crlf_blank_line_split_between_cr_and_lf_ends_the_event() {
        // An unnamed data event after a skipped named one must not inherit its name.
        let stream = "event: ping\r\ndata: {}\r\n\r\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":4}}\r\n\r\n";
        let bytes = stream.as_bytes();
        let cut = stream.find("\r\n\r\n").unwrap() + 3;
        let mut scanner = SseScanner::new();
        scanner.feed(&bytes[..cut]);
        scanner.feed(&bytes[cut..]);
        assert_eq!(scanner.summary().usage.output_tokens, 4);
    }

    #[test]
    fn a_blank_line_of_carriage_returns_cut_before_its_newline_ends_the_event() {
        // Found by the chunking property: `\r\r` alone at the start of a chunk was taken for
        // the start of a line that cannot matter and skipped, so the skipped `ping` event went
        // on and swallowed the unnamed `message_delta` after it. Fed whole, it was counted.
        let stream = b"event: ping\ndata: {}\n\r\r\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":4}}\n\n";
        let cut = stream.iter().position(|&b| b == b'\r').unwrap() + 2;
        for chunks in [&[&stream[..]][..], &[&stream[..cut], &stream[cut..]]] {
            let mut scanner = SseScanner::new();
            for chunk in chunks {
                scanner.feed(chunk);
            }
            assert_eq!(
                scanner.summary().usage.output_tokens,
                4,
                "{} chunks",
                chunks.len()
            );
        }
    }

    #[test]
    fn error_event_is_noted() {
        let stream = concat!(
            "event: message_start\n",
            "data: {\"type\":\"message_start\",\"message\":{\"model\":\"m\",\"usage\":{\"input_tokens\":4,\"output_tokens\":1}}}\n\n",
            "event: error\n",
            "data: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n",
        );
        let mut scanner = SseScanner::new();
        scanner.feed(stream.as_bytes());
        let summary = scanner.into_summary();
        assert_eq!(
            summary.error,
            Some(("overloaded_error".into(), "Overloaded".into()))
        );
        assert!(!summary.final_usage);
        assert!(!summary.message_stop);
        assert_eq!(summary.usage.input_tokens, 4);
    }

    #[test]
    fn huge_deltas_are_skipped_without_growing() {
        let mut scanner = SseScanner::new();
        scanner.feed(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"");
        let filler = vec![b'x'; 1 << 20];
        for _ in 0..8 {
            scanner.feed(&filler);
            assert!(scanner.line.capacity() <= MAX_LINE + 64);
        }
        scanner.feed(b"\"}}\n\n");
        scanner.feed(STREAM.as_bytes());
        assert_eq!(scanner.summary(), &expected());
    }

    #[test]
    fn unnamed_data_events_are_read_by_type() {
        let stream = "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":3}}\n\n";
        let mut scanner = SseScanner::new();
        scanner.feed(stream.as_bytes());
        assert_eq!(scanner.summary().usage.output_tokens, 3);
    }
}

/// Properties: the scanner's answer does not depend on how the stream is cut into chunks, and
/// no input makes it panic.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// One line of a stream (without its line ending), from the shapes a real stream has and
    /// some it should not.
    fn line() -> impl Strategy<Value = Vec<u8>> {
        let usage = (0u64..5_000, 0u64..5_000, any::<bool>()).prop_map(|(i, o, cache)| {
            if cache {
                format!(
                    r#"{{"input_tokens":{i},"output_tokens":{o},"cache_creation_input_tokens":{},"cache_creation":{{"ephemeral_5m_input_tokens":{i},"ephemeral_1h_input_tokens":{o}}}}}"#,
                    i + o
                )
            } else {
                format!(r#"{{"output_tokens":{o},"cache_read_input_tokens":{i}}}"#)
            }
        });
        let text = |s: &str| Just(s.as_bytes().to_vec());
        let event = prop_oneof![
            text("event: message_start"),
            text("event:message_delta"),
            text("event: message_stop"),
            text("event: error"),
            text("event: ping"),
            text("event: content_block_delta"),
        ];
        let other = prop_oneof![
            text(""),
            text("\r"),
            text("\r\r"),
            text(": comment"),
            text("id: 7"),
            text("data: {\"type\":\"ping\"}"),
            text("data: {\"type\":\"message_stop\"}"),
            text(
                "data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}"
            ),
        ];
        let data = prop_oneof![
            ("[a-z]{1,12}", usage.clone()).prop_map(|(model, usage)| format!(
                r#"data: {{"type":"message_start","message":{{"model":"{model}","usage":{usage}}}}}"#
            )
            .into_bytes()),
            usage.prop_map(|usage| format!(
                r#"data: {{"type":"message_delta","delta":{{"stop_reason":"end_turn"}},"usage":{usage}}}"#
            )
            .into_bytes()),
        ];
        // Anything at all, carriage returns and invalid UTF-8 included.
        let junk = proptest::collection::vec(
            prop_oneof![Just(b'\r'), Just(b'{'), Just(b':'), any::<u8>()],
            0..40,
        );
        prop_oneof![4 => event, 4 => other, 4 => data, 1 => junk]
    }

    /// A `message_delta` line near the length limit, on either side of it.
    fn long_line() -> impl Strategy<Value = Vec<u8>> {
        (0usize..64, any::<bool>()).prop_map(|(extra, over)| {
            let head = br#"data: {"type":"message_delta","usage":{"output_tokens":77},"pad":""#;
            let target = if over {
                MAX_LINE + extra
            } else {
                MAX_LINE - 1 - extra
            };
            let mut line = head.to_vec();
            line.resize(target - 2, b'x');
            line.extend_from_slice(b"\"}");
            line
        })
    }

    /// A stream of `lines` lines; with `with_long_line`, half of the streams have one line near the
    /// length limit somewhere (they make byte-by-byte and exhaustive cuts slow).
    fn stream(
        lines: std::ops::Range<usize>,
        with_long_line: bool,
    ) -> impl Strategy<Value = Vec<u8>> {
        let ending = prop_oneof![Just(&b"\n"[..]), Just(&b"\r\n"[..]), Just(&b"\n\n"[..])];
        let long = proptest::option::of((any::<prop::sample::Index>(), long_line()))
            .prop_map(move |long| long.filter(|_| with_long_line));
        (proptest::collection::vec((line(), ending), lines), long).prop_map(|(mut lines, long)| {
            if let Some((at, line)) = long {
                lines.insert(at.index(lines.len() + 1), (line, &b"\n"[..]));
            }
            let mut bytes = Vec::new();
            for (line, ending) in lines {
                bytes.extend_from_slice(&line);
                bytes.extend_from_slice(ending);
            }
            bytes
        })
    }

    fn whole(bytes: &[u8]) -> StreamSummary {
        let mut scanner = SseScanner::new();
        scanner.feed(bytes);
        scanner.into_summary()
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_answer_of_the_whole_stream(
            bytes in stream(0..24, true),
            sizes in proptest::collection::vec(prop_oneof![3 => 1usize..16, 1 => 16usize..80_000], 1..8),
        ) {
            let mut scanner = SseScanner::new();
            let mut rest = &bytes[..];
            for size in sizes.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (chunk, after) = rest.split_at((*size).min(rest.len()));
                scanner.feed(chunk);
                rest = after;
            }
            prop_assert_eq!(scanner.into_summary(), whole(&bytes));
        }

        #[test]
        fn byte_by_byte_gives_the_answer_of_the_whole_stream(bytes in stream(0..24, false)) {
            let mut scanner = SseScanner::new();
            for byte in bytes.chunks(1) {
                scanner.feed(byte);
            }
            prop_assert_eq!(scanner.into_summary(), whole(&bytes));
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let summary = whole(&bytes);
            let _ = crate::pricing::cost(summary.model.as_deref(), &summary.usage);
        }
    }

    proptest! {
        // Every cut of a stream is quadratic work: fewer, shorter streams.
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn every_cut_in_two_gives_the_answer_of_the_whole_stream(bytes in stream(0..10, false)) {
            let expected = whole(&bytes);
            for cut in 0..=bytes.len() {
                let mut scanner = SseScanner::new();
                scanner.feed(&bytes[..cut]);
                scanner.feed(&bytes[cut..]);
                prop_assert_eq!(scanner.summary(), &expected, "cut at {}", cut);
            }
        }
    }
}
