//! `ccflare-cli stats daily|hourly|models`: requests, tokens (in, out, cache), cost, error rate
//! and p50/p95 latency per day, hour or model, with a total. The queries are
//! `ccflare_analytics::stats`, which read the rollups like `/api/analytics` (so the two show the
//! same percentiles); this module only picks the window and draws the table.

use crate::context::Context;
use crate::output::{self, Align, Cell, Color, Table};
use anyhow::{Context as _, Result};
use ccflare_analytics::stats::{Breakdown, StatsRow, StatsTable, stats, stats_of_key};
use clap::{Args, Subcommand};
use serde::Serialize;
use std::process::ExitCode;

const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Subcommand)]
pub enum StatsCommand {
    /// One row per day
    #[command(after_help = "\
Examples:
  ccflare-cli stats daily
  ccflare-cli stats daily --days 30 --json
  ccflare-cli stats daily --key alice

Days are local calendar days (--utc for UTC), today included. Latency
percentiles are over every request, failed ones too, as /api/analytics
shows them: exact below 128 ms, else within 1/32.")]
    Daily(DailyArgs),
    /// One row per hour
    #[command(after_help = "\
Examples:
  ccflare-cli stats hourly
  ccflare-cli stats hourly --hours 6")]
    Hourly(HourlyArgs),
    /// One row per model, busiest first
    #[command(after_help = "\
Examples:
  ccflare-cli stats models
  ccflare-cli stats models --days 7")]
    Models(ModelsArgs),
}

#[derive(Debug, Args)]
pub struct DailyArgs {
    /// How many days, today included
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=3660))]
    days: u32,
    /// Only the requests made with this client key
    #[arg(long, value_name = "NAME")]
    key: Option<String>,
}

#[derive(Debug, Args)]
pub struct HourlyArgs {
    /// How many hours, this one included
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..=8784))]
    hours: u32,
    /// Only the requests made with this client key
    #[arg(long, value_name = "NAME")]
    key: Option<String>,
}

#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// Requests of the last N days
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3660))]
    days: u32,
    /// Only the requests made with this client key
    #[arg(long, value_name = "NAME")]
    key: Option<String>,
}

#[derive(Serialize)]
struct RowJson<'a> {
    #[serde(flatten)]
    row: &'a StatsRow,
    error_rate: f64,
}

#[derive(Serialize)]
struct TableJson<'a> {
    rows: Vec<RowJson<'a>>,
    total: RowJson<'a>,
}

pub async fn run(context: &Context, command: StatsCommand) -> Result<ExitCode> {
    let now = context.now();
    let key = match &command {
        StatsCommand::Daily(DailyArgs { key, .. })
        | StatsCommand::Hourly(HourlyArgs { key, .. })
        | StatsCommand::Models(ModelsArgs { key, .. }) => key.clone(),
    };
    let (breakdown, heading, empty) = match command {
        StatsCommand::Daily(args) => (
            Breakdown::Daily { days: args.days },
            "DAY",
            format!("no requests in the last {} days", args.days),
        ),
        StatsCommand::Hourly(args) => (
            Breakdown::Hourly { hours: args.hours },
            "HOUR",
            format!("no requests in the last {} hours", args.hours),
        ),
        StatsCommand::Models(args) => (
            Breakdown::Models {
                since: now - i64::from(args.days) * DAY_MS,
            },
            "MODEL",
            format!("no requests in the last {} days", args.days),
        ),
    };
    let db = context.open_db().await?;
    let table = match key {
        // Rows record a client key by id.
        Some(name) => {
            let id = ccflare_storage::keys::find(&db, &name)
                .await?
                .id
                .to_string();
            stats_of_key(&db, breakdown, context.zone(), now, &id).await
        }
        None => stats(&db, breakdown, context.zone(), now).await,
    }
    .context("reading request statistics")?;
    if context.json() {
        let json = |row| RowJson {
            row,
            error_rate: row.error_rate(),
        };
        output::print_json(&TableJson {
            rows: table.rows.iter().map(json).collect(),
            total: json(&table.total),
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    if table.rows.is_empty() {
        output::print(&format!("{empty}\n"))?;
        return Ok(ExitCode::SUCCESS);
    }
    output::print(&render(&table, heading, &context.style))?;
    Ok(ExitCode::SUCCESS)
}

fn render(table: &StatsTable, heading: &'static str, style: &output::Style) -> String {
    let mut out = Table::new(&[
        (heading, Align::Left),
        ("REQS", Align::Right),
        ("IN", Align::Right),
        ("OUT", Align::Right),
        ("CACHE", Align::Right),
        ("COST", Align::Right),
        ("ERR", Align::Right),
        ("P50", Align::Right),
        ("P95", Align::Right),
    ])
    .flex(0);
    let cells = |row: &StatsRow| -> Vec<Cell> {
        let error_color = (row.errors > 0).then_some(Color::Red);
        vec![
            // Hours read as "11-26 14:00": the year is noise in a 24-hour table.
            if heading == "HOUR" && row.key.len() == 16 {
                row.key[5..].into()
            } else {
                row.key.as_str().into()
            },
            output::count(row.requests).into(),
            output::compact(row.input_tokens).into(),
            output::compact(row.output_tokens).into(),
            output::compact(row.cache_read_tokens + row.cache_write_tokens).into(),
            output::money(row.cost_usd).into(),
            Cell::colored(output::percent(row.error_rate()), error_color),
            output::latency(row.p50_ms).into(),
            output::latency(row.p95_ms).into(),
        ]
    };
    for row in &table.rows {
        out.row(cells(row));
    }
    out.rule();
    out.row(cells(&table.total));
    let mut text = out.render(style);
    text.push_str(&moves_line(&table.total));
    text
}

/// What the sessions that moved to another account cost in prompt cache written again
/// (docs/routing.md); nothing when none moved.
fn moves_line(total: &StatsRow) -> String {
    match total.session_moves {
        0 => String::new(),
        moves => format!(
            "{} moved to another account: {} cache tokens re-created\n",
            if moves == 1 {
                "1 session".to_owned()
            } else {
                format!("{} sessions", output::count(moves))
            },
            output::compact(total.moved_cache_write_tokens)
        ),
    }
}
