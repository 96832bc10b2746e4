//! `ccflare-cli accounts …`: add, list, remove, pause, resume and rename accounts. Every change
//! is a row written to the database with a new `revision`; a running server picks it up within
//! two seconds (it re-reads the accounts table every second). Keys are only ever shown masked.

use crate::context::Context;
use crate::output::{self, Align, Cell, Color, Table};
use crate::timefmt;
use anyhow::{Context as _, Result, bail};
use ccflare_core::account::check_api_key;
use ccflare_core::{Account, AccountStatus, Millis, Secret};
use ccflare_pool::RoutingState;
use ccflare_storage::StorageError;
use ccflare_storage::accounts::{self, AccountSummary, Upsert};
use clap::{Args, Subcommand};
use serde::Serialize;
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

const LIVE: &str = "a running server picks this up within 2 seconds";

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Add an API-key account, or log in with --oauth
    #[command(after_help = "\
Examples:
  ccflare-cli accounts add sk-ant-api03-…
  ccflare-cli accounts add sk-ant-api03-… --name work --priority 1
  pass show anthropic/work | ccflare-cli accounts add - --name work
  ccflare-cli accounts add --oauth max personal
  ccflare-cli accounts add --oauth console team

Without --name the account is called key- and the key's last four
characters. Adding a key that is already stored changes nothing, except
that an account marked invalid becomes active again.

--oauth max logs in a Claude Pro/Max subscription (read the warning it
prints: subscription accounts can be banned); --oauth console logs in to
the Console and stores an API key minted with that login. Both print a
URL to open, then read the CODE#STATE shown after login.")]
    Add(AddArgs),
    /// List accounts: masked key, kind, status, requests, last use
    #[command(after_help = "\
Examples:
  ccflare-cli accounts list
  ccflare-cli accounts list --json

Status is Active, Limited (rate limited or overloaded, with the time
until it resets), Paused, or Invalid: an API key was refused; an OAuth
login was refused and needs re-auth (ccflare-cli accounts reauth NAME).

OAuth accounts get a Subscriptions section: token expiry, last refresh,
and the 5h/7d windows' use and resets (re-auth instead when Invalid).")]
    List,
    /// Remove an account (its request history is kept)
    #[command(after_help = "\
Examples:
  ccflare-cli accounts remove old-key
  ccflare-cli accounts remove old-key --yes
  printf '%s\\n' \"$OLD_KEY\" | ccflare-cli accounts remove - --yes

The account is named, or given by its full key: `-` reads the key from
standard input, which keeps it out of the shell history and the process
list (a key given as the argument works too). On a terminal it asks
first; from a script, pass --yes.")]
    Remove(RemoveArgs),
    /// Stop routing requests to an account until it is resumed
    #[command(after_help = "\
Examples:
  ccflare-cli accounts pause work
  ccflare-cli accounts pause - < key.txt     (the account with this key)")]
    Pause(AccountArgs),
    /// Route requests to a paused account again (clears its cooldowns)
    #[command(after_help = "\
Examples:
  ccflare-cli accounts resume work
  ccflare-cli accounts resume - < key.txt    (the account with this key)")]
    Resume(AccountArgs),
    /// Give an account another name
    #[command(after_help = "\
Examples:
  ccflare-cli accounts rename key-wxyz work
  ccflare-cli accounts rename - work < key.txt   (the account with this key)")]
    Rename(RenameArgs),
    /// Log an OAuth account in again (keeps name, priority, history)
    #[command(after_help = "\
Example:
  ccflare-cli accounts reauth personal

For an OAuth account whose login died (shown as Invalid) or is about to.
Prints a URL to open, then reads the CODE#STATE shown after login.")]
    Reauth(NameArgs),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// API key (sk-ant-…), - to read it from stdin; with --oauth: a name
    #[arg(value_name = "KEY|NAME")]
    key: String,
    /// Log in instead: max (a Pro/Max plan) or console
    #[arg(long, value_name = "MODE", value_parser = ["max", "console"], hide_possible_values = true)]
    oauth: Option<String>,
    /// Account name [default: key-<last 4 characters>]
    #[arg(long)]
    name: Option<String>,
    /// Lower is preferred by the priority strategy [default: 0]
    #[arg(long, allow_negative_numbers = true, value_name = "N")]
    priority: Option<i64>,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// The account's name, or its key (- reads the key from stdin)
    #[arg(value_name = "NAME|KEY")]
    account: String,
    /// Remove without asking
    #[arg(long, short = 'y')]
    yes: bool,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    /// The account's name
    name: String,
}

