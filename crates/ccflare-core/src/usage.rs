//! Token usage of one response, read from `usage` objects in JSON bodies and SSE events
//! (protocol doc §5). Later values replace earlier ones field by field, which is how a stream's
//! final `message_delta` overrides the placeholder counts of `message_start`.

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
}

impl Usage {
    /// Every token counted: input of all kinds plus output.
    pub fn total(&self) -> u64 {
        self.input_tokens
            + self.cache_read_input_tokens
            + self.cache_creation_input_tokens
            + self.output_tokens
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
        if let Some(total) = wire.cache_creation_input_tokens {
            self.cache_creation_input_tokens = total;
            match &wire.cache_creation {
                Some(split) => {
                    set(&mut self.cache_write_5m, split.ephemeral_5m_input_tokens);
                    set(&mut self.cache_write_1h, split.ephemeral_1h_input_tokens);
                }
                // Without the split, keep a known one if the total agrees; otherwise price
                // every write at the 5-minute rate (protocol doc §5.1 rule 3).
                None if self.cache_write_5m + self.cache_write_1h == total => {}
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
    pub model: Option<String>,
    pub usage: Option<WireUsage>,
}

/// Reads model and usage from a complete JSON response body; `None` when it is not a message.
pub fn from_json_body(body: &[u8]) -> Option<(Option<String>, Usage)> {
    let message: WireMessage = serde_json::from_slice(body).ok()?;
    let wire = message.usage?;
    let mut usage = Usage::default();
    usage.merge(&wire);
    Some((message.model, usage))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_body_usage() {
        let body = br#"{"id":"msg_1","type":"message","model":"claude-haiku-4-5","content":[{"type":"text","text":"Hi"}],"usage":{"input_tokens":22,"cache_creation_input_tokens":30,"cache_read_input_tokens":7,"cache_creation":{"ephemeral_5m_input_tokens":10,"ephemeral_1h_input_tokens":20},"output_tokens":5}}"#;
        let (model, usage) = from_json_body(body).unwrap();
        assert_eq!(model.as_deref(), Some("claude-haiku-4-5"));
        assert_eq!(
            usage,
            Usage {
                input_tokens: 22,
                output_tokens: 5,
                cache_read_input_tokens: 7,
                cache_creation_input_tokens: 30,
                cache_write_5m: 10,
                cache_write_1h: 20
            }
        );
        assert_eq!(usage.total(), 64);
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
}
