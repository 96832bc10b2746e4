//! `ccflare-cli`: accounts, stats, logs, configuration and checks from the terminal, against
//! the same database as the server, whether or not a server is running. This file is argument
//! parsing and glue; each command lives in `commands/`. Errors are printed once, as one line
//! (`ccflare-cli: error: …`), with a non-zero exit code.

mod commands;
mod context;
mod output;
mod timefmt;

use clap::{Parser, Subcommand};
use context::{Context, GlobalArgs};
use std::process::ExitCode;

const EXAMPLES: &str = "\
Examples:
  ccflare-cli accounts add sk-ant-api03-… --name work
  ccflare-cli accounts list
  ccflare-cli keys create alice --budget-usd 20
  ccflare-cli stats daily
  ccflare-cli logs --last 50 --error-only
  ccflare-cli logs --follow
  ccflare-cli config set lb_strategy round-robin
  ccflare-cli doctor
  ccflare-cli db check

It reads the configuration as ccflare-server does: flags, the environment
(and .env in the working directory), the config file. Changes reach a
running server within about two seconds.";

/// The command line: subcommands, and the global flags every one accepts.
#[derive(Debug, Parser)]
#[command(
    name = "ccflare-cli",
    version,
    about = "Manage ccflare's accounts and read its stats and logs, with or without a\nrunning server",
    after_help = EXAMPLES
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Add, list, pause, resume, rename and remove accounts
    #[command(subcommand)]
    Accounts(commands::accounts::AccountsCommand),
    /// Create, list, disable and limit the client keys /v1 accepts
    #[command(subcommand)]
    Keys(commands::keys::KeysCommand),
    /// Requests, tokens, cost, errors and latency per day, hour or model
    #[command(subcommand)]
    Stats(commands::stats::StatsCommand),
    /// Recent requests, filtered; --follow shows new ones as they happen
    Logs(commands::logs::LogsArgs),
    /// Which strategy would have served the recorded traffic best
    Replay(commands::replay::ReplayArgs),
    /// Show every option and where its value comes from; store settings
    #[command(subcommand)]
    Config(commands::config::ConfigCommand),
    /// Check the database, the configuration, the accounts and the upstream
    Doctor(commands::doctor::DoctorArgs),
    /// Check the database file for damage; salvage a damaged one
    #[command(subcommand)]
    Db(commands::db::DbCommand),
    /// Encrypt, re-key or decrypt the stored account keys and tokens
    #[command(subcommand)]
    Secrets(commands::secrets::SecretsCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&anyhow::Error::new(error).context("starting the runtime")),
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => fail(&error),
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // The server's setup step is `cp .env.example .env`; the CLI run from the same folder
    // must find the same database.
    ccflare_config::load_dotenv()?;
    let context = Context::new(cli.global)?;
    match cli.command {
        Command::Accounts(command) => commands::accounts::run(&context, command).await,
        Command::Keys(command) => commands::keys::run(&context, command).await,
        Command::Stats(command) => commands::stats::run(&context, command).await,
        Command::Logs(args) => commands::logs::run(&context, args).await,
        Command::Replay(args) => commands::replay::run(&context, args).await,
        Command::Config(command) => commands::config::run(&context, command).await,
        Command::Doctor(args) => commands::doctor::run(&context, args).await,
        Command::Db(command) => commands::db::run(&context, command).await,
        Command::Secrets(command) => commands::secrets::run(&context, command).await,
    }
}

/// Prints the error chain as one line: a TOML parse error, for one, spans several lines.
fn fail(error: &anyhow::Error) -> ExitCode {
    let mut text = format!("{error:#}");
    // SQLite's busy error after the 5 s busy timeout reaches us as database text (the CLI does
    // not name sqlx); say what it means for the person at the terminal.
    if text.contains("database is locked") {
        text = format!(
            "the database is locked by another process (waited 5 s for it); try again: {text}"
        );
    }
    let line = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!("ccflare-cli: error: {line}");
    ExitCode::FAILURE
}
