//! The read side of ccflare: aggregates over the recorded requests for the management API,
//! the CLI and the TUI — the seed's overview figures ([`overview`]), and per range
//! ([`report`]) totals, breakdowns per model, account and client key, error counts, latency
//! percentiles and a time series.
//!
//! Everything is read from the rollups the storage writer keeps in the same transaction as the
//! request rows (`ccflare_storage::rollups`, migration 0003), so a query reads a few thousand
//! small rows however many requests are recorded (`docs/benchmarks.md`: under 50 ms at a
//! million rows).
//!
//! **Invariant:** read-only. Queries run on the storage pool's connections and never hold a
//! write lock, so they cannot block the proxy's writer (SQLite WAL lets readers and the one
//! writer proceed together).

pub mod stats;

mod report;

pub use report::{
    AllTime, ErrorCount, Group, Percentiles, Point, Range, Report, Totals, all_time, report,
};

use ccflare_core::Millis;
use ccflare_storage::Db;
use serde::Serialize;

/// Failures of an aggregate query.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    #[error("analytics query failed: {0}")]
    Query(#[from] sqlx::Error),
}

/// A model and how many requests used it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelCount {
    pub model: String,
    pub count: i64,
}

/// All-time totals, in the seed's `/api/analytics` field names.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overview {
    pub total_requests: i64,
    /// Input of all kinds plus output.
    pub total_tokens: i64,
    /// Mean latency in milliseconds.
    pub average_response_time: f64,
    /// Total cost in USD.
    pub cost_estimate: f64,
    pub requests_last_hour: i64,
    /// The five most used models, most used first.
    pub top_models: Vec<ModelCount>,
}

/// Totals over every recorded request, with the last hour (exactly `[now - 1 h, now]`) counted
/// from `now`.
pub async fn overview(db: &Db, now: Millis) -> Result<Overview, AnalyticsError> {
    let (totals, top_models) = report::all_time_overview(db, 5).await?;
    let top_models = top_models
        .into_iter()
        .map(|(model, count)| ModelCount { model, count })
        .collect();
    Ok(Overview {
        total_requests: totals.requests,
        total_tokens: totals.total_tokens,
        average_response_time: totals.average_response_time,
        cost_estimate: totals.cost_usd,
        requests_last_hour: report::requests_since(db, now - 3_600_000).await?,
        top_models,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ccflare_core::record::RequestRecord;
    use ccflare_core::usage::Usage;
    use ccflare_storage::Writer;

    fn record(
        id: u32,
        started_at: Millis,
        model: &str,
        latency_ms: i64,
        output: u64,
    ) -> RequestRecord {
        RequestRecord {
            id: format!("r{id}"),
            started_at,
            method: "POST".into(),
            path: "/v1/messages".into(),
            model: Some(model.into()),
            status: 200,
            success: true,
            latency_ms,
            usage: Usage {
                input_tokens: 10,
                output_tokens: output,
                cache_read_input_tokens: 5,
                ..Default::default()
            },
            cost_usd: 0.5,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn overview_counts_what_was_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_path(&dir.path().join("a.db")).await.unwrap();
        let empty = overview(&db, 0).await.unwrap();
        assert_eq!(
            (
                empty.total_requests,
                empty.total_tokens,
                empty.top_models.len()
            ),
            (0, 0, 0)
        );

        let now: Millis = 10_000_000;
        let writer = Writer::spawn(db.clone());
        let handle = writer.handle();
        handle.record(record(1, now - 7_200_000, "claude-haiku-4-5", 100, 1));
        handle.record(record(2, now - 60_000, "claude-sonnet-4-5", 200, 2));
        handle.record(record(3, now - 1_000, "claude-sonnet-4-5", 600, 3));
        writer.close().await;

        let o = overview(&db, now).await.unwrap();
        assert_eq!(o.total_requests, 3);
        assert_eq!(o.total_tokens, 3 * 15 + 1 + 2 + 3);
        assert!((o.average_response_time - 300.0).abs() < 1e-9);
        assert!((o.cost_estimate - 1.5).abs() < 1e-9);
        assert_eq!(o.requests_last_hour, 2);
        assert_eq!(
            o.top_models,
            [
                ModelCount {
                    model: "claude-sonnet-4-5".into(),
                    count: 2
                },
                ModelCount {
                    model: "claude-haiku-4-5".into(),
                    count: 1
                }
            ]
        );
    }
}