#[derive(Debug, Args)]
pub struct AccountArgs {
    /// The account's name, or its key (- reads the key from stdin)
    #[arg(value_name = "NAME|KEY")]
    account: String,
}

#[derive(Debug, Args)]
pub struct RenameArgs {
    /// The current name, or the account's key (- reads it from stdin)
    #[arg(value_name = "OLD|KEY")]
    old: String,
    /// The new name
    new: String,
}

pub async fn run(context: &Context, command: AccountsCommand) -> Result<ExitCode> {
    match command {
        AccountsCommand::Add(args) => add(context, args).await,
        AccountsCommand::List => list(context).await,
        AccountsCommand::Remove(args) => remove(context, args).await,
        AccountsCommand::Pause(args) => pause(context, &args.account).await,
        AccountsCommand::Resume(args) => resume(context, &args.account).await,
        AccountsCommand::Rename(args) => rename(context, &args.old, &args.new).await,
        AccountsCommand::Reauth(args) => reauth(context, &args.name).await,
    }
}

/// Account names are typed on command lines and sent in the `x-ccflare-account` header: no
/// spaces or control characters, and nothing that looks like a key (a name is shown in full
/// everywhere, so a key pasted as a name would leak).
fn check_name(name: &str) -> Result<()> {
    // First, so that the other messages, which quote the name, never quote a key.
    let shown = ccflare_core::secret::shown_masked(name);
    if shown != name {
        bail!(
            "invalid account name {shown:?}: it looks like a key or token (names are shown in \
             full everywhere)"
        );
    }
    if name.is_empty() || name.chars().count() > 64 {
        bail!("invalid account name {shown:?}: expected 1 to 64 characters");
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("invalid account name {shown:?}: spaces and control characters are not allowed");
    }
    if name.starts_with('-') {
        bail!("invalid account name {shown:?}: it may not start with -");
    }
    Ok(())
}

/// The account a person means: by name, or by its full key, as the seed's tutorial removes
/// accounts (`accounts remove sk-ant-…`). Names cannot start with `sk-ant-` (see
/// [`check_name`]), so the two cannot be confused. An unknown key is named only masked.
async fn resolve(db: &ccflare_storage::Db, given: &str) -> Result<Account> {
    // `-`: the account's key on standard input, kept out of shell history and the process list.
    let from_stdin;
    let given = if given == "-" {
        from_stdin = read_key_from_stdin()?;
        from_stdin.as_str()
    } else {
        given
    };
    match accounts::find(db, given).await {
        Err(StorageError::AccountNotFound { .. }) => {}
        found => return Ok(found?),
    }
    let key = given.trim();
    let listed = accounts::list(db).await.context("reading accounts")?;
    if let Some(account) = listed
        .into_iter()
        .find(|account| account.credential.expose() == key)
    {
        return Ok(account);
    }
    if key.starts_with("sk-ant-") {
        bail!(
            "no account has the key {}; `ccflare-cli accounts list` shows each account's name and masked key",
            Secret::new(key).masked()
        );
    }
    // The storage error's message masks anything else shaped like a token.
    Err(StorageError::AccountNotFound {
        name: given.to_owned(),
    }
    .into())
}

/// An account's state as people see it: the pool's [`RoutingState`] (the one rule, which the
/// API and `/metrics` show too), with its label and colour.
pub struct State {
    pub routing: RoutingState,
    pub label: String,
    pub color: Color,
}

/// A stored account's state at `now`: a person's status first, then any bench still running
/// (both kinds read as "Limited", with the time until the later one ends).
pub fn state(account: &Account, now: Millis) -> State {
    shown(RoutingState::of_stored(account, now), now)
}

