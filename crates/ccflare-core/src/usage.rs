//! Token usage of one response, read from `usage` objects in JSON bodies and SSE events
//! (protocol doc §5). Later values replace earlier ones field by field, which is how a stream's
//! final `message_delta` overrides the placeholder counts of `message_start`. Server tools'
//! calls (`usage.server_tool_use`: web searches and fetches, protocol doc §5) are counts of
//! their own, merged the same way and priced per call, not per token.

use serde::{Deserialize, Serialize};

/// Tokens of one response. The three input kinds do not overlap. (Serialized only in the
/// storage writer's spill file, in this field-per-count form.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_input_tokens: u64,
    /// All cache writes; equals `cache_write_5m + cache_write_1h` when the split is known.
    pub cache_creation_input_tokens: u64,
    pub cache_write_5m: u64,
    pub cache_write_1h: u64,
    /// `server_tool_use.web_search_requests`: searches run by the web search tool, priced
    /// per search.
    pub web_search_requests: u64,
    /// `server_tool_use.web_fetch_requests`: pages fetched by the web fetch tool (no price of
    /// their own: fetched content is billed as input tokens).
    pub web_fetch_requests: u64,
}

impl Usage {
    /// Every token counted: input of all kinds plus output (saturating: the counts come from
    /// the upstream's JSON, which can say anything).
    pub fn total(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.cache_read_input_tokens)
            .saturating_add(self.cache_creation_input_tokens)
            .saturating_add(self.output_tokens)
    }
}

/// The wire form of a `usage` object; every field is optional because `message_delta` may
/// repeat only some of them.
#[derive(Debug, Default, Deserialize)]
pub struct WireUsage {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cache_read_input_tokens: Option<u64>,
    pub cache_creation_input_tokens: Option<u64>,
    pub cache_creation: Option<WireCacheCreation>,
    pub server_tool_use: Option<WireServerToolUse>,
}

/// `usage.server_tool_use`: calls of the tools the API runs itself. Counts are cumulative
/// like the token counts, so a later object replaces an earlier one field by field.
#[derive(Debug, Default, Deserialize)]
pub struct WireServerToolUse {
    pub web_search_requests: Option<u64>,
    pub web_fetch_requests: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct WireCacheCreation {
    pub ephemeral_5m_input_tokens: Option<u64>,
    pub ephemeral_1h_input_tokens: Option<u64>,
}

impl Usage {
    /// Applies the fields present in `wire` over the current values.
    pub fn merge(&mut self, wire: &WireUsage) {
        let set = |slot: &mut u64, value: Option<u64>| {
            if let Some(v) = value {
                *slot = v;
            }
        };
        set(&mut self.input_tokens, wire.input_tokens);
        set(&mut self.output_tokens, wire.output_tokens);
        set(
            &mut self.cache_read_input_tokens,
            wire.cache_read_input_tokens,
        );
        if let Some(tools) = &wire.server_tool_use {
            set(&mut self.web_search_requests, tools.web_search_requests);
            set(&mut self.web_fetch_requests, tools.web_fetch_requests);
        }
        if let Some(total) = wire.cache_creation_input_tokens {
            self.cache_creation_input_tokens = total;
            match &wire.cache_creation {
                Some(split) => {
                    set(&mut self.cache_write_5m, split.ephemeral_5m_input_tokens);
                    set(&mut self.cache_write_1h, split.ephemeral_1h_input_tokens);
                }
                // Without the split, keep a known one if the total agrees; otherwise price
                // every write at the 5-minute rate (protocol doc §5.1 rule 3).
                None if self.cache_write_5m.checked_add(self.cache_write_1h) == Some(total) => {}
                None => {
                    self.cache_write_5m = total;
                    self.cache_write_1h = 0;
                }
            }
        }
    }
}

/// The parts of a non-streaming Messages response that recording needs.
#[derive(Debug, Default, Deserialize)]
pub struct WireMessage {
    pub id: Option<String>,
    pub model: Option<String>,
    pub usage: Option<WireUsage>,
}

/// What recording keeps of a complete JSON message: read from the body's one parse.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BodyMessage {
    /// The message id (`msg_…`) the client received.
    pub id: Option<String>,
    pub model: Option<String>,
    pub usage: Usage,
}

