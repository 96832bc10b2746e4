//! The Messages API bodies the mock answers with: the SSE event sequence in the byte format of
//! protocol doc §4.1, the non-streaming Message of §4.5, the response text split into deltas,
//! and the "awkward" cut points used by `x-mock-split`.
//!
//! JSON is written with `format!` rather than serde so that the field order (and the spaced
//! `ping` payload) matches the captured traffic byte for byte.

use std::time::Duration;

use bytes::Bytes;

use crate::body::Chunk;
use crate::response::json_string;

/// The token counts of one answer (rules in the crate documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Usage {
    pub input_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub ephemeral_5m_input_tokens: u64,
    pub ephemeral_1h_input_tokens: u64,
    pub output_tokens: u64,
    /// Web searches the answer reports in `server_tool_use` (`x-mock-web-searches`); 0 leaves
    /// the field out, as answers without server tools do.
    pub web_search_requests: u64,
}

impl Usage {
    /// Input and cache counts derived from the request body; output left at 0.
    pub(crate) fn for_request(body: &[u8]) -> Usage {
        const CACHE_MARKER: &[u8] = b"\"cache_control\"";
        let cached = body
            .windows(CACHE_MARKER.len())
            .any(|window| window == CACHE_MARKER);
        let (read, written) = if cached { (100, 50) } else { (0, 0) };
        Usage {
            input_tokens: (body.len() as u64 / 4).max(1),
            cache_creation_input_tokens: written,
            cache_read_input_tokens: read,
            ephemeral_5m_input_tokens: written,
            ephemeral_1h_input_tokens: 0,
            output_tokens: 0,
            web_search_requests: 0,
        }
    }

    /// `,"server_tool_use":{…}` when the answer used the web search tool, else nothing.
    fn server_tool_json(&self) -> String {
        if self.web_search_requests == 0 {
            return String::new();
        }
        format!(
            ",\"server_tool_use\":{{\"web_search_requests\":{}}}",
            self.web_search_requests
        )
    }

    /// The `usage` of a Message and of `message_start`, with `output_tokens` as given.
    fn full_json(&self, output_tokens: u64, inference_geo: bool) -> String {
        let geo = if inference_geo {
            ",\"inference_geo\":\"not_available\""
        } else {
            ""
        };
        format!(
            "{{\"input_tokens\":{},\"cache_creation_input_tokens\":{},\
             \"cache_read_input_tokens\":{},\"cache_creation\":{{\
             \"ephemeral_5m_input_tokens\":{},\"ephemeral_1h_input_tokens\":{}}},\
             \"output_tokens\":{output_tokens}{},\"service_tier\":\"standard\"{geo}}}",
            self.input_tokens,
            self.cache_creation_input_tokens,
            self.cache_read_input_tokens,
            self.ephemeral_5m_input_tokens,
            self.ephemeral_1h_input_tokens,
            self.server_tool_json(),
        )
    }

    /// The cumulative `usage` of the final `message_delta`.
    fn delta_json(&self) -> String {
        format!(
            "{{\"input_tokens\":{},\"cache_creation_input_tokens\":{},\
             \"cache_read_input_tokens\":{},\"output_tokens\":{}{}}}",
            self.input_tokens,
            self.cache_creation_input_tokens,
            self.cache_read_input_tokens,
            self.output_tokens,
            self.server_tool_json(),
        )
    }
}

/// Bytes per filler delta for `x-mock-stream-bytes`, and the word it repeats.
pub(crate) const FILLER_DELTA_BYTES: u64 = 1024;
const FILLER_WORD: &str = "mocktok ";
/// `FILLER_WORD` is 8 bytes, so a filler delta holds 1024 / 8 words.
pub(crate) const FILLER_WORDS_PER_DELTA: u64 = FILLER_DELTA_BYTES / FILLER_WORD.len() as u64;

