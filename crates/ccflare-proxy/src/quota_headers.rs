//! Pool-level rate-limit headers (issue 16, the `pool_rate_limit_headers` option, off by
//! default). Claude Code shows usage warnings from the unified headers of whichever account
//! answered; behind a pool that is misleading (one account at 90 % while the pool is at 30 %).
//! With the option on, a subscription answer's five-hour headers are rewritten to describe the
//! pool: its capacity-weighted utilisation and the time it regains capacity. Answers without
//! unified headers (API keys) and the weekly headers are left as they came.

use ccflare_pool::PoolWindow;
use http::{HeaderMap, HeaderName, HeaderValue};

/// From this utilisation on, answers say `allowed_warning`, as the API does.
const WARNING_AT: f64 = 0.75;

/// Rewrites the five-hour unified headers of a subscription answer to `pool`'s; any other
/// answer is left alone.
pub(crate) fn rewrite(headers: &mut HeaderMap, pool: PoolWindow) {
    if !headers
        .contains_key(const { HeaderName::from_static("anthropic-ratelimit-unified-status") })
    {
        return;
    }
    let status = if pool.utilization >= WARNING_AT {
        "allowed_warning"
    } else {
        "allowed"
    };
    let mut put = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    put("anthropic-ratelimit-unified-status", status);
    put("anthropic-ratelimit-unified-5h-status", status);
    put(
        "anthropic-ratelimit-unified-5h-utilization",
        &format!("{:.2}", pool.utilization),
    );
    if let Some(at) = pool.reset_at {
        let seconds = (at / 1000).to_string();
        put("anthropic-ratelimit-unified-5h-reset", &seconds);
        put("anthropic-ratelimit-unified-reset", &seconds);
    }
    if status == "allowed_warning" {
        put("anthropic-ratelimit-unified-5h-surpassed-threshold", "0.75");
    } else {
        headers.remove("anthropic-ratelimit-unified-5h-surpassed-threshold");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscription_answer() -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("anthropic-ratelimit-unified-status", "allowed_warning"),
            ("anthropic-ratelimit-unified-5h-status", "allowed_warning"),
            ("anthropic-ratelimit-unified-5h-utilization", "0.91"),
            ("anthropic-ratelimit-unified-5h-reset", "1800000000"),
            ("anthropic-ratelimit-unified-5h-surpassed-threshold", "0.75"),
            ("anthropic-ratelimit-unified-reset", "1800000000"),
            ("anthropic-ratelimit-unified-7d-utilization", "0.40"),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        headers
    }

    fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
        headers.get(name).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn a_subscription_answer_describes_the_pool() {
        let mut headers = subscription_answer();
        let pool = PoolWindow {
            utilization: 0.3049,
            reset_at: Some(1_799_990_000_500),
        };
        rewrite(&mut headers, pool);
        assert_eq!(
            get(&headers, "anthropic-ratelimit-unified-status"),
            Some("allowed")
        );
        assert_eq!(
            get(&headers, "anthropic-ratelimit-unified-5h-status"),
            Some("allowed")
        );
        assert_eq!(
            get(&headers, "anthropic-ratelimit-unified-5h-utilization"),
            Some("0.30")
        );
        assert_eq!(
            get(&headers, "anthropic-ratelimit-unified-5h-reset"),
            Some("1799990000")
        );
        assert_eq!(
            get(&headers, "anthropic-ratelimit-unified-reset"),
            Some("1799990000")
        );
        assert_eq!(
            get(
                &headers,
                "anthropic-ratelimit-unified-5h-surpassed-threshold"
            ),
            None
        );
        // The weekly window is the account's own business.
        assert_eq!(
            get(&headers, "anthropic-ratelimit-unified-7d-utilization"),
            Some("0.40")
        );

        let mut headers = subscription_answer();
        let nearly_full = PoolWindow {
            utilization: 0.8,
            reset_at: None,
        };
        rewrite(&mut headers, nearly_full);
        assert_eq!(
            get(&headers, "anthropic-ratelimit-unified-status"),
            Some("allowed_warning")
        );
        assert_eq!(
            get(&headers, "anthropic-ratelimit-unified-5h-reset"),
            Some("1800000000")
        );
    }

    #[test]
    fn answers_without_unified_headers_are_untouched() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "anthropic-ratelimit-tokens-remaining",
            HeaderValue::from_static("1000"),
        );
        let before = headers.clone();
        rewrite(
            &mut headers,
            PoolWindow {
                utilization: 0.5,
                reset_at: Some(1),
            },
        );
        assert_eq!(headers, before);
    }
}
