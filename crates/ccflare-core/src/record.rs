//! The row recorded for every proxied request (SPEC §8), built by the proxy and written by the
//! storage writer. Plain data: the proxy fills it on the request path without any IO.

use crate::account::AccountId;
use crate::route::{Explanation, Route};
use crate::time::Millis;
use crate::usage::Usage;
use serde::{Deserialize, Serialize};

/// Why one attempt on one account did not serve the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptFailure {
    pub account: String,
    /// The upstream status, when there was a response.
    pub status: Option<u16>,
    /// `rate_limited`, `overloaded`, `upstream_error`, `auth_failed`, `connect_error`, `timeout`, …
    pub reason: String,
}

/// One request, as stored. Its serde form is the storage writer's spill file (one JSON line
/// per record that waits for the database); fields missing from a line take their defaults,
/// so a file written by an older version still reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RequestRecord {
    /// `x-ccflare-request-id`, also the primary key.
    pub id: String,
    pub started_at: Millis,
    pub method: String,
    pub path: String,
    pub model: Option<String>,
    pub account_id: Option<AccountId>,
    pub account_name: Option<String>,
    /// HTTP status given to the client; 499 when the client hung up first, 503 when the server
    /// cut it at the shutdown deadline before answering (`error_type = shutdown_cut`).
    pub status: u16,
    pub success: bool,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    /// Upstream attempts made (0 when no account could be tried).
    pub attempts: u32,
    pub attempt_failures: Vec<AttemptFailure>,
    pub latency_ms: i64,
    /// Time until the first response byte reached the client, if one did.
    pub ttfb_ms: Option<i64>,
    pub streamed: bool,
    pub usage: Usage,
    /// The response ended before its final usage arrived (client abort, upstream break, error
    /// event), so `output_tokens` may be short.
    pub usage_incomplete: bool,
    pub cost_usd: f64,
    pub cost_estimated: bool,
    /// Output tokens per second over the time after the first byte.
    pub output_tokens_per_second: Option<f64>,
    pub session_key: Option<String>,
    /// The client key that authorised the request (SPEC §11), when client keys are in use.
    pub client_key: Option<String>,
    /// The batch (`msgbatch_…`) or file (`file_…`) this request created upstream: it belongs
    /// to the organisation of `account_id`, and requests naming it go to that account.
    pub resource_id: Option<String>,
    /// Time spent in ccflare itself, in microseconds: the latency less the time the request's
    /// attempts waited on the upstream (sending, its answer, relaying its body). `None` when
    /// nothing was sent upstream. For `/metrics` and the live feed; not stored.
    #[serde(skip)]
    pub proxy_overhead_us: Option<i64>,
    /// Why the request went to its account, or why no account could take it: the chosen
    /// account and the reasons for the first few skipped (docs/routing.md, issue 16). On the
    /// request path it is the pool's route as built; it becomes text only where it is read.
    pub route: Option<Explanation>,
    /// The request's session left the account it was pinned to (a rate limit, a failover,
    /// `headroom` moving it): the prompt cache it wrote (`usage.cache_creation_input_tokens`)
    /// was re-created because of the move. Analytics sums them.
    pub moved: bool,
    /// The upstream's `request-id` header of the answer that served the request, or of the
    /// failure relayed to the client: what Anthropic's support asks for.
    pub upstream_request_id: Option<String>,
    /// The message id (`msg_…`) the client received: `message_start`'s `message.id` in a
    /// stream, the body's `id` otherwise.
    pub message_id: Option<String>,
}

impl RequestRecord {
    /// Puts the pool's explanation of the latest selection on the record as built: no text and
    /// no allocation (the route is moved in whole) until someone reads it.
    pub fn set_route(&mut self, route: Route) {
        self.moved = route.moved();
        self.route = Some(Explanation::Route(route));
    }

    /// Output tokens per second between first byte and end, when both are known and the
    /// interval is not zero.
    pub fn tokens_per_second(
        output_tokens: u64,
        latency_ms: i64,
        ttfb_ms: Option<i64>,
    ) -> Option<f64> {
        let generating_ms = latency_ms - ttfb_ms?;
        (output_tokens > 0 && generating_ms > 0)
            .then(|| output_tokens as f64 * 1000.0 / generating_ms as f64)
    }
}