/// The response text, as the deltas a stream sends.
#[derive(Debug, Clone)]
pub(crate) enum Text {
    /// One delta per word (with its trailing whitespace).
    Words(Vec<String>),
    /// `count` identical 1024-byte filler deltas, produced lazily.
    Filler { count: u64 },
}

impl Text {
    pub(crate) fn from_text(text: &str) -> Text {
        Text::Words(word_deltas(text))
    }

    /// Enough filler deltas to reach at least `min_bytes` (at least one).
    pub(crate) fn filler(min_bytes: u64) -> Text {
        Text::Filler {
            count: min_bytes.div_ceil(FILLER_DELTA_BYTES).max(1),
        }
    }

    pub(crate) fn output_tokens(&self) -> u64 {
        match self {
            Text::Words(deltas) => deltas
                .iter()
                .map(|d| d.split_whitespace().count() as u64)
                .sum(),
            Text::Filler { count } => count * FILLER_WORDS_PER_DELTA,
        }
    }

    pub(crate) fn joined(&self) -> String {
        match self {
            Text::Words(deltas) => deltas.concat(),
            Text::Filler { count } => filler_delta().repeat(usize::try_from(*count).unwrap_or(0)),
        }
    }
}

fn filler_delta() -> String {
    FILLER_WORD.repeat(FILLER_WORDS_PER_DELTA as usize)
}

/// Cuts `text` after each whitespace run that is followed by a word, so the pieces concatenate
/// back to `text`. An empty text is one empty delta (a stream always has one).
pub(crate) fn word_deltas(text: &str) -> Vec<String> {
    let mut deltas = Vec::new();
    let mut start = 0;
    let mut previous_was_space = false;
    for (index, ch) in text.char_indices() {
        let is_space = ch.is_whitespace();
        if previous_was_space && !is_space && index > start {
            deltas.push(text[start..index].to_owned());
            start = index;
        }
        previous_was_space = is_space;
    }
    if start < text.len() || deltas.is_empty() {
        deltas.push(text[start..].to_owned());
    }
    deltas
}

/// The non-streaming Message body (§4.5 field order).
pub(crate) fn message_json(model: &str, message_id: &str, text: &str, usage: &Usage) -> String {
    let tools: String = (0..usage.web_search_requests)
        .flat_map(|n| {
            [
                search_use_block(n, "{\"query\":\"mock\"}"),
                search_result_block(n),
            ]
        })
        .map(|block| format!(",{block}"))
        .collect();
    format!(
        "{{\"id\":{},\"type\":\"message\",\"role\":\"assistant\",\"model\":{},\
         \"content\":[{{\"type\":\"text\",\"text\":{}}}{tools}],\"stop_reason\":\"end_turn\",\
         \"stop_sequence\":null,\"usage\":{}}}",
        json_string(message_id),
        json_string(model),
        json_string(text),
        usage.full_json(usage.output_tokens, false),
    )
}

/// The `server_tool_use` block of the `n`th web search, with `input` (`{}` in a stream, whose
/// input comes as an `input_json_delta`).
fn search_use_block(n: u64, input: &str) -> String {
    format!(
        "{{\"type\":\"server_tool_use\",\"id\":\"srvtoolu_mock{n:04}\",\
         \"name\":\"web_search\",\"input\":{input}}}"
    )
}

/// The `web_search_tool_result` block answering the `n`th search: one result.
fn search_result_block(n: u64) -> String {
    format!(
        "{{\"type\":\"web_search_tool_result\",\"tool_use_id\":\"srvtoolu_mock{n:04}\",\
         \"content\":[{{\"type\":\"web_search_result\",\"url\":\"https://example.com/{n}\",\
         \"title\":\"Mock result {n}\",\"encrypted_content\":\"EqQBCgIYAhIM\",\
         \"page_age\":null}}]}}"
    )
}

