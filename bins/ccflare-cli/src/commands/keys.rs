//! `ccflare-cli keys …`: the client keys that `/v1` accepts (SPEC §11). `create` prints the new
//! key once — it is stored only as a hash and can never be shown again; `list` shows names,
//! prefixes, limits and this period's use (from the recorded requests); `disable`, `enable`,
//! `rename`, `delete` and `set-limits` change a key. A running server picks every change up
//! within two seconds.

use crate::context::Context;
use crate::output::{self, Align, Cell, Color, Table};
use crate::timefmt;
use anyhow::{Context as _, Result, bail};
use ccflare_core::Millis;
use ccflare_core::client_key::{BudgetPeriod, KeyLimits, KeyStatus, check_name, parse_expiry};
use ccflare_storage::keys::{self, ClientKey, KeyChange, KeyUsage, PeriodUsage};
use clap::{Args, Subcommand};
use serde::Serialize;
use std::process::ExitCode;

const LIVE: &str = "a running server picks this up within 2 seconds";

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a client key; it is printed once, never again
    #[command(after_help = "\
Examples:
  ccflare-cli keys create alice
  ccflare-cli keys create ci --budget-usd 20 --period week --rpm 60
  ccflare-cli keys create contractor --expires 30d --concurrency 2

Give the key to its user; Claude Code takes it as
  ANTHROPIC_BASE_URL=http://HOST:PORT ANTHROPIC_API_KEY=ccf_… claude
Budgets count per UTC day, week (from Monday) or month [default: month].")]
    Create(CreateArgs),
    /// List keys: prefix, status, limits, this period's use, last use
    #[command(after_help = "\
Examples:
  ccflare-cli keys list
  ccflare-cli keys list --json

USED is the cost and tokens of the key's requests in its current budget
period (UTC), from the recorded requests. The key itself is never shown.")]
    List,
    /// Refuse a key's requests until it is enabled again
    #[command(after_help = "\
Example:
  ccflare-cli keys disable alice      (refused within 2 seconds)")]
    Disable(NameArgs),
    /// Accept a disabled key's requests again
    #[command(after_help = "\
Example:
  ccflare-cli keys enable alice")]
    Enable(NameArgs),
    /// Give a key another name (its history stays with it)
    #[command(after_help = "\
Example:
  ccflare-cli keys rename alice alice-laptop")]
    Rename(RenameArgs),
    /// Delete a key for good (its request history is kept)
    #[command(after_help = "\
Example:
  ccflare-cli keys delete contractor

A deleted key cannot be restored: create a new one.")]
    Delete(NameArgs),
    /// Change a key's limits or expiry; 0 (or never) removes one
    #[command(after_help = "\
Examples:
  ccflare-cli keys set-limits alice --budget-usd 50
  ccflare-cli keys set-limits ci --rpm 0 --period day
  ccflare-cli keys set-limits contractor --expires never")]
    SetLimits(SetLimitsArgs),
}

#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Budget in US dollars per period (0: none)
    #[arg(long, value_name = "USD")]
    budget_usd: Option<f64>,
    /// Token budget per period (0: none)
    #[arg(long, value_name = "N")]
    budget_tokens: Option<u64>,
    /// The budget's UTC period: day, week or month
    #[arg(long, value_name = "PERIOD", value_parser = parse_period)]
    period: Option<BudgetPeriod>,
    /// Requests per minute (0: no limit)
    #[arg(long, value_name = "N")]
    rpm: Option<u32>,
    /// Requests in flight at once (0: no limit)
    #[arg(long, value_name = "N")]
    concurrency: Option<u32>,
    /// Expiry: RFC 3339, or 12h, 30d, 2w from now
    #[arg(long, value_name = "WHEN")]
    expires: Option<String>,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The key's name: who or what uses it
    name: String,
    #[command(flatten)]
    limits: LimitArgs,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    /// The key's name
    name: String,
}

#[derive(Debug, Args)]
pub struct RenameArgs {
    /// The current name
    old: String,
    /// The new name
    new: String,
}

#[derive(Debug, Args)]
pub struct SetLimitsArgs {
    /// The key's name
    name: String,
    #[command(flatten)]
    limits: LimitArgs,
}

fn parse_period(text: &str) -> Result<BudgetPeriod, String> {
    text.parse()
}

pub async fn run(context: &Context, command: KeysCommand) -> Result<ExitCode> {
    match command {
        KeysCommand::Create(args) => create(context, args).await,
        KeysCommand::List => list(context).await,
        KeysCommand::Disable(args) => set_status(context, &args.name, KeyStatus::Disabled).await,
        KeysCommand::Enable(args) => set_status(context, &args.name, KeyStatus::Active).await,
        KeysCommand::Rename(args) => rename(context, &args.old, &args.new).await,
        KeysCommand::Delete(args) => delete(context, &args.name).await,
        KeysCommand::SetLimits(args) => set_limits(context, args).await,
    }
}