/// Reads id, model and usage from a complete JSON response body; `None` when it is not a
/// message.
pub fn from_json_body(body: &[u8]) -> Option<BodyMessage> {
    let message: WireMessage = serde_json::from_slice(body).ok()?;
    let wire = message.usage?;
    let mut usage = Usage::default();
    usage.merge(&wire);
    Some(BodyMessage {
        id: message.id,
        model: message.model,
        usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_body_usage() {
        let body = br#"{"id":"msg_1","type":"message","model":"claude-haiku-4-5","content":[{"type":"text","text":"Hi"}],"usage":{"input_tokens":22,"cache_creation_input_tokens":30,"cache_read_input_tokens":7,"cache_creation":{"ephemeral_5m_input_tokens":10,"ephemeral_1h_input_tokens":20},"output_tokens":5}}"#;
        let BodyMessage { id, model, usage } = from_json_body(body).unwrap();
        assert_eq!(id.as_deref(), Some("msg_1"));
        assert_eq!(model.as_deref(), Some("claude-haiku-4-5"));
        assert_eq!(
            usage,
            Usage {
                input_tokens: 22,
                output_tokens: 5,
                cache_read_input_tokens: 7,
                cache_creation_input_tokens: 30,
                cache_write_5m: 10,
                cache_write_1h: 20,
                web_search_requests: 0,
                web_fetch_requests: 0,
            }
        );
        assert_eq!(usage.total(), 64);
    }

    #[test]
    fn server_tool_use_is_counted_and_merged_like_tokens() {
        let body = br#"{"model":"claude-sonnet-4-5","usage":{"input_tokens":10,"output_tokens":3,"server_tool_use":{"web_search_requests":2,"web_fetch_requests":1}}}"#;
        let mut usage = from_json_body(body).unwrap().usage;
        assert_eq!(
            (usage.web_search_requests, usage.web_fetch_requests),
            (2, 1)
        );
        // A later object with only searches keeps the fetches (cumulative, field by field).
        let later: WireUsage =
            serde_json::from_str(r#"{"server_tool_use":{"web_search_requests":3}}"#).unwrap();
        usage.merge(&later);
        assert_eq!(
            (usage.web_search_requests, usage.web_fetch_requests),
            (3, 1)
        );
        assert_eq!(usage.total(), 13, "calls are not tokens");
    }

    #[test]
    fn missing_split_prices_writes_as_five_minute() {
        let mut usage = Usage::default();
        usage.merge(&WireUsage {
            cache_creation_input_tokens: Some(40),
            ..Default::default()
        });
        assert_eq!((usage.cache_write_5m, usage.cache_write_1h), (40, 0));
    }

    #[test]
    fn errors_are_not_messages() {
        assert!(from_json_body(br#"{"type":"error","error":{"type":"x"}}"#).is_none());
        assert!(from_json_body(b"<html>").is_none());
    }

    #[test]
    fn huge_counts_do_not_overflow() {
        // Found by the property below: a split summing past u64::MAX, then a total without a
        // split, overflowed the comparison that decides whether the known split still holds.
        let body = br#"{"usage":{"input_tokens":18446744073709551615,"output_tokens":18446744073709551615,"cache_creation_input_tokens":5,"cache_creation":{"ephemeral_5m_input_tokens":18446744073709551615,"ephemeral_1h_input_tokens":1}}}"#;
        let mut usage = from_json_body(body).unwrap().usage;
        assert_eq!(usage.total(), u64::MAX);
        usage.merge(&WireUsage {
            cache_creation_input_tokens: Some(7),
            ..Default::default()
        });
        assert_eq!((usage.cache_write_5m, usage.cache_write_1h), (7, 0));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn count() -> impl Strategy<Value = Option<u64>> {
            proptest::option::of(prop_oneof![0u64..100_000, any::<u64>()])
        }

        fn wire() -> impl Strategy<Value = WireUsage> {
            let split =
                proptest::option::of((count(), count()).prop_map(|(m5, h1)| WireCacheCreation {
                    ephemeral_5m_input_tokens: m5,
                    ephemeral_1h_input_tokens: h1,
                }));
            (count(), count(), count(), count(), split).prop_map(
                |(input, output, read, creation, split)| WireUsage {
                    input_tokens: input,
                    output_tokens: output,
                    cache_read_input_tokens: read,
                    cache_creation_input_tokens: creation,
                    cache_creation: split,
                    server_tool_use: None,
                },
            )
        }

        proptest! {
            #[test]
            fn any_sequence_of_usage_objects_merges_and_totals(
                wires in proptest::collection::vec(wire(), 0..6),
            ) {
                let mut usage = Usage::default();
                for wire in &wires {
                    usage.merge(wire);
                    if let Some(output) = wire.output_tokens {
                        prop_assert_eq!(usage.output_tokens, output);
                    }
                }
                let exact = u128::from(usage.input_tokens)
                    + u128::from(usage.cache_read_input_tokens)
                    + u128::from(usage.cache_creation_input_tokens)
                    + u128::from(usage.output_tokens);
                prop_assert_eq!(u128::from(usage.total()), exact.min(u128::from(u64::MAX)));
            }
        }
    }
}
