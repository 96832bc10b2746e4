//! `ccflare-cli logs`: the last requests, filtered by errors, model, account and age, and with
//! `--follow` the new ones as they are recorded.
//!
//! Following uses a running server's live feed (`GET /api/requests/stream`) when one answers
//! at the configured address with the same database, and the database otherwise: every
//! 500 ms it asks for the rows recorded after the last one seen. Rows are written when a
//! request ends, so following (and `--last`) goes in recording order: a long stream that
//! started before a short request but ended after it is shown when it ends, never missed.
//!
//! With the live feed, the database is still read now and then (right after subscribing, and
//! every few seconds): it covers the moment between the first read and the subscription and
//! anything the feed dropped, and keeps the cursor fresh for when the server stops and
//! following falls back to the database. Request ids already printed are skipped.

mod live;

use crate::context::{self, Context};
use crate::output::{self, Color, Style, truncate};
use crate::timefmt;
use anyhow::{Context as _, Result};
use ccflare_analytics::stats::{self, LogEntry, LogFilter};
use ccflare_core::Millis;
use ccflare_storage::Db;
use ccflare_storage::requests::{self, Order};
use clap::Args;
use std::collections::{HashSet, VecDeque};
use std::process::ExitCode;
use std::time::Duration;
use tokio::time::Instant;

/// How often following asks the database for new rows.
const POLL: Duration = Duration::from_millis(500);
/// The most rows one poll reads; the next poll continues where it stopped.
const BATCH: u32 = 500;
/// How often the database is read while the live feed runs.
const CATCH_UP: Duration = Duration::from_secs(5);
/// Rows reach the database shortly after their live event (the writer batches within 100 ms);
/// the first read after subscribing waits this long so that it sees them.
const WRITE_BEHIND: Duration = Duration::from_secs(1);
/// How many printed request ids are remembered to skip a request seen twice.
const REMEMBERED: usize = 4096;

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ccflare-cli logs
  ccflare-cli logs --last 100
  ccflare-cli logs --error-only --since 1h
  ccflare-cli logs --model claude-sonnet --account work
  ccflare-cli logs --key alice
  ccflare-cli logs --follow
  ccflare-cli logs --follow --json | jq .status
  ccflare-cli logs --explain --account pro

Requests are listed in the order they were recorded (when they ended).
With --json: an array, or one object per line with --follow.")]
pub struct LogsArgs {
    /// How many of the latest requests
    #[arg(long, short = 'n', default_value_t = 20, value_name = "N")]
    last: u32,
    /// Only requests that failed
    #[arg(long)]
    error_only: bool,
    /// Only this model, or models starting with it
    #[arg(long, value_name = "MODEL")]
    model: Option<String>,
    /// Only requests served by this account
    #[arg(long, value_name = "NAME")]
    account: Option<String>,
    /// Only requests made with this client key
    #[arg(long, value_name = "NAME")]
    key: Option<String>,
    /// Only the last DURATION: 30s, 15m, 1h, 7d
    #[arg(long, value_name = "DURATION", value_parser = timefmt::parse_duration)]
    since: Option<Millis>,
    /// Keep printing new requests (Ctrl-C stops)
    #[arg(long, short = 'f')]
    follow: bool,
    /// Why each request went to its account (docs/routing.md)
    #[arg(long)]
    explain: bool,
}

pub async fn run(context: &Context, args: LogsArgs) -> Result<ExitCode> {
    let now = context.now();
    let db = context.open_db().await?;
    // Rows record a client key by id.
    let client_key = match &args.key {
        Some(name) => Some(ccflare_storage::keys::find(&db, name).await?.id.to_string()),
        None => None,
    };
    let filter = LogFilter {
        errors_only: args.error_only,
        model: args.model.clone(),
        account: args.account.clone(),
        since: args.since.map(|age| now - age),
        client_key,
    };
    // Taken before the first read, so a request recorded in between is shown once, by the
    // feed.
    let last_seen = requests::last_seq(&db).await.context("reading requests")?;
    let mut recent = read(&db, &filter, Order::LastRecorded, args.last)
        .await
        .context("reading requests")?;
    recent.retain(|entry| entry.seq <= last_seen);
    let printer = Printer {
        style: context.style,
        json: context.json(),
        follow: args.follow,
        explain: args.explain,
        offset_ms: stats::utc_offset_ms(&db, context.zone(), now)
            .await
            .context("reading the time zone")?,
    };

    if !args.follow {
        if printer.json {
            output::print_json(&recent)?;
        } else if recent.is_empty() {
            output::print("no requests match\n")?;
        } else {
            output::print(&printer.header())?;
            printer.entries(&recent)?;
        }
        return Ok(ExitCode::SUCCESS);
    }

    if !printer.json {
        output::print(&printer.header())?;
    }
    printer.entries(&recent)?;
    let live = match context.sources() {
        Ok(sources) => match ccflare_storage::settings::all(&db).await {
            Ok(stored) => match context::resolve(&sources, &stored) {
                Ok(settings) => live::connect(&settings).await,
                Err(_) => None,
            },
            Err(_) => None,
        },
        Err(_) => None,
    };
    let mut feed = Feed {
        db,
        filter,
        after: last_seen,
        tick: tokio::time::interval(POLL),
        catch_up_at: live.as_ref().map(|_| Instant::now()),
        live,
    };
    let mut seen = Seen::default();
    for entry in &recent {
        seen.insert(&entry.id);
    }
    loop {
        let mut entries = feed.next_batch().await?;
        entries.retain(|entry| seen.insert(&entry.id));
        printer.entries(&entries)?;
    }
}