impl LimitArgs {
    fn any(&self) -> bool {
        self.budget_usd.is_some()
            || self.budget_tokens.is_some()
            || self.period.is_some()
            || self.rpm.is_some()
            || self.concurrency.is_some()
            || self.expires.is_some()
    }

    /// `limits` with the flags given applied.
    fn apply(&self, mut limits: KeyLimits) -> Result<KeyLimits> {
        if let Some(usd) = self.budget_usd {
            if !usd.is_finite() || usd < 0.0 {
                bail!("--budget-usd: expected a number of dollars from 0, got {usd}");
            }
            limits.budget_usd = (usd > 0.0).then_some(usd);
        }
        if let Some(tokens) = self.budget_tokens {
            limits.budget_tokens = (tokens > 0).then_some(tokens);
        }
        if let Some(period) = self.period {
            limits.period = period;
        }
        if let Some(rpm) = self.rpm {
            limits.rpm = (rpm > 0).then_some(rpm);
        }
        if let Some(max) = self.concurrency {
            limits.max_concurrent = (max > 0).then_some(max);
        }
        Ok(limits)
    }

    /// The expiry given: `Some(None)` for `never`.
    fn expiry(&self, now: Millis) -> Result<Option<Option<Millis>>> {
        match self.expires.as_deref() {
            None => Ok(None),
            Some("never") => Ok(Some(None)),
            Some(text) => Ok(Some(Some(
                parse_expiry(text, now).map_err(anyhow::Error::msg)?,
            ))),
        }
    }
}

