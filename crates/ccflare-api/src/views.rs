//! The JSON shapes of the API, converted from the storage and pool types at the edge. An
//! account's credential only ever appears masked (`sk-ant-…wxyz`, SPEC §11).

use ccflare_core::record::{AttemptFailure, RequestRecord};
use ccflare_core::route::Explanation;
use ccflare_core::secret::mask;
use ccflare_core::{AccountKind, Millis, ratelimit::RateLimitSnapshot};
use ccflare_pool::{AccountView, RoutingState};
use ccflare_proxy::RequestStarted;
use ccflare_storage::accounts::AccountSummary;
use serde::Serialize;

/// One account: what a person set, what the server sees now, and its use.
#[derive(Debug, Clone, Serialize)]
pub struct AccountJson {
    pub id: i64,
    pub name: String,
    pub kind: &'static str,
    /// The credential masked to its prefix and last four characters.
    pub credential: String,
    pub priority: i64,
    pub weight: u32,
    /// What a person set: `active`, `paused`, or `invalid` (a refused key).
    pub status: &'static str,
    /// Whether it can take a request now: [`RoutingState::name`] (`active`, `paused`,
    /// `rate_limited`, `overloaded`, `invalid`).
    pub state: &'static str,
    /// When a rate-limited or overloaded account is routable again.
    pub available_at: Option<Millis>,
    /// Seconds until then.
    pub reset_in_s: Option<i64>,
    /// Requests being served by it right now.
    pub in_flight: u32,
    /// Requests it served, over its whole life.
    pub requests: i64,
    /// Attempts sent to it since this server started (failed-over ones included).
    pub attempts_since_start: u64,
    pub last_used: Option<Millis>,
    pub created_at: Millis,
    /// The last rate-limit headers it answered with (this server's, else the stored ones).
    pub last_ratelimit: Option<RateLimitSnapshot>,
    /// OAuth accounts: when the access token expires (null for API keys).
    pub token_expires_at: Option<Millis>,
    /// OAuth accounts: when the tokens were last refreshed or logged in (null for API keys).
    pub token_refreshed_at: Option<Millis>,
    /// Subscription windows from the last unified rate-limit headers; null when none came.
    pub subscription: Option<SubscriptionJson>,
}

/// A subscription's windows (`anthropic-ratelimit-unified-*`): the overall status and reset,
/// and the 5-hour and 7-day windows' utilisation (0.0–1.0) and resets. Field names as in
/// `ccflare-cli accounts list --json`.
#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionJson {
    /// `allowed`, `allowed_warning` or `rejected`.
    pub status: Option<String>,
    pub resets: Option<Millis>,
    pub utilization_5h: Option<f64>,
    pub resets_5h: Option<Millis>,
    pub utilization_7d: Option<f64>,
    pub resets_7d: Option<Millis>,
}

impl SubscriptionJson {
    /// The windows of a snapshot that carried the unified headers.
    fn of(snapshot: &RateLimitSnapshot) -> Option<SubscriptionJson> {
        snapshot.unified_status.as_ref()?;
        Some(SubscriptionJson {
            status: snapshot.unified_status.clone(),
            resets: snapshot.unified_reset,
            utilization_5h: snapshot.unified_5h_utilization,
            resets_5h: snapshot.unified_5h_reset,
            utilization_7d: snapshot.unified_7d_utilization,
            resets_7d: snapshot.unified_7d_reset,
        })
    }
}

impl AccountJson {
    /// Joins the stored account with the pool's view of it. An account the pool has not loaded
    /// yet shows the state its stored record gives, which is what the pool says once it has.
    pub fn new(stored: &AccountSummary, view: Option<&AccountView>, now: Millis) -> AccountJson {
        let account = &stored.account;
        let oauth = account.kind == AccountKind::OAuth;
        // The pool's snapshot is the freshest; after a restart only the stored one exists.
        let last_ratelimit = view
            .and_then(|v| v.last_ratelimit.clone())
            .or_else(|| stored.last_ratelimit.clone());
        let state = match view {
            Some(view) => view.state,
            None => RoutingState::of_stored(account, now),
        };
        let available_at = state.until();
        AccountJson {
            id: account.id.0,
            name: account.name.clone(),
            kind: account.kind.as_str(),
            credential: mask(account.credential.expose()),
            priority: account.priority,
            weight: account.weight,
            status: account.status.as_str(),
            state: state.name(),
            available_at,
            reset_in_s: available_at.map(|at| ((at - now).max(0) + 999) / 1000),
            in_flight: view.map_or(0, |v| v.in_flight),
            requests: stored.request_count,
            attempts_since_start: view.map_or(0, |v| v.requests),
            last_used: match (stored.last_used, view.and_then(|v| v.last_used)) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
            created_at: stored.created_at,
            subscription: last_ratelimit.as_ref().and_then(SubscriptionJson::of),
            last_ratelimit,
            token_expires_at: account.token_expires_at.filter(|_| oauth),
            token_refreshed_at: stored.refreshed_at.filter(|_| oauth),
        }
    }
}

