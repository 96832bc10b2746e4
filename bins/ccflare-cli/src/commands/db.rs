//! `ccflare-cli db check` and `db recover`: is the database file damaged, and if it is, save
//! what is readable of it into a new file (accounts, keys and tokens, settings, then request
//! rows; rollups rebuilt from the rows). `db backup`: a consistent copy of the database while
//! the server runs. All only read the database the server uses: it is opened read-only, never
//! created and never migrated (`ccflare_storage::maintenance`). The new file is put in place by
//! a person, with the server stopped; `recover` says how, and docs/deployment.md for a backup.

use crate::context::{self, Context};
use crate::output::{self, Align, Table};
use anyhow::{Context as _, Result};
use ccflare_storage::maintenance::{self, CheckReport, Depth, Method, RecoverReport};
use clap::{Args, Subcommand};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Check the database file for damage (exit 1 when damaged)
    Check(CheckArgs),
    /// Save what is readable of a damaged database into a new file
    Recover(RecoverArgs),
    /// Copy the database into a new file, safely while the server runs
    Backup(BackupArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ccflare-cli db backup ./ccflare-$(date +%F).db
  ccflare-cli --database-url /srv/ccflare.db db backup /backups/ccflare.db

Safe beside a running server: the copy is one snapshot (SQLite's VACUUM
INTO), holding every request committed before it began. The new file is
readable by its owner only (it holds the accounts' keys) and is checked once
written. To restore: stop the server, move the database (and its -wal and
-shm files) aside, put the backup in its place, start the server.")]
pub struct BackupArgs {
    /// The new database file to write (must not exist)
    #[arg(value_name = "FILE")]
    output: PathBuf,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ccflare-cli db check
  ccflare-cli db check --full
  ccflare-cli --database-url /srv/ccflare/ccflare.db db check --json

Opens the database read-only, never creating or migrating it, so it may
run beside a server. Exit 0 when the file is sound, 1 with one line per
problem.")]
pub struct CheckArgs {
    /// Also check every index against its table (integrity_check; slower)
    #[arg(long)]
    full: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ccflare-cli db recover --output ./ccflare-recovered.db

Writes a new file and never changes the damaged one: accounts (keys and
OAuth tokens) and settings first, then every readable request row; the
rollups are rebuilt from the saved rows. Stop the server first, then follow
the steps it prints to put the new file in place.")]
pub struct RecoverArgs {
    /// The new database file to write (must not exist)
    #[arg(long, short, value_name = "PATH")]
    output: PathBuf,
}

pub async fn run(context: &Context, command: DbCommand) -> Result<ExitCode> {
    let sources = context.sources()?;
    let url = context.database_url(&sources)?;
    let path = ccflare_storage::database_path(&url)?;
    match command {
        DbCommand::Check(args) => check(context, &path, args).await,
        DbCommand::Recover(args) => recover(context, &path, args).await,
        DbCommand::Backup(args) => backup(context, &path, args).await,
    }
}

async fn backup(context: &Context, path: &Path, args: BackupArgs) -> Result<ExitCode> {
    let report = maintenance::backup(path, &args.output)
        .await
        .context("backing up the database")?;
    if context.json() {
        output::print_json(&json!({
            "source": path,
            "destination": args.output,
            "ok": report.ok(),
            "check": check_json(&report),
        }))?;
    } else {
        let mut text = format!(
            "backed up {} into {}\n",
            context::show_path(path),
            context::show_path(&args.output)
        );
        text.push_str(&check_text(&report));
        output::print(&text)?;
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn check(context: &Context, path: &Path, args: CheckArgs) -> Result<ExitCode> {
    let depth = if args.full { Depth::Full } else { Depth::Quick };
    let report = maintenance::check(path, depth)
        .await
        .context("checking the database")?;
    if context.json() {
        output::print_json(&check_json(&report))?;
    } else {
        let mut text = check_text(&report);
        if !report.ok() {
            text.push_str(
                "result    damaged: stop the server and run `ccflare-cli db recover --output \
                 NEW.db`\n",
            );
        }
        output::print(&text)?;
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn check_text(report: &CheckReport) -> String {
    let mut text = format!("database  {}\n", context::show_path(&report.path));
    if let (Some(count), Some(size)) = (report.page_count, report.page_size) {
        text.push_str(&format!(
            "pages     {} of {} bytes\n",
            output::count(count),
            output::count(size)
        ));
    }
    if let Some(version) = report.schema_version {
        text.push_str(&format!("schema    version {version}\n"));
    }
    if !report.tables.is_empty() {
        let rows: Vec<String> = report
            .tables
            .iter()
            .map(|(table, rows)| match rows {
                Ok(n) => format!("{table} {}", output::count(*n)),
                Err(_) => format!("{table} unreadable"),
            })
            .collect();
        text.push_str(&format!("rows      {}\n", rows.join(", ")));
    }
    let pragma = report.depth.pragma();
    match report.problems.len() {
        0 => text.push_str(&format!("check     {pragma}: ok\n")),
        n => {
            text.push_str(&format!(
                "check     {pragma}: {n} problem{}\n",
                if n == 1 { "" } else { "s" }
            ));
            for problem in &report.problems {
                text.push_str(&format!("problem   {problem}\n"));
            }
        }
    }
    text
}

fn check_json(report: &CheckReport) -> serde_json::Value {
    json!({
        "database": report.path,
        "ok": report.ok(),
        "check": report.depth.pragma(),
        "problems": report.problems,
        "page_size": report.page_size,
        "page_count": report.page_count,
        "schema_version": report.schema_version,
        "tables": report.tables.iter().map(|(table, rows)| json!({
            "table": table,
            "rows": rows.as_ref().ok(),
            "error": rows.as_ref().err(),
        })).collect::<Vec<_>>(),
    })
}

async fn recover(context: &Context, path: &Path, args: RecoverArgs) -> Result<ExitCode> {
    let report = maintenance::recover(path, &args.output)
        .await
        .context("recovering the database")?;
    let ok = report.check.ok();
    if context.json() {
        output::print_json(&recover_json(&report))?;
    } else {
        output::print(&recover_text(context, &report))?;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn recover_text(context: &Context, report: &RecoverReport) -> String {
    let source = context::show_path(&report.source);
    let destination = context::show_path(&report.destination);
    let mut text = format!("saved {source} into {destination}\n");
    match &report.method {
        Method::VacuumInto => text.push_str("every row was readable: the file was copied whole\n"),
        Method::TableByTable { vacuum_error } => text.push_str(&format!(
            "it does not read whole ({vacuum_error}): copied table by table\n"
        )),
    }
    text.push('\n');
    let mut table = Table::new(&[
        ("TABLE", Align::Left),
        ("SAVED", Align::Right),
        ("LOST", Align::Right),
        ("UNREADABLE ROWIDS", Align::Left),
    ])
    .flex(3)
    .wrap();
    for saved in &report.tables {
        let lost = match saved.lost() {
            Some(n) => output::count(n as i64),
            None if saved.skipped.is_empty() && saved.error.is_none() => "0".to_owned(),
            None => "?".to_owned(),
        };
        let mut ranges: Vec<String> = saved
            .skipped
            .iter()
            .take(3)
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        if saved.skipped.len() > 3 {
            ranges.push(format!("and {} more ranges", saved.skipped.len() - 3));
        }
        let unreadable = match (&saved.error, saved.copied, ranges.is_empty()) {
            (Some(reason), 0, true) => format!("all: {reason}"),
            _ => ranges.join(", "),
        };
        table.row(vec![
            saved.table.as_str().into(),
            output::count(saved.copied as i64).into(),
            lost.into(),
            unreadable.into(),
        ]);
    }
    text.push_str(&table.render(&context.style));
    for saved in &report.tables {
        if saved.from_pages > 0 {
            text.push_str(&format!(
                "{}: {} rows read straight from the file's pages (SQLite could not reach them)\n",
                saved.table,
                output::count(saved.from_pages as i64)
            ));
        }
        if let Some(reason) = &saved.pages_unread {
            text.push_str(&format!(
                "{}: pages not read directly: {reason}\n",
                saved.table
            ));
        }
    }
    text.push_str(&format!(
        "rollups rebuilt from the {} saved requests\n",
        output::count(report.requests() as i64)
    ));
    for table in &report.left_behind {
        text.push_str(&format!(
            "left behind: table {table} (unknown to this ccflare)\n"
        ));
    }
    if report.check.ok() {
        text.push_str(&format!(
            "the new file checks ok ({})\n",
            report.check.depth.pragma()
        ));
    } else {
        text.push_str("the new file does not check ok:\n");
        for problem in &report.check.problems {
            text.push_str(&format!("problem   {problem}\n"));
        }
        return text;
    }

    let aside = |suffix: &str| {
        let mut name = report.source.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    text.push_str("\nNext, to use it:\n  1. stop the server\n  2. move the old file aside");
    text.push_str(" (its -wal and -shm files too: SQLite would read them as\n");
    text.push_str("     part of the new one):\n");
    for suffix in ["", "-wal", "-shm"] {
        let file = aside(suffix);
        if suffix.is_empty() || file.exists() {
            text.push_str(&format!(
                "       mv {} {}\n",
                context::show_path(&file),
                context::show_path(&aside(&format!(".damaged{suffix}")))
            ));
        }
    }
    text.push_str(&format!(
        "  3. put the new one where DATABASE_URL points:\n       mv {destination} {source}\n"
    ));
    text.push_str("  4. start the server, and check: ccflare-cli db check\n");
    text
}

fn recover_json(report: &RecoverReport) -> serde_json::Value {
    let (method, vacuum_error) = match &report.method {
        Method::VacuumInto => ("vacuum_into", None),
        Method::TableByTable { vacuum_error } => ("table_by_table", Some(vacuum_error)),
    };
    json!({
        "source": report.source,
        "destination": report.destination,
        "method": method,
        "vacuum_error": vacuum_error,
        "tables": report.tables.iter().map(|t| json!({
            "table": t.table,
            "saved": t.copied,
            "in_source": t.in_source,
            "lost": t.lost(),
            "unreadable_rowids": t.skipped,
            "error": t.error,
            "from_pages": t.from_pages,
            "pages_unread": t.pages_unread,
        })).collect::<Vec<_>>(),
        "rollups_rebuilt_from": report.requests(),
        "left_behind": report.left_behind,
        "ok": report.check.ok(),
        "check": check_json(&report.check),
    })
}