async fn create(context: &Context, args: CreateArgs) -> Result<ExitCode> {
    check_name(&args.name).map_err(anyhow::Error::msg)?;
    let now = context.now();
    let limits = args.limits.apply(KeyLimits::default())?;
    let expires_at = args.limits.expiry(now)?.flatten();
    let db = context.open_db().await?;
    let (key, secret) = keys::create(&db, &args.name, &limits, expires_at, now)
        .await
        .context("creating the key")?;
    if context.json() {
        let mut shown = serde_json::to_value(KeyJson::new(&key, None, now))?;
        shown["key"] = secret.expose().into();
        output::print_json(&shown)?;
        return Ok(ExitCode::SUCCESS);
    }
    output::print(&format!(
        "created client key {:?} ({}): {}\n\n  {}\n\nThis is the only time the key is shown: it \
         is stored as a hash. Claude Code takes it as\n  ANTHROPIC_API_KEY={} (with \
         ANTHROPIC_BASE_URL pointing at ccflare)\n",
        key.name,
        key.prefix,
        limits_text(&key.limits, key.expires_at),
        secret.expose(),
        secret.expose(),
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// A key's limits in a few words.
fn limits_text(limits: &KeyLimits, expires_at: Option<Millis>) -> String {
    let mut parts = Vec::new();
    if let Some(usd) = limits.budget_usd {
        parts.push(format!("{} per {}", output::money(usd), limits.period));
    }
    if let Some(tokens) = limits.budget_tokens {
        parts.push(format!(
            "{} tokens per {}",
            output::compact(tokens.min(i64::MAX as u64) as i64),
            limits.period
        ));
    }
    if let Some(rpm) = limits.rpm {
        parts.push(format!("{rpm}/min"));
    }
    if let Some(max) = limits.max_concurrent {
        parts.push(format!("{max} at once"));
    }
    if let Some(at) = expires_at {
        parts.push(format!(
            "expires {}",
            &ccflare_core::time::format_rfc3339(at)[..16]
        ));
    }
    if parts.is_empty() {
        "no limits".to_owned()
    } else {
        parts.join(", ")
    }
}

#[derive(Serialize)]
struct KeyJson {
    id: i64,
    name: String,
    prefix: String,
    status: &'static str,
    expires_at: Option<Millis>,
    rpm: Option<u32>,
    max_concurrent: Option<u32>,
    budget_usd: Option<f64>,
    budget_tokens: Option<u64>,
    period: &'static str,
    /// What its recorded requests used in the current period.
    period_cost_usd: f64,
    period_tokens: u64,
    created_at: Millis,
    last_used: Option<Millis>,
}

impl KeyJson {
    fn new(key: &ClientKey, usage: Option<&KeyUsage>, now: Millis) -> KeyJson {
        let used = period_usage(key, usage);
        KeyJson {
            id: key.id,
            name: key.name.clone(),
            prefix: key.prefix.clone(),
            status: status(key, now).0,
            expires_at: key.expires_at,
            rpm: key.limits.rpm,
            max_concurrent: key.limits.max_concurrent,
            budget_usd: key.limits.budget_usd,
            budget_tokens: key.limits.budget_tokens,
            period: key.limits.period.as_str(),
            period_cost_usd: used.usd,
            period_tokens: used.tokens,
            created_at: key.created_at,
            last_used: key.last_used,
        }
    }
}

fn period_usage(key: &ClientKey, usage: Option<&KeyUsage>) -> PeriodUsage {
    usage.map(|u| u.of(key.limits.period)).unwrap_or_default()
}

fn status(key: &ClientKey, now: Millis) -> (&'static str, Color) {
    match key.status {
        KeyStatus::Disabled => ("disabled", Color::Dim),
        KeyStatus::Active if key.expired(now) => ("expired", Color::Red),
        KeyStatus::Active => ("active", Color::Green),
    }
}

async fn list(context: &Context) -> Result<ExitCode> {
    let db = context.open_db().await?;
    let now = context.now();
    let listed = keys::list(&db).await.context("reading client keys")?;
    let usage = keys::usage(&db, now)
        .await
        .context("reading the keys' usage")?;
    let usage_of = |key: &ClientKey| usage.iter().find(|u| u.key_id == key.id);
    if context.json() {
        let rows: Vec<KeyJson> = listed
            .iter()
            .map(|key| KeyJson::new(key, usage_of(key), now))
            .collect();
        output::print_json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    if listed.is_empty() {
        output::print("no client keys yet: create one with `ccflare-cli keys create NAME`\n")?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&[
        ("NAME", Align::Left),
        ("KEY", Align::Left),
        ("STATUS", Align::Left),
        ("USED", Align::Right),
        ("LIMITS", Align::Left),
        ("LAST USED", Align::Left),
    ])
    .flex(4);
    for key in &listed {
        let (label, color) = status(key, now);
        let used = period_usage(key, usage_of(key));
        let used = format!(
            "{} {}",
            output::money(used.usd),
            output::compact(used.tokens.min(i64::MAX as u64) as i64)
        );
        table.row(vec![
            key.name.as_str().into(),
            format!("{}…", key.prefix).into(),
            Cell::colored(label, Some(color)),
            used.into(),
            limits_text(&key.limits, key.expires_at).into(),
            timefmt::ago(now, key.last_used).into(),
        ]);
    }
    output::print(&table.render(&context.style))?;
    output::print("\nUSED: cost and tokens of the key's requests in its budget period (UTC).\n")?;
    Ok(ExitCode::SUCCESS)
}

async fn change(context: &Context, name: &str, change: &KeyChange) -> Result<ClientKey> {
    let db = context.open_db().await?;
    Ok(keys::update(&db, name, change, context.now()).await?)
}

async fn set_status(context: &Context, name: &str, status: KeyStatus) -> Result<ExitCode> {
    let key = change(
        context,
        name,
        &KeyChange {
            status: Some(status),
            ..KeyChange::default()
        },
    )
    .await?;
    let done = match status {
        KeyStatus::Active => "enabled",
        KeyStatus::Disabled => "disabled",
    };
    output::print(&format!("{done} client key {:?} ({LIVE})\n", key.name))?;
    Ok(ExitCode::SUCCESS)
}

async fn rename(context: &Context, old: &str, new: &str) -> Result<ExitCode> {
    check_name(new).map_err(anyhow::Error::msg)?;
    let change_name = KeyChange {
        name: Some(new.to_owned()),
        ..KeyChange::default()
    };
    change(context, old, &change_name).await?;
    output::print(&format!("renamed client key {old:?} to {new:?}\n"))?;
    Ok(ExitCode::SUCCESS)
}

async fn delete(context: &Context, name: &str) -> Result<ExitCode> {
    let db = context.open_db().await?;
    keys::remove(&db, name).await?;
    output::print(&format!(
        "deleted client key {name:?}; its requests stay recorded ({LIVE})\n"
    ))?;
    Ok(ExitCode::SUCCESS)
}

async fn set_limits(context: &Context, args: SetLimitsArgs) -> Result<ExitCode> {
    if !args.limits.any() {
        bail!(
            "nothing to change: give --budget-usd, --budget-tokens, --period, --rpm, --concurrency or --expires"
        );
    }
    let db = context.open_db().await?;
    let now = context.now();
    let current = keys::find(&db, &args.name).await?;
    let change = KeyChange {
        limits: Some(args.limits.apply(current.limits)?),
        expires_at: args.limits.expiry(now)?,
        ..KeyChange::default()
    };
    let key = keys::update(&db, &args.name, &change, now).await?;
    output::print(&format!(
        "client key {:?}: {} ({LIVE})\n",
        key.name,
        limits_text(&key.limits, key.expires_at)
    ))?;
    Ok(ExitCode::SUCCESS)
}