/// One request, everything recorded about it.
#[derive(Debug, Clone, Serialize)]
pub struct RequestJson<'a> {
    pub id: &'a str,
    pub started_at: Millis,
    pub method: &'a str,
    pub path: &'a str,
    pub model: Option<&'a str>,
    pub account_id: Option<i64>,
    pub account: Option<&'a str>,
    pub status: u16,
    pub success: bool,
    pub error_type: Option<&'a str>,
    pub error_message: Option<&'a str>,
    /// Upstream attempts; each failed one is in `attempt_failures` with its reason.
    pub attempts: u32,
    pub attempt_failures: &'a [AttemptFailure],
    pub latency_ms: i64,
    pub ttfb_ms: Option<i64>,
    pub streamed: bool,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub cache_write_5m_tokens: u64,
    pub cache_write_1h_tokens: u64,
    /// Server tools' calls (`usage.server_tool_use`); searches are in `cost_usd`.
    pub web_search_requests: u64,
    pub web_fetch_requests: u64,
    pub usage_incomplete: bool,
    pub cost_usd: f64,
    pub cost_estimated: bool,
    pub output_tokens_per_second: Option<f64>,
    pub session_key: Option<&'a str>,
    pub client_key: Option<&'a str>,
    /// Why it went to its account (docs/routing.md): the chosen account and the reasons for
    /// the first few skipped; `null` for rows recorded before routing was explained.
    pub route: Option<&'a Explanation>,
    /// The upstream's `request-id` of the answer relayed (served or failed); `null` when no
    /// upstream answer reached the client, or for rows recorded before it was kept.
    pub upstream_request_id: Option<&'a str>,
    /// The message id (`msg_…`) the client received; `null` when the answer was no message.
    pub message_id: Option<&'a str>,
}

impl<'a> From<&'a RequestRecord> for RequestJson<'a> {
    fn from(r: &'a RequestRecord) -> RequestJson<'a> {
        RequestJson {
            id: &r.id,
            started_at: r.started_at,
            method: &r.method,
            path: &r.path,
            model: r.model.as_deref(),
            account_id: r.account_id.map(|id| id.0),
            account: r.account_name.as_deref(),
            status: r.status,
            success: r.success,
            error_type: r.error_type.as_deref(),
            error_message: r.error_message.as_deref(),
            attempts: r.attempts,
            attempt_failures: &r.attempt_failures,
            latency_ms: r.latency_ms,
            ttfb_ms: r.ttfb_ms,
            streamed: r.streamed,
            input_tokens: r.usage.input_tokens,
            output_tokens: r.usage.output_tokens,
            cache_read_tokens: r.usage.cache_read_input_tokens,
            cache_write_tokens: r.usage.cache_creation_input_tokens,
            cache_write_5m_tokens: r.usage.cache_write_5m,
            cache_write_1h_tokens: r.usage.cache_write_1h,
            web_search_requests: r.usage.web_search_requests,
            web_fetch_requests: r.usage.web_fetch_requests,
            usage_incomplete: r.usage_incomplete,
            cost_usd: r.cost_usd,
            cost_estimated: r.cost_estimated,
            output_tokens_per_second: r.output_tokens_per_second,
            session_key: r.session_key.as_deref(),
            client_key: r.client_key.as_deref(),
            route: r.route.as_ref(),
            upstream_request_id: r.upstream_request_id.as_deref(),
            message_id: r.message_id.as_deref(),
        }
    }
}

/// A request as it starts (the live feed's `request_started`).
#[derive(Debug, Clone, Serialize)]
pub struct StartedJson<'a> {
    pub id: &'a str,
    pub started_at: Millis,
    pub method: &'a str,
    pub path: &'a str,
    pub model: Option<&'a str>,
    pub streamed: bool,
    pub session_key: Option<&'a str>,
}

impl<'a> From<&'a RequestStarted> for StartedJson<'a> {
    fn from(s: &'a RequestStarted) -> StartedJson<'a> {
        StartedJson {
            id: &s.id,
            started_at: s.started_at,
            method: &s.method,
            path: &s.path,
            model: s.model.as_deref(),
            streamed: s.streamed,
            session_key: s.session_key.as_deref(),
        }
    }
}
