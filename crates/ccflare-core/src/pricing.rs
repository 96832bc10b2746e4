//! What a response cost, in US dollars, from the price table of protocol doc §7. Ids that are
//! not in the table (newer models, typos) are priced by family — opus, sonnet, haiku — at the
//! current rates and the cost is marked estimated, so a new model never breaks accounting.
//! Sonnet 4 and 4.5 have long-context rates for the whole of a request past 200K input tokens.
//! Server tools are priced per call, whatever the model: web search at Anthropic's public
//! $10 per 1,000 searches (the protocol doc says only "priced separately"); web fetch has no
//! price of its own (what it fetches is billed as input tokens).

use crate::usage::Usage;

/// Prices in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input: f64,
    pub cache_write_5m: f64,
    pub cache_write_1h: f64,
    pub cache_read: f64,
    pub output: f64,
}

const fn price(input: f64, w5: f64, w1: f64, read: f64, output: f64) -> Price {
    Price {
        input,
        cache_write_5m: w5,
        cache_write_1h: w1,
        cache_read: read,
        output,
    }
}

const OPUS_NEW: Price = price(5.0, 6.25, 10.0, 0.50, 25.0);
const OPUS_OLD: Price = price(15.0, 18.75, 30.0, 1.50, 75.0);
const SONNET: Price = price(3.0, 3.75, 6.0, 0.30, 15.0);
const HAIKU_45: Price = price(1.0, 1.25, 2.0, 0.10, 5.0);
const HAIKU_35: Price = price(0.80, 1.0, 1.6, 0.08, 4.0);
const HAIKU_3: Price = price(0.25, 0.30, 0.50, 0.03, 1.25);
const FABLE_5: Price = price(10.0, 12.50, 20.0, 1.0, 50.0);
const FABLE_51: Price = price(10.0, 12.50, 20.0, 0.25, 50.0);
/// Sonnet 4 and 4.5 past 200K input tokens (the 1M-context beta): 6 in, 22.50 out, the cache
/// multipliers on top (writes 1.25× and 2×, reads 0.1× of the input rate).
const SONNET_LONG: Price = price(6.0, 7.50, 12.0, 0.60, 22.50);

/// Input tokens (of every kind) above which a long-context model's whole request is priced
/// at its long-context rates.
pub const LONG_CONTEXT_ABOVE: u64 = 200_000;

/// Known ids and aliases, matched exactly (dated ids and their aliases are both listed), with
/// the price of the whole request past [`LONG_CONTEXT_ABOVE`] input tokens for those that have
/// long-context rates.
const TABLE: &[(&str, Price, Option<Price>)] = &[
    ("claude-opus-5", OPUS_NEW, None),
    ("claude-opus-4-8", OPUS_NEW, None),
    ("claude-opus-4-7", OPUS_NEW, None),
    ("claude-opus-4-6", OPUS_NEW, None),
    ("claude-opus-4-5-20251101", OPUS_NEW, None),
    ("claude-opus-4-5", OPUS_NEW, None),
    ("claude-opus-4-1-20250805", OPUS_OLD, None),
    ("claude-opus-4-1", OPUS_OLD, None),
    ("claude-opus-4-20250514", OPUS_OLD, None),
    ("claude-opus-4-0", OPUS_OLD, None),
    ("claude-4-opus-20250514", OPUS_OLD, None),
    ("claude-3-opus-20240229", OPUS_OLD, None),
    ("claude-3-opus-latest", OPUS_OLD, None),
    ("claude-sonnet-5", SONNET, None),
    ("claude-sonnet-4-6", SONNET, None),
    ("claude-sonnet-4-5-20250929", SONNET, Some(SONNET_LONG)),
    ("claude-sonnet-4-5", SONNET, Some(SONNET_LONG)),
    ("claude-sonnet-4-20250514", SONNET, Some(SONNET_LONG)),
    ("claude-sonnet-4-0", SONNET, Some(SONNET_LONG)),
    ("claude-4-sonnet-20250514", SONNET, Some(SONNET_LONG)),
    ("claude-3-7-sonnet-20250219", SONNET, None),
    ("claude-3-7-sonnet-latest", SONNET, None),
    ("claude-3-5-sonnet-20241022", SONNET, None),
    ("claude-3-5-sonnet-latest", SONNET, None),
    ("claude-haiku-4-5-20251001", HAIKU_45, None),
    ("claude-haiku-4-5", HAIKU_45, None),
    ("claude-3-5-haiku-20241022", HAIKU_35, None),
    ("claude-3-5-haiku-latest", HAIKU_35, None),
    ("claude-3-haiku-20240307", HAIKU_3, None),
    ("claude-fable-5", FABLE_5, None),
    ("claude-mythos-5", FABLE_5, None),
    ("claude-fable-5-1", FABLE_51, None),
    ("claude-mythos-5-1", FABLE_51, None),
];

