//! `ccflare-cli replay`: the recorded traffic of the last `--since` fed through the real pool
//! code with a simulated clock, once per strategy (`ccflare_pool::replay`), so that an operator
//! sees which strategy would have served their own week best before switching (issue 16).
//! Deterministic: the same rows give the same table.
//!
//! What a replay needs and the rows do not say is each account's five-hour window in tokens.
//! It is taken, in this order, from `--window NAME=TOKENS`; from the account's last stored
//! subscription headers (the tokens the rows show it served in that window so far, over the
//! utilisation the headers gave, once that is at least 5 %); else as the most it served in any
//! five hours of the replayed rows (its busiest window taken as full). An account with none of
//! these counts as big as the biggest other.

use crate::context::Context;
use crate::output::{self, Color};
use crate::timefmt;
use anyhow::{Context as _, Result, bail};
use ccflare_core::config::Strategy;
use ccflare_core::{AccountId, Millis};
use ccflare_pool::{ReplayAccount, ReplayReport, ReplayRequest, replay, window_cost};
use ccflare_storage::requests::{self, Order, RequestFilter};
use clap::Args;
use serde::Serialize;
use std::collections::BTreeMap;
use std::process::ExitCode;

const FIVE_HOURS: Millis = 5 * 3_600_000;
/// Rows read per page.
const PAGE: u32 = 1000;

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ccflare-cli replay
  ccflare-cli replay --since 24h --strategies session,headroom
  ccflare-cli replay --window pro=2000000 --window max=40000000 --json

Only successful /v1/messages rows are replayed (their tokens and session keys).")]
pub struct ReplayArgs {
    /// Last DURATION to replay: 24h, 7d
    #[arg(long, default_value = "7d", value_name = "DURATION", value_parser = timefmt::parse_duration)]
    since: Millis,
    /// Strategies to compare [default: all five]
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    strategies: Vec<String>,
    /// An account's five-hour window in tokens
    #[arg(long = "window", value_name = "NAME=N")]
    windows: Vec<String>,
    /// Session timeout in seconds
    #[arg(long, default_value_t = 18_000, value_name = "S")]
    session_timeout: u64,
}

#[derive(Debug, Serialize)]
struct Row {
    strategy: String,
    requests: u64,
    client_429s: u64,
    rejected_windows: u64,
    session_moves: u64,
    cache_tokens_recreated: u64,
    utilisation_spread: f64,
}

impl From<&ReplayReport> for Row {
    fn from(r: &ReplayReport) -> Row {
        Row {
            strategy: r.strategy.to_string(),
            requests: r.requests,
            client_429s: r.client_429s,
            rejected_windows: r.rejected_windows,
            session_moves: r.moves,
            cache_tokens_recreated: r.cache_recreated,
            utilisation_spread: (r.spread * 100.0).round() / 100.0,
        }
    }
}