/// The events of the web searches of an answer, after its text block (index 0): for each
/// search a `server_tool_use` block with its query as one `input_json_delta`, then its result
/// as one complete block with no deltas (protocol doc §4.3).
fn search_events(searches: u64) -> impl Iterator<Item = Bytes> + Send {
    (0..searches).flat_map(|n| {
        let (use_index, result_index) = (1 + 2 * n, 2 + 2 * n);
        let start = |index: u64, block: String| {
            event(
                "content_block_start",
                &format!(
                    "{{\"type\":\"content_block_start\",\"index\":{index},\"content_block\":{block}}}"
                ),
            )
        };
        let stop = |index: u64| {
            event(
                "content_block_stop",
                &format!("{{\"type\":\"content_block_stop\",\"index\":{index}}}"),
            )
        };
        [
            start(use_index, search_use_block(n, "{}")),
            event(
                "content_block_delta",
                &format!(
                    "{{\"type\":\"content_block_delta\",\"index\":{use_index},\"delta\":\
                     {{\"type\":\"input_json_delta\",\"partial_json\":\"{{\\\"query\\\":\\\"mock\\\"}}\"}}}}"
                ),
            ),
            stop(use_index),
            start(result_index, search_result_block(n)),
            stop(result_index),
        ]
    })
}

fn event(name: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

fn text_delta_event(text: &str) -> Bytes {
    event(
        "content_block_delta",
        &format!(
            "{{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\
             \"text\":{}}}}}",
            json_string(text)
        ),
    )
}

/// The whole event sequence of a streamed text answer, in order, produced lazily:
/// `message_start`, `content_block_start`, `ping`, the deltas, `content_block_stop`,
/// `message_delta` (final usage), `message_stop`.
pub(crate) fn message_events(
    model: &str,
    message_id: &str,
    text: Text,
    usage: Usage,
) -> Box<dyn Iterator<Item = Bytes> + Send> {
    let start = event(
        "message_start",
        &format!(
            "{{\"type\":\"message_start\",\"message\":{{\"model\":{},\"id\":{},\
             \"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"stop_reason\":null,\
             \"stop_sequence\":null,\"stop_details\":null,\"usage\":{}}}}}",
            json_string(model),
            json_string(message_id),
            usage.full_json(1, true),
        ),
    );
    let head = [
        start,
        event(
            "content_block_start",
            "{\"type\":\"content_block_start\",\"index\":0,\
             \"content_block\":{\"type\":\"text\",\"text\":\"\"}}",
        ),
        event("ping", "{\"type\": \"ping\"}"),
    ];
    let stop_text = event(
        "content_block_stop",
        "{\"type\":\"content_block_stop\",\"index\":0}",
    );
    let tail = [
        event(
            "message_delta",
            &format!(
                "{{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\",\
                 \"stop_sequence\":null,\"stop_details\":null}},\"usage\":{}}}",
                usage.delta_json()
            ),
        ),
        event("message_stop", "{\"type\":\"message_stop\"}"),
    ];
    let deltas: Box<dyn Iterator<Item = Bytes> + Send> = match text {
        Text::Words(words) => Box::new(words.into_iter().map(|word| text_delta_event(&word))),
        Text::Filler { count } => {
            let filler = text_delta_event(&filler_delta());
            Box::new(std::iter::repeat_n(
                filler,
                usize::try_from(count).unwrap_or(usize::MAX),
            ))
        }
    };
    let searches = search_events(usage.web_search_requests);
    Box::new(
        head.into_iter()
            .chain(deltas)
            .chain([stop_text])
            .chain(searches)
            .chain(tail),
    )
}

/// The `event: error` sent by [`crate::Fault::ErrorEvent`] (live style, §4.4).
pub(crate) fn overloaded_error_event(request_id: &str) -> Bytes {
    event(
        "error",
        &format!(
            "{{\"type\":\"error\",\"error\":{{\"details\":null,\"type\":\"overloaded_error\",\
             \"message\":\"Overloaded\"}},\"request_id\":{}}}",
            json_string(request_id)
        ),
    )
}

/// How events become writes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pacing {
    /// Wait before every event but the first.
    pub event_delay: Duration,
    /// Cut every event at awkward places, `SPLIT_GAP` apart.
    pub split: bool,
}