/// USD per web search (`server_tool_use.web_search_requests`): $10 per 1,000 searches.
pub const WEB_SEARCH_USD: f64 = 10.0 / 1_000.0;

/// The cost of one response.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cost {
    pub usd: f64,
    /// The model was not in the table and was priced by family (or not at all).
    pub estimated: bool,
}

/// Looks up a model's price: exact id first, then by family. `None` for ids with no known
/// family; the boolean is true when the price is a family estimate.
pub fn lookup(model: &str) -> Option<(Price, bool)> {
    if let Some((_, p, _)) = TABLE.iter().find(|(id, ..)| *id == model) {
        return Some((*p, false));
    }
    let family = if model.contains("opus") {
        OPUS_NEW
    } else if model.contains("sonnet") {
        SONNET
    } else if model.contains("haiku") {
        HAIKU_45
    } else if model.contains("fable") || model.contains("mythos") {
        FABLE_51
    } else {
        return None;
    };
    Some((family, true))
}

/// The price of a request to `model` with `input` tokens of input (plain, cache writes and
/// reads together): [`lookup`]'s, or the model's long-context price past
/// [`LONG_CONTEXT_ABOVE`].
pub fn price_for(model: &str, input: u64) -> Option<(Price, bool)> {
    let long = TABLE
        .iter()
        .find(|(id, ..)| *id == model)
        .and_then(|(.., long)| *long);
    match long {
        Some(long) if input > LONG_CONTEXT_ABOVE => Some((long, false)),
        _ => lookup(model),
    }
}

