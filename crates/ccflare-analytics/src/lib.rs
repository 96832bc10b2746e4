//! The read side of ccflare: aggregates over the recorded requests for the management API,
//! the CLI and the TUI. It starts with the seed's overview figures (`/api/analytics`); time
//! series, percentiles and breakdowns come with the management-API work.
//!
//! **Invariant:** read-only. Queries run on the storage pool's connections and never hold a
//! write lock, so they cannot block the proxy's writer (SQLite WAL lets readers and the one
//! writer proceed together).

pub mod stats;

use ccflare_core::Millis;
use ccflare_storage::Db;
use serde::Serialize;
use sqlx::Row;

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

/// Totals over every recorded request, with the last hour counted from `now`.
pub async fn overview(db: &Db, now: Millis) -> Result<Overview, AnalyticsError> {
    let row = sqlx::query(
        "SELECT count(*) AS requests, \
                coalesce(sum(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens), 0) AS tokens, \
                coalesce(avg(latency_ms), 0.0) AS latency, \
                coalesce(sum(cost_usd), 0.0) AS cost, \
                coalesce(sum(started_at >= ?), 0) AS last_hour \
         FROM requests",
    )
    .bind(now - 3_600_000)
    .fetch_one(db.pool())
    .await?;
    let top_models = sqlx::query(
        "SELECT model, count(*) AS n FROM requests WHERE model IS NOT NULL \
         GROUP BY model ORDER BY n DESC, model LIMIT 5",
    )
    .fetch_all(db.pool())
    .await?
    .iter()
    .map(|r| {
        Ok(ModelCount {
            model: r.try_get("model")?,
            count: r.try_get("n")?,
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(Overview {
        total_requests: row.try_get("requests")?,
        total_tokens: row.try_get("tokens")?,
        average_response_time: row.try_get("latency")?,
        cost_estimate: row.try_get("cost")?,
        requests_last_hour: row.try_get("last_hour")?,
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