pub async fn run(context: &Context, args: ReplayArgs) -> Result<ExitCode> {
    let strategies = strategies(&args.strategies)?;
    let overrides = overrides(&args.windows)?;
    let now = context.now();
    let db = context.open_db().await?;
    let filter = RequestFilter {
        since: Some(now - args.since),
        ..RequestFilter::default()
    };
    let mut rows = Vec::new();
    let mut after = 0;
    loop {
        let page = requests::list(&db, &filter, Order::RecordedAfter(after), PAGE)
            .await
            .context("reading requests")?;
        let Some(last) = page.requests.last() else {
            break;
        };
        after = last.seq;
        let more = page.more;
        rows.extend(page.requests.into_iter().map(|listed| listed.record));
        if !more {
            break;
        }
    }
    rows.retain(|r| r.success && r.path == "/v1/messages" && r.account_id.is_some());
    rows.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
    let accounts = ccflare_storage::accounts::list_with_ratelimits(&db)
        .await
        .context("reading accounts")?;
    db.close().await;

    // What each account served, in time order: (time, window cost).
    let mut served: BTreeMap<AccountId, Vec<(Millis, u64)>> = BTreeMap::new();
    for row in &rows {
        if let Some(id) = row.account_id {
            served
                .entry(id)
                .or_default()
                .push((row.started_at, window_cost(&row.usage)));
        }
    }
    let mut sized: Vec<(AccountId, String, Option<u64>)> = accounts
        .iter()
        .map(|(account, snapshot)| {
            let size = overrides.get(account.name.as_str()).copied().or_else(|| {
                let history = served.get(&account.id).map_or(&[][..], Vec::as_slice);
                from_headers(history, snapshot.as_ref()).or_else(|| busiest(history))
            });
            (account.id, account.name.clone(), size)
        })
        .collect();
    let biggest = sized.iter().filter_map(|a| a.2).max().unwrap_or(1);
    let replayed: Vec<ReplayAccount> = sized
        .drain(..)
        .map(|(id, name, size)| ReplayAccount {
            id,
            name,
            window_tokens: size.unwrap_or(biggest),
        })
        .collect();
    let requests: Vec<ReplayRequest> = rows
        .iter()
        .map(|row| ReplayRequest {
            at: row.started_at,
            session: row.session_key.clone(),
            usage: row.usage,
        })
        .collect();
    let timeout_ms = i64::try_from(args.session_timeout)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000);
    let reports: Vec<Row> = strategies
        .iter()
        .map(|&strategy| Row::from(&replay(&replayed, &requests, strategy, timeout_ms)))
        .collect();

    if context.json() {
        output::print_json(&serde_json::json!({
            "requests": requests.len(),
            "windows": replayed
                .iter()
                .map(|a| serde_json::json!({"account": a.name, "window_tokens": a.window_tokens}))
                .collect::<Vec<_>>(),
            "strategies": reports,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    if requests.is_empty() {
        output::print("no successful /v1/messages requests in that time\n")?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut text = String::new();
    let windows: Vec<String> = replayed
        .iter()
        .map(|a| {
            format!(
                "{} {}",
                output::inert(&a.name),
                output::compact(i64::try_from(a.window_tokens).unwrap_or(i64::MAX))
            )
        })
        .collect();
    text.push_str(&format!(
        "{} requests; five-hour windows: {}\n\n",
        requests.len(),
        windows.join(", ")
    ));
    let header = format!(
        "{:<15}{:>9}{:>9}{:>10}{:>8}{:>12}{:>8}",
        "STRATEGY", "SERVED", "429s", "REJECTED", "MOVES", "CACHE REDO", "SPREAD"
    );
    text.push_str(&context.style.paint(&header, Some(Color::Bold)));
    text.push('\n');
    for r in &reports {
        text.push_str(&format!(
            "{:<15}{:>9}{:>9}{:>10}{:>8}{:>12}{:>8.2}\n",
            r.strategy,
            r.requests - r.client_429s,
            r.client_429s,
            r.rejected_windows,
            r.session_moves,
            output::compact(i64::try_from(r.cache_tokens_recreated).unwrap_or(i64::MAX)),
            r.utilisation_spread,
        ));
    }
    output::print(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn strategies(names: &[String]) -> Result<Vec<Strategy>> {
    if names.is_empty() {
        return Ok(vec![
            Strategy::Session,
            Strategy::RoundRobin,
            Strategy::LeastRequests,
            Strategy::Priority,
            Strategy::Headroom,
        ]);
    }
    names
        .iter()
        .map(|name| {
            name.parse::<Strategy>().map_err(|_| {
                anyhow::anyhow!(
                    "unknown strategy {name:?}: expected session, round-robin, least-requests, \
                     priority or headroom"
                )
            })
        })
        .collect()
}

fn overrides(windows: &[String]) -> Result<BTreeMap<&str, u64>> {
    let mut sizes = BTreeMap::new();
    for window in windows {
        let Some((name, tokens)) = window.split_once('=') else {
            bail!("--window takes NAME=TOKENS, not {window:?}");
        };
        let tokens: u64 = tokens
            .trim()
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .with_context(|| format!("--window {name}: {tokens:?} is not a number of tokens"))?;
        sizes.insert(name.trim(), tokens);
    }
    Ok(sizes)
}

/// The window's size from the account's last subscription headers: what it served in that
/// window (up to when the headers were seen) over the utilisation they gave.
fn from_headers(
    history: &[(Millis, u64)],
    snapshot: Option<&ccflare_core::ratelimit::RateLimitSnapshot>,
) -> Option<u64> {
    let snapshot = snapshot?;
    let utilization = snapshot.unified_5h_utilization.filter(|&u| u >= 0.05)?;
    let reset = snapshot.unified_5h_reset?;
    let tokens: u64 = history
        .iter()
        .filter(|&&(at, _)| at >= reset - FIVE_HOURS && at <= snapshot.seen_at)
        .map(|&(_, cost)| cost)
        .sum();
    (tokens > 0).then(|| (tokens as f64 / utilization).round() as u64)
}

/// The most served in any five hours (a sliding window over the rows, in time order).
fn busiest(history: &[(Millis, u64)]) -> Option<u64> {
    let mut best = 0;
    let mut sum = 0;
    let mut first = 0;
    for &(at, cost) in history {
        sum += cost;
        while history[first].0 <= at - FIVE_HOURS {
            sum -= history[first].1;
            first += 1;
        }
        best = best.max(sum);
    }
    (best > 0).then_some(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busiest_five_hours_slide_over_the_rows() {
        let hour = 3_600_000;
        let history = [
            (0, 10),
            (hour, 20),
            (5 * hour, 5),
            (6 * hour, 100),
            (7 * hour, 1),
        ];
        // 0–5h: 30 (the row at exactly 5h starts a new window); 5h–10h: 106.
        assert_eq!(busiest(&history), Some(106));
        assert_eq!(busiest(&[]), None);
    }

    #[test]
    fn windows_and_strategies_are_checked() {
        assert_eq!(
            overrides(&["pro=2000".into()]).unwrap().get("pro"),
            Some(&2000)
        );
        assert!(overrides(&["pro".into()]).is_err());
        assert!(overrides(&["pro=0".into()]).is_err());
        assert_eq!(strategies(&[]).unwrap().len(), 5);
        assert!(strategies(&["random".into()]).is_err());
    }
}