/// Prices `usage` for `model` (protocol doc §5.1 rules 3 and 4). A request to Sonnet 4 or 4.5
/// whose input of every kind passes [`LONG_CONTEXT_ABOVE`] is priced whole at the long-context
/// rates. (A batch's messages, at half price, never pass here: their usage is in the batch's
/// results, which are relayed, not recorded per message.)
pub fn cost(model: Option<&str>, usage: &Usage) -> Cost {
    let searches = usage.web_search_requests as f64 * WEB_SEARCH_USD;
    let input = usage
        .input_tokens
        .saturating_add(usage.cache_creation_input_tokens)
        .saturating_add(usage.cache_read_input_tokens);
    let Some((p, estimated)) = model.and_then(|model| price_for(model, input)) else {
        return Cost {
            usd: searches,
            estimated: usage.total() > 0,
        };
    };
    let per_million = usage.input_tokens as f64 * p.input
        + usage.cache_write_5m as f64 * p.cache_write_5m
        + usage.cache_write_1h as f64 * p.cache_write_1h
        + usage.cache_read_input_tokens as f64 * p.cache_read
        + usage.output_tokens as f64 * p.output;
    Cost {
        usd: per_million / 1_000_000.0 + searches,
        estimated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: u64, w5: u64, w1: u64, read: u64, output: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            cache_read_input_tokens: read,
            cache_creation_input_tokens: w5 + w1,
            cache_write_5m: w5,
            cache_write_1h: w1,
            web_search_requests: 0,
            web_fetch_requests: 0,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn known_model_every_token_kind() {
        // Sonnet 4.5: 3 in, 3.75 w5m, 6 w1h, 0.30 read, 15 out (input under 200K).
        let c = cost(
            Some("claude-sonnet-4-5-20250929"),
            &usage(50_000, 50_000, 50_000, 50_000, 50_000),
        );
        assert!(
            close(c.usd, (3.0 + 3.75 + 6.0 + 0.30 + 15.0) / 20.0),
            "{}",
            c.usd
        );
        assert!(!c.estimated);
    }

    #[test]
    fn older_and_newer_ids() {
        let u = usage(1_000_000, 0, 0, 0, 0);
        assert!(close(cost(Some("claude-3-haiku-20240307"), &u).usd, 0.25));
        assert!(close(cost(Some("claude-opus-4-1"), &u).usd, 15.0));
        assert!(close(cost(Some("claude-opus-4-5"), &u).usd, 5.0));
        assert!(close(cost(Some("claude-3-5-haiku-latest"), &u).usd, 0.80));
    }

    #[test]
    fn unknown_ids_priced_by_family_and_marked() {
        let u = usage(0, 0, 0, 0, 1_000_000);
        let c = cost(Some("claude-opus-5-5"), &u);
        assert!(close(c.usd, 25.0) && c.estimated);
        let c = cost(Some("claude-haiku-9"), &u);
        assert!(close(c.usd, 5.0) && c.estimated);
        let c = cost(Some("gpt-4"), &u);
        assert!(c.usd == 0.0 && c.estimated);
        assert!(!cost(None, &Usage::default()).estimated);
    }

    #[test]
    fn past_200k_input_a_long_context_model_is_priced_whole_at_its_long_rates() {
        // 200K of input exactly: the standard rates.
        let at = usage(100_000, 50_000, 0, 50_000, 1_000_000);
        let c = cost(Some("claude-sonnet-4-5"), &at);
        let standard = (100_000.0 * 3.0 + 50_000.0 * 3.75 + 50_000.0 * 0.30) / 1e6 + 15.0;
        assert!(close(c.usd, standard), "{}", c.usd);
        // One token more, counted in any of the three kinds: every token at the long rates.
        let past = usage(100_000, 50_000, 1, 50_000, 1_000_000);
        let long = (100_000.0 * 6.0 + 50_000.0 * 7.50 + 12.0 + 50_000.0 * 0.60) / 1e6 + 22.50;
        for model in ["claude-sonnet-4-5-20250929", "claude-sonnet-4-0"] {
            let c = cost(Some(model), &past);
            assert!(close(c.usd, long), "{model}: {}", c.usd);
            assert!(!c.estimated);
        }
        // Models without long-context pricing keep their rates however long the input.
        let opus = cost(Some("claude-opus-4-5"), &usage(1_000_000, 0, 0, 0, 0));
        assert!(close(opus.usd, 5.0), "{}", opus.usd);
        let sonnet_46 = cost(Some("claude-sonnet-4-6"), &usage(1_000_000, 0, 0, 0, 0));
        assert!(close(sonnet_46.usd, 3.0), "{}", sonnet_46.usd);
    }

    #[test]
    fn web_searches_cost_ten_dollars_a_thousand_and_fetches_nothing() {
        let mut u = usage(100_000, 0, 0, 0, 0);
        u.web_search_requests = 3;
        u.web_fetch_requests = 5;
        let c = cost(Some("claude-sonnet-4-5"), &u);
        assert!(close(c.usd, 0.3 + 0.03), "{}", c.usd);
        assert!(!c.estimated);
        // Searches are priced even when the model is unknown: their price is not the model's.
        let searches = Usage {
            web_search_requests: 1_000,
            ..Usage::default()
        };
        assert!(close(cost(None, &searches).usd, 10.0));
    }
}