fn shown(routing: RoutingState, now: Millis) -> State {
    let (label, color) = match routing {
        RoutingState::Active => ("Active".to_owned(), Color::Green),
        RoutingState::Paused => ("Paused".to_owned(), Color::Dim),
        RoutingState::Invalid => ("Invalid".to_owned(), Color::Red),
        RoutingState::RateLimited { until } | RoutingState::Overloaded { until } => (
            format!("Limited ({})", timefmt::duration(until - now)),
            Color::Yellow,
        ),
    };
    State {
        routing,
        label,
        color,
    }
}

#[derive(Serialize)]
struct AccountJson {
    name: String,
    /// Masked: `sk-ant-…wxyz`.
    key: String,
    kind: &'static str,
    status: &'static str,
    limited_until: Option<Millis>,
    priority: i64,
    weight: u32,
    requests: i64,
    last_used: Option<Millis>,
    created_at: Millis,
    /// OAuth accounts: when the access token expires and when it was last refreshed.
    #[serde(skip_serializing_if = "Option::is_none")]
    token_expires_at: Option<Millis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_refreshed_at: Option<Millis>,
    /// Subscription windows from the last unified rate-limit headers.
    #[serde(skip_serializing_if = "Option::is_none")]
    subscription: Option<SubscriptionJson>,
}

#[derive(Serialize)]
struct SubscriptionJson {
    status: Option<String>,
    utilization_5h: Option<f64>,
    resets_5h: Option<Millis>,
    utilization_7d: Option<f64>,
    resets_7d: Option<Millis>,
}

impl SubscriptionJson {
    fn of(summary: &AccountSummary) -> Option<SubscriptionJson> {
        let snapshot = summary.last_ratelimit.as_ref()?;
        snapshot.unified_status.as_ref()?;
        Some(SubscriptionJson {
            status: snapshot.unified_status.clone(),
            utilization_5h: snapshot.unified_5h_utilization,
            resets_5h: snapshot.unified_5h_reset,
            utilization_7d: snapshot.unified_7d_utilization,
            resets_7d: snapshot.unified_7d_reset,
        })
    }
}

impl AccountJson {
    fn new(summary: &AccountSummary, now: Millis) -> AccountJson {
        let account = &summary.account;
        let state = state(account, now);
        AccountJson {
            name: account.name.clone(),
            key: account.credential.masked(),
            kind: account.kind.as_str(),
            status: state.routing.name(),
            limited_until: state.routing.until(),
            priority: account.priority,
            weight: account.weight,
            requests: summary.request_count,
            last_used: summary.last_used,
            created_at: summary.created_at,
            token_expires_at: account.token_expires_at,
            token_refreshed_at: summary.refreshed_at,
            subscription: SubscriptionJson::of(summary),
        }
    }
}