/// The pause between the pieces of a split event: long enough that a reader on loopback sees
/// the pieces in separate reads.
const SPLIT_GAP: Duration = Duration::from_millis(1);

pub(crate) fn pace(event_index: usize, event: Bytes, pacing: Pacing) -> Vec<Chunk> {
    let first_delay = if event_index == 0 {
        Duration::ZERO
    } else {
        pacing.event_delay
    };
    if !pacing.split {
        return vec![Chunk {
            delay: first_delay,
            bytes: event,
        }];
    }
    // The gap also separates an event from the previous event's last piece, so the final
    // newline of one event never shares a write with the start of the next.
    let first_delay = if event_index == 0 {
        first_delay
    } else {
        first_delay.max(SPLIT_GAP)
    };
    let mut chunks = Vec::new();
    let mut start = 0;
    for cut in split_points(&event).into_iter().chain([event.len()]) {
        let delay = if start == 0 { first_delay } else { SPLIT_GAP };
        chunks.push(Chunk {
            delay,
            bytes: event.slice(start..cut),
        });
        start = cut;
    }
    chunks
}

/// Cut points inside one event: in the `event:` line, mid `data:` line, just after the first
/// byte of the first multi-byte UTF-8 character, and between the two final newlines.
fn split_points(event: &[u8]) -> Vec<usize> {
    let len = event.len();
    let mut points = vec![3.min(len), len.saturating_sub(1)];
    if let Some(newline) = event.iter().position(|&b| b == b'\n') {
        let data_start = newline + 1;
        let data_end = len.saturating_sub(2).max(data_start);
        points.push(data_start + (data_end - data_start) / 2);
    }
    if let Some(multibyte) = event.iter().position(|&b| b >= 0x80) {
        points.push(multibyte + 1);
    }
    points.retain(|&p| p > 0 && p < len);
    points.sort_unstable();
    points.dedup();
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Protocol doc §4.1, verbatim.
    const CAPTURED: &str = r#"event: message_start
data: {"type":"message_start","message":{"model":"claude-haiku-4-5-20251001","id":"msg_01BiHaB6TfwQ4SrYoHQQBE7h","type":"message","role":"assistant","content":[],"stop_reason":null,"stop_sequence":null,"stop_details":null,"usage":{"input_tokens":27,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},"output_tokens":1,"service_tier":"standard","inference_geo":"not_available"}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"g"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"ato, luna, café"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null,"stop_details":null},"usage":{"input_tokens":27,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":9}}

event: message_stop
data: {"type":"message_stop"}

"#;

    #[test]
    fn reproduces_the_captured_stream_byte_for_byte() {
        let usage = Usage {
            input_tokens: 27,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 0,
            ephemeral_5m_input_tokens: 0,
            ephemeral_1h_input_tokens: 0,
            output_tokens: 9,
            web_search_requests: 0,
        };
        let text = Text::Words(vec!["g".into(), "ato, luna, café".into()]);
        let events = message_events(
            "claude-haiku-4-5-20251001",
            "msg_01BiHaB6TfwQ4SrYoHQQBE7h",
            text,
            usage,
        );
        let stream: Vec<u8> = events.flat_map(|event| event.to_vec()).collect();
        assert_eq!(String::from_utf8(stream).expect("utf-8"), CAPTURED);
    }

    #[test]
    fn message_json_matches_the_captured_shape() {
        let usage = Usage {
            input_tokens: 22,
            output_tokens: 1,
            ..Usage::for_request(b"")
        };
        let json = message_json("claude-3-5-sonnet-20241022", "msg_01L6", "Hello", &usage);
        assert_eq!(
            json,
            r#"{"id":"msg_01L6","type":"message","role":"assistant","model":"claude-3-5-sonnet-20241022","content":[{"type":"text","text":"Hello"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":22,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},"output_tokens":1,"service_tier":"standard"}}"#
        );
    }

    #[test]
    fn web_searches_add_blocks_in_order_and_count_in_the_final_usage() {
        let usage = Usage {
            output_tokens: 2,
            web_search_requests: 2,
            ..Usage::for_request(b"")
        };
        let events: Vec<String> = message_events("m", "msg_1", Text::from_text("a b"), usage)
            .map(|event| String::from_utf8(event.to_vec()).expect("utf-8"))
            .collect();
        let data: Vec<serde_json::Value> = events
            .iter()
            .map(|event| {
                let line = event.lines().nth(1).expect("data line");
                serde_json::from_str(line.trim_start_matches("data: ")).expect("JSON")
            })
            .collect();
        let started: Vec<(u64, &str)> = data
            .iter()
            .filter(|d| d["type"] == "content_block_start")
            .map(|d| {
                let block = &d["content_block"];
                (
                    d["index"].as_u64().unwrap(),
                    block["type"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            started,
            [
                (0, "text"),
                (1, "server_tool_use"),
                (2, "web_search_tool_result"),
                (3, "server_tool_use"),
                (4, "web_search_tool_result")
            ]
        );
        let delta = data.iter().find(|d| d["type"] == "message_delta").unwrap();
        assert_eq!(delta["usage"]["server_tool_use"]["web_search_requests"], 2);
        let json: serde_json::Value =
            serde_json::from_str(&message_json("m", "msg_1", "a b", &usage)).unwrap();
        assert_eq!(json["content"].as_array().unwrap().len(), 5);
        assert_eq!(json["usage"]["server_tool_use"]["web_search_requests"], 2);
    }

    #[test]
    fn usage_rules() {
        assert_eq!(Usage::for_request(b"").input_tokens, 1);
        assert_eq!(Usage::for_request(b"1234567").input_tokens, 1);
        assert_eq!(Usage::for_request(b"12345678").input_tokens, 2);
        let cached = Usage::for_request(br#"{"cache_control":{"type":"ephemeral"}}"#);
        assert_eq!(cached.cache_read_input_tokens, 100);
        assert_eq!(cached.cache_creation_input_tokens, 50);
        assert_eq!(cached.ephemeral_5m_input_tokens, 50);
        assert_eq!(cached.ephemeral_1h_input_tokens, 0);
        assert_eq!(
            Usage::for_request(b"cache_control").cache_read_input_tokens,
            0
        );
    }

    #[test]
    fn word_deltas_concatenate_back() {
        for text in [
            "Hello from the mock upstream.",
            "  lead",
            "trail  ",
            "",
            "a\n\nb c",
            "café x",
        ] {
            let deltas = word_deltas(text);
            assert_eq!(deltas.concat(), text);
            assert!(!deltas.is_empty());
        }
        assert_eq!(word_deltas("Hello from  you"), ["Hello ", "from  ", "you"]);
        assert_eq!(
            Text::from_text("Hello from the mock upstream.").output_tokens(),
            5
        );
    }

    #[test]
    fn filler_rounds_up_to_whole_deltas() {
        assert_eq!(Text::filler(0).output_tokens(), 128);
        assert_eq!(Text::filler(1024).output_tokens(), 128);
        assert_eq!(Text::filler(1025).output_tokens(), 256);
        assert_eq!(Text::filler(2048).joined().len(), 2048);
    }

    #[test]
    fn split_cuts_lines_and_utf8_and_reassembles() {
        let event = text_delta_event("café");
        let chunks = pace(
            1,
            event.clone(),
            Pacing {
                event_delay: Duration::ZERO,
                split: true,
            },
        );
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.bytes.to_vec()).collect();
        assert_eq!(joined, event.to_vec());
        assert!(chunks.len() >= 4);
        // One piece ends inside the 2-byte 'é'.
        assert!(
            chunks
                .iter()
                .any(|c| std::str::from_utf8(&c.bytes).is_err())
        );
        assert_eq!(&chunks.last().expect("pieces").bytes[..], b"\n");
    }
}