/// The requests of the listing `order` that pass `filter`, at most `limit`, as log entries.
async fn read(db: &Db, filter: &LogFilter, order: Order, limit: u32) -> Result<Vec<LogEntry>> {
    let page = requests::list(db, &filter.request_filter(), order, limit).await?;
    Ok(page.requests.into_iter().map(LogEntry::from).collect())
}

/// Where new requests come from while following: the server's live feed while it lasts, the
/// database always (see the module's comment).
struct Feed {
    db: Db,
    filter: LogFilter,
    /// The last database row read.
    after: i64,
    tick: tokio::time::Interval,
    live: Option<live::LiveFeed>,
    /// When the database is read next while the live feed runs.
    catch_up_at: Option<Instant>,
}

impl Feed {
    /// Waits for the next requests (at least one).
    async fn next_batch(&mut self) -> Result<Vec<LogEntry>> {
        loop {
            let Some(feed) = self.live.as_mut() else {
                self.tick.tick().await;
                let entries = self.read_database().await?;
                if !entries.is_empty() {
                    return Ok(entries);
                }
                continue;
            };
            let catch_up_at = self
                .catch_up_at
                .unwrap_or_else(|| Instant::now() + CATCH_UP);
            tokio::select! {
                event = feed.next() => match event {
                    Some(live::Event::Finished(entry)) => {
                        if self.filter.matches(&entry) {
                            return Ok(vec![*entry]);
                        }
                    }
                    // What the feed dropped is in the database: read it soon.
                    Some(live::Event::Lagged(_)) => {
                        self.catch_up_at = Some(Instant::now() + WRITE_BEHIND);
                    }
                    // The server stopped: the database goes on.
                    None => self.live = None,
                },
                _ = tokio::time::sleep_until(catch_up_at) => {
                    self.catch_up_at = Some(Instant::now() + CATCH_UP);
                    let entries = self.read_database().await?;
                    if !entries.is_empty() {
                        return Ok(entries);
                    }
                }
            }
        }
    }

    async fn read_database(&mut self) -> Result<Vec<LogEntry>> {
        let entries = read(
            &self.db,
            &self.filter,
            Order::RecordedAfter(self.after),
            BATCH,
        )
        .await
        .context("reading new requests")?;
        if let Some(last) = entries.last() {
            self.after = last.seq;
        }
        Ok(entries)
    }
}

/// The ids of the requests printed last, so that one seen both live and in the database is
/// printed once.
#[derive(Default)]
struct Seen {
    order: VecDeque<String>,
    ids: HashSet<String>,
}

impl Seen {
    /// Remembers `id`; false if it was already there.
    fn insert(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        if self.order.len() == REMEMBERED
            && let Some(oldest) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
        self.order.push_back(id.to_owned());
        self.ids.insert(id.to_owned());
        true
    }
}