async fn list(context: &Context) -> Result<ExitCode> {
    let db = context.open_db().await?;
    let listed = accounts::list_with_usage(&db)
        .await
        .context("reading accounts")?;
    let now = context.now();
    if context.json() {
        let rows: Vec<AccountJson> = listed.iter().map(|s| AccountJson::new(s, now)).collect();
        output::print_json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    if listed.is_empty() {
        output::print("no accounts yet: add one with `ccflare-cli accounts add sk-ant-…`\n")?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&[
        ("NAME", Align::Left),
        ("KEY", Align::Left),
        ("KIND", Align::Left),
        ("STATUS", Align::Left),
        ("REQUESTS", Align::Right),
        ("LAST USED", Align::Left),
    ])
    .flex(0);
    for summary in &listed {
        let account = &summary.account;
        let state = state(account, now);
        table.row(vec![
            account.name.as_str().into(),
            account.credential.masked().into(),
            account.kind.as_str().into(),
            Cell::colored(state.label, Some(state.color)),
            output::count(summary.request_count).into(),
            timefmt::ago(now, summary.last_used).into(),
        ]);
    }
    output::print(&table.render(&context.style))?;
    let subscriptions: Vec<String> = listed
        .iter()
        .filter(|s| s.account.kind == ccflare_core::AccountKind::OAuth)
        .map(|s| subscription_line(s, now))
        .collect();
    if !subscriptions.is_empty() {
        output::print(&format!("\nSubscriptions:\n{}", subscriptions.join("")))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One OAuth account's token and window state, in at most two lines of 80 columns. For an
/// OAuth account, Invalid means its login was refused (a dead refresh token): the windows it
/// last reported no longer matter, what to do does.
fn subscription_line(summary: &AccountSummary, now: Millis) -> String {
    let account = &summary.account;
    let token = match account.token_expires_at {
        Some(at) if at > now => format!("token expires in {}", timefmt::duration(at - now)),
        Some(_) => "token expired".to_owned(),
        None => "token expiry unknown".to_owned(),
    };
    let refreshed = match summary.refreshed_at {
        Some(at) => format!(", refreshed {}", timefmt::ago(now, Some(at))),
        None => String::new(),
    };
    let name = output::inert(&account.name);
    let mut line = format!("  {name}: {token}{refreshed}\n");
    if account.status == AccountStatus::Invalid {
        line.push_str(&format!(
            "    needs re-auth: ccflare-cli accounts reauth {name}\n"
        ));
    } else if let Some(window) = SubscriptionJson::of(summary) {
        let part = |label: &str, used: Option<f64>, reset: Option<Millis>| {
            let used = used.map_or("?".to_owned(), |u| format!("{:.0}%", u * 100.0));
            match reset.filter(|&r| r > now) {
                Some(reset) => {
                    format!(
                        "{label} {used} (resets in {})",
                        timefmt::duration(reset - now)
                    )
                }
                None => format!("{label} {used}"),
            }
        };
        line.push_str(&format!(
            "    {}; {}; {}\n",
            part("5h", window.utilization_5h, window.resets_5h),
            part("7d", window.utilization_7d, window.resets_7d),
            output::inert(&window.status.unwrap_or_default())
        ));
    }
    line
}

/// Reads the key from standard input for `add -`: the first non-empty line, so that it never
/// appears in the shell history or the process list.
fn read_key_from_stdin() -> Result<String> {
    let line = super::first_line_of_stdin(
        "API key (input is not hidden): ",
        "reading the key from standard input",
    )?;
    let Some(line) = line else {
        bail!("no key on standard input")
    };
    Ok(line.trim().to_owned())
}

async fn add(context: &Context, args: AddArgs) -> Result<ExitCode> {
    if let Some(mode) = args.oauth.as_deref() {
        if args.name.is_some() {
            bail!(
                "with --oauth the account name is the argument: ccflare-cli accounts add --oauth {mode} NAME"
            );
        }
        let mode = ccflare_oauth::Mode::parse(mode).context("--oauth takes max or console")?;
        return add_oauth(context, mode, &args.key, args.priority).await;
    }
    let key = if args.key == "-" {
        read_key_from_stdin()?
    } else {
        args.key.trim().to_owned()
    };
    // The message names what was expected and never echoes the value: it may be a secret.
    check_api_key(&key).map_err(anyhow::Error::msg)?;
    if let Some(name) = &args.name {
        check_name(name)?;
    }
    let key = Secret::new(key);
    let db = context.open_db().await?;
    let (account, how) = accounts::upsert_api_key(
        &db,
        &key,
        args.name.as_deref(),
        args.priority,
        context.now(),
    )
    .await?;
    if how == Upsert::Unchanged
        && let Some(name) = args.name.as_deref().filter(|n| *n != account.name)
    {
        bail!(
            "this key is already stored as account {:?}; to rename it: ccflare-cli accounts rename {} {}",
            account.name,
            account.name,
            name
        );
    }
    let message = match how {
        Upsert::Created => format!(
            "added account {} ({}); {LIVE}\n",
            account.name,
            account.credential.masked()
        ),
        Upsert::Reactivated => format!(
            "account {} ({}) was marked invalid and is active again; {LIVE}\n",
            account.name,
            account.credential.masked()
        ),
        Upsert::Unchanged => format!(
            "this key is already stored as account {} ({}); nothing changed\n",
            account.name,
            account.credential.masked()
        ),
    };
    if context.json() {
        #[derive(Serialize)]
        struct Added {
            name: String,
            key: String,
            result: &'static str,
        }
        output::print_json(&Added {
            name: account.name.clone(),
            key: account.credential.masked(),
            result: match how {
                Upsert::Created => "created",
                Upsert::Reactivated => "reactivated",
                Upsert::Unchanged => "unchanged",
            },
        })?;
    } else {
        output::print(&message)?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn remove(context: &Context, args: RemoveArgs) -> Result<ExitCode> {
    let db = context.open_db().await?;
    let account = resolve(&db, &args.account).await?;
    let name = account.name.as_str();
    if !args.yes {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            bail!(
                "refusing to remove account {name:?} without confirmation: standard input is not a terminal; pass --yes"
            );
        }
        eprint!(
            "Remove account {} ({})? Its request history is kept. [y/N] ",
            account.name,
            account.credential.masked()
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        stdin
            .lock()
            .read_line(&mut answer)
            .context("reading the answer")?;
        if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            bail!("account {name:?} was not removed");
        }
    }
    accounts::remove(&db, name).await?;
    finish(
        context,
        name,
        "removed",
        format!("removed account {name}; {LIVE}"),
    )
}

async fn pause(context: &Context, given: &str) -> Result<ExitCode> {
    let db = context.open_db().await?;
    let account = resolve(&db, given).await?;
    let name = account.name.as_str();
    if account.status == AccountStatus::Paused {
        return finish(
            context,
            name,
            "unchanged",
            format!("account {name} is already paused"),
        );
    }
    accounts::set_status(&db, name, AccountStatus::Paused, context.now()).await?;
    finish(
        context,
        name,
        "paused",
        format!("paused account {name}; {LIVE}"),
    )
}

async fn resume(context: &Context, given: &str) -> Result<ExitCode> {
    let db = context.open_db().await?;
    let account = resolve(&db, given).await?;
    let name = account.name.as_str();
    let now = context.now();
    if state(&account, now).routing.is_routable() {
        return finish(
            context,
            name,
            "unchanged",
            format!("account {name} is already active"),
        );
    }
    accounts::set_status(&db, name, AccountStatus::Active, now).await?;
    let note = if account.status == AccountStatus::Invalid {
        " (it was marked invalid: if its key is still refused, it will be again)"
    } else {
        ""
    };
    finish(
        context,
        name,
        "resumed",
        format!("resumed account {name}{note}; {LIVE}"),
    )
}

async fn rename(context: &Context, given: &str, new: &str) -> Result<ExitCode> {
    check_name(new)?;
    let db = context.open_db().await?;
    let account = resolve(&db, given).await?;
    let old = account.name.as_str();
    if old == new {
        return finish(
            context,
            new,
            "unchanged",
            format!("account {old} already has that name"),
        );
    }
    accounts::rename(&db, old, new, context.now()).await?;
    finish(
        context,
        new,
        "renamed",
        format!("renamed account {old} to {new}; {LIVE}"),
    )
}

/// The one line a change prints, or its JSON.
fn finish(context: &Context, name: &str, result: &str, message: String) -> Result<ExitCode> {
    if context.json() {
        output::print_json(&serde_json::json!({ "name": name, "result": result }))?;
    } else {
        output::print(&format!("{message}\n"))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `accounts add --oauth max|console NAME`.
async fn add_oauth(
    context: &Context,
    mode: ccflare_oauth::Mode,
    name: &str,
    priority: Option<i64>,
) -> Result<ExitCode> {
    check_name(name)?;
    let db = context.open_db().await?;
    // Fail before the login, not after it, when the name is taken.
    if accounts::find(&db, name).await.is_ok() {
        bail!(
            "an account named {name:?} already exists; to renew its login: ccflare-cli accounts reauth {name}"
        );
    }
    let tokens = super::login::login(context, mode).await?;
    let now = context.now();
    let (account, kind) = match mode {
        ccflare_oauth::Mode::Max => {
            let account = ccflare_storage::oauth::add_oauth_account(
                &db,
                name,
                &tokens.access_token,
                tokens.refresh_token.as_ref(),
                tokens.expires_at,
                priority,
                now,
            )
            .await?;
            (account, "subscription")
        }
        ccflare_oauth::Mode::Console => {
            let key = super::login::mint_api_key(context, &tokens).await?;
            let (account, _) =
                accounts::upsert_api_key(&db, &key, Some(name), priority, now).await?;
            (account, "Console API key")
        }
    };
    finish(
        context,
        &account.name,
        "created",
        format!("added {kind} account {}; {LIVE}", account.name),
    )
}

/// `accounts reauth NAME`: a new login for an OAuth account, keeping everything else.
async fn reauth(context: &Context, name: &str) -> Result<ExitCode> {
    let db = context.open_db().await?;
    let account = accounts::find(&db, name).await?;
    if account.kind != ccflare_core::AccountKind::OAuth {
        bail!(
            "account {name:?} uses an API key, not a login: add the key again with `ccflare-cli accounts add`"
        );
    }
    let tokens = super::login::login(context, ccflare_oauth::Mode::Max).await?;
    ccflare_storage::oauth::reauthenticate(
        &db,
        name,
        &tokens.access_token,
        tokens.refresh_token.as_ref(),
        tokens.expires_at,
        context.now(),
    )
    .await?;
    finish(
        context,
        name,
        "reauthenticated",
        format!("renewed the login of account {name}; {LIVE}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use AccountStatus::{Active, Invalid, Paused};

    /// A stored account with this status and these benches.
    fn stored(
        status: AccountStatus,
        limited: Option<Millis>,
        overloaded: Option<Millis>,
    ) -> AccountSummary {
        AccountSummary {
            account: Account {
                status,
                rate_limited_until: limited,
                overloaded_until: overloaded,
                ..Account::new(
                    ccflare_core::AccountId(1),
                    "a",
                    ccflare_core::AccountKind::ApiKey,
                    Secret::new("sk-ant-api03-states-0123456789-wxyz"),
                )
            },
            request_count: 0,
            last_used: None,
            created_at: 0,
            last_ratelimit: None,
            refreshed_at: None,
        }
    }

    /// The table's label reads like the seed's; the JSON's `status` and `limited_until` are the
    /// pool's name and end of the state (the API's `state` and the `/metrics` gauge show the
    /// same name, from the same function), and every state is reached.
    #[test]
    fn states_read_like_the_seed_and_are_named_as_the_pool_names_them() {
        let now = 1_000_000;
        let cases = [
            (Active, None, None, "Active", "active", None),
            (Active, Some(now - 1), None, "Active", "active", None),
            (
                Active,
                Some(now + 250_000),
                Some(now + 5_000),
                "Limited (4m 10s)",
                "rate_limited",
                Some(now + 250_000),
            ),
            (
                Active,
                Some(now + 1),
                Some(now + 9),
                "Limited (1s)",
                "rate_limited",
                Some(now + 9),
            ),
            (
                Active,
                None,
                Some(now + 12_000),
                "Limited (12s)",
                "overloaded",
                Some(now + 12_000),
            ),
            (Paused, Some(now + 5_000), None, "Paused", "paused", None),
            (Invalid, None, None, "Invalid", "invalid", None),
        ];
        let mut names = std::collections::BTreeSet::new();
        for (status, limited, overloaded, label, name, until) in cases {
            let summary = stored(status, limited, overloaded);
            let state = state(&summary.account, now);
            assert_eq!(
                state.routing,
                RoutingState::of(status, limited, overloaded, now)
            );
            assert_eq!(state.label, label);
            let json = serde_json::to_value(AccountJson::new(&summary, now)).unwrap();
            assert_eq!(json["status"], name);
            assert_eq!(json["limited_until"], serde_json::json!(until));
            assert_eq!(state.routing.name(), name);
            names.insert(name);
        }
        assert_eq!(
            names,
            RoutingState::NAMES.into_iter().collect(),
            "every state is shown"
        );
    }

    #[test]
    fn names_that_would_confuse_or_leak_are_refused() {
        assert!(check_name("work-1").is_ok());
        assert!(check_name("회사").is_ok());
        for bad in ["", "two words", "-x", "sk-ant-api03-abc", &"n".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        let err = check_name("sk-ant-api03-secret").unwrap_err().to_string();
        assert!(!err.contains("secret"), "{err}");
    }
}