/// `2 web searches, 1 web fetch`: the server tools' calls of a request, if it made any.
fn server_tools(entry: &LogEntry) -> Option<String> {
    let plural = |n: i64, one: &str| match n {
        1 => format!("1 {one}"),
        n => format!("{n} {one}es"),
    };
    let parts: Vec<String> = [
        (entry.web_search_requests, "web search"),
        (entry.web_fetch_requests, "web fetch"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| plural(n, what))
    .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

struct Printer {
    style: Style,
    json: bool,
    /// One JSON object per line while following, one array otherwise.
    follow: bool,
    /// Print each request's routing explanation under it.
    explain: bool,
    offset_ms: Millis,
}

/// Fixed column widths, so rows printed one at a time while following line up: 80 columns.
const TIME: usize = 14;
const HTTP: usize = 4;
const MODEL: usize = 18;
const ACCOUNT: usize = 9;
const TOKENS: usize = 9;
const COST: usize = 7;
const LATENCY: usize = 7;

// Cells show what clients sent (model names, paths) and upstream error messages: inert.
fn left(text: &str, width: usize) -> String {
    let text = truncate(&output::inert(text), width);
    format!("{text}{}", " ".repeat(width - output::width(&text)))
}

fn right(text: &str, width: usize) -> String {
    let text = truncate(&output::inert(text), width);
    format!("{}{text}", " ".repeat(width - output::width(&text)))
}

impl Printer {
    fn header(&self) -> String {
        let line = [
            left("TIME", TIME),
            left("HTTP", HTTP),
            left("MODEL", MODEL),
            left("ACCOUNT", ACCOUNT),
            right("IN/OUT", TOKENS),
            right("COST", COST),
            right("LATENCY", LATENCY),
        ]
        .join("  ");
        format!("{}\n", self.style.paint(&line, Some(Color::Bold)))
    }

    fn entries(&self, entries: &[LogEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for entry in entries {
            if self.json {
                if self.follow {
                    text.push_str(&serde_json::to_string(entry)?);
                    text.push('\n');
                }
            } else {
                text.push_str(&self.line(entry));
            }
        }
        if self.json && !self.follow {
            return output::print_json(&entries);
        }
        output::print(&text)
    }

    fn line(&self, entry: &LogEntry) -> String {
        let status_color = match entry.status {
            200..=299 => Color::Green,
            400..=499 => Color::Yellow,
            _ => Color::Red,
        };
        let what = match &entry.model {
            Some(model) => model.clone(),
            None => format!("{} {}", entry.method, entry.path),
        };
        let tokens = format!(
            "{}/{}",
            output::compact(entry.input_tokens),
            output::compact(entry.output_tokens)
        );
        let cells = [
            left(&timefmt::clock(entry.started_at, self.offset_ms), TIME),
            self.style
                .paint(&left(&entry.status.to_string(), HTTP), Some(status_color)),
            left(&what, MODEL),
            left(entry.account.as_deref().unwrap_or("-"), ACCOUNT),
            right(&tokens, TOKENS),
            right(&output::money(entry.cost_usd), COST),
            right(&output::latency(Some(entry.latency_ms)), LATENCY),
        ];
        let mut line = cells.join("  ").trim_end().to_owned();
        line.push('\n');
        // Server tools are billed per call, which the token column cannot show.
        if let Some(tools) = server_tools(entry) {
            line.push_str(&format!("{}↳ {tools}\n", " ".repeat(TIME + 2)));
        }
        if self.explain {
            let route = entry.route.as_deref().unwrap_or("(not recorded)");
            let indent = " ".repeat(TIME + 2);
            let width = output::WIDTH - indent.len() - 2;
            for (i, part) in output::wrap_text(&output::inert(route), width)
                .iter()
                .enumerate()
            {
                let marker = if i == 0 { "→ " } else { "  " };
                line.push_str(&format!("{indent}{marker}{part}\n"));
            }
        }
        if !entry.success {
            let why = match (&entry.error_type, &entry.error_message) {
                (Some(kind), Some(message)) => format!("{kind}: {message}"),
                (Some(kind), None) => kind.clone(),
                (None, Some(message)) => message.clone(),
                (None, None) => format!("HTTP {}", entry.status),
            };
            // Errors are what one reads logs for: wrapped, never cut.
            let indent = " ".repeat(TIME + 2);
            let width = output::WIDTH - indent.len() - 2;
            for (i, part) in output::wrap_text(&output::inert(&why), width)
                .iter()
                .enumerate()
            {
                let marker = if i == 0 { "↳ " } else { "  " };
                line.push_str(&format!(
                    "{indent}{}\n",
                    self.style
                        .paint(&format!("{marker}{part}"), Some(Color::Red))
                ));
            }
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(searches: i64, fetches: i64) -> LogEntry {
        LogEntry {
            seq: 1,
            id: "ccf_1".into(),
            started_at: 0,
            method: "POST".into(),
            path: "/v1/messages".into(),
            model: Some("claude-haiku-4-5".into()),
            account: Some("one".into()),
            status: 200,
            success: true,
            error_type: None,
            error_message: None,
            attempts: 1,
            latency_ms: 5,
            ttfb_ms: Some(1),
            streamed: true,
            input_tokens: 10,
            output_tokens: 5,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            cost_usd: 0.02,
            web_search_requests: searches,
            web_fetch_requests: fetches,
            client_key: None,
            route: None,
        }
    }

    #[test]
    fn server_tools_get_a_line_of_their_own() {
        let printer = Printer {
            style: Style { color: false },
            json: false,
            follow: false,
            offset_ms: 0,
            explain: false,
        };
        let line = printer.line(&entry(2, 1));
        let lines: Vec<&str> = line.lines().collect();
        assert_eq!(lines.len(), 2, "{line}");
        assert_eq!(lines[1].trim(), "↳ 2 web searches, 1 web fetch");
        assert_eq!(printer.line(&entry(0, 0)).lines().count(), 1);
        assert_eq!(server_tools(&entry(1, 0)).as_deref(), Some("1 web search"));
    }
}
