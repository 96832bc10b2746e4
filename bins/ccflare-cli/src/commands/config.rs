//! `ccflare-cli config show|set|unset`: every option with its value and where it came from, and
//! the settings stored in the database (which rank between the environment and the config
//! file). A running server re-reads stored settings every second and applies the strategy and
//! the session timeout at once; the others at its next start.

use crate::context::{self, Context, Sources};
use crate::output::{self, Align, Cell, Color, Table};
use anyhow::{Context as _, Result, bail};
use ccflare_core::config::{Layer, OPTIONS, OptionSpec, Settings, Source, storable};
use clap::{Args, Subcommand};
use serde::Serialize;
use std::process::ExitCode;

/// Options a running server applies within a second of a change in the database (see
/// `ccflare_proxy::AppState::apply_stored_settings`, and the management API's
/// `LIVE_OPTIONS` for retention); the rest wait for its next start.
const APPLIED_WHILE_RUNNING: &[&str] = &["lb_strategy", "session_timeout", "retention_days"];

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Every option, its value and where it comes from
    #[command(after_help = "\
Examples:
  ccflare-cli config show
  ccflare-cli config show --json

Sources, highest first: flag, env (including .env), database (config
set), file (the config file), default. Keys are masked.")]
    Show,
    /// Store a setting in the database
    #[command(after_help = "\
Examples:
  ccflare-cli config set lb_strategy round-robin
  ccflare-cli config set session_timeout 3600
  ccflare-cli config set CCFLARE_MAX_ATTEMPTS 3

KEY is an option's config-file key, environment variable or flag name.
A running server applies lb_strategy, session_timeout and retention_days
within about a second, the others at its next start. The environment
and flags outrank the database. What the server reads before it opens
the database cannot be stored: database_url, log_level, log_format,
log_file, require_client_keys, the admin key and the encryption key
(encryption_key, encryption_key_file).")]
    Set(SetArgs),
    /// Remove a stored setting (the config file or the default applies again)
    #[command(after_help = "Example:\n  ccflare-cli config unset lb_strategy")]
    Unset(UnsetArgs),
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// Option to store (lb_strategy, LB_STRATEGY or strategy)
    key: String,
    /// Its value
    value: String,
}

#[derive(Debug, Args)]
pub struct UnsetArgs {
    /// Option to remove from the database
    key: String,
}

pub async fn run(context: &Context, command: ConfigCommand) -> Result<ExitCode> {
    match command {
        ConfigCommand::Show => show(context).await,
        ConfigCommand::Set(args) => set(context, &args.key, &args.value).await,
        ConfigCommand::Unset(args) => unset(context, &args.key).await,
    }
}

/// An option by config-file key, environment variable or flag name.
fn find_option(name: &str) -> Result<&'static OptionSpec> {
    let trimmed = name.trim().trim_start_matches("--");
    OPTIONS
        .iter()
        .find(|o| o.key == trimmed || o.env == trimmed || o.flag == trimmed)
        .ok_or_else(|| {
            let keys: Vec<&str> = OPTIONS.iter().map(|o| o.key).collect();
            anyhow::anyhow!(
                "unknown option {name:?}: expected one of {}",
                keys.join(", ")
            )
        })
}

/// A value as it may be shown: keys masked, one by one; the admin key never.
fn shown(spec: &OptionSpec, value: &str) -> String {
    ccflare_core::config::display_value(spec, value).replace(',', ", ")
}

#[derive(Serialize)]
struct OptionJson {
    key: &'static str,
    env: &'static str,
    value: String,
    source: &'static str,
}

#[derive(Serialize)]
struct ShowJson {
    options: Vec<OptionJson>,
    config_file: Option<String>,
    /// Why the configuration would not start a server, if it would not.
    error: Option<String>,
}

/// Where each option's value comes from, as `Settings::resolve_with_database` ranks them. Used
/// only when resolving fails (an invalid value), to still show every row.
fn raw_sources(sources: &Sources, stored: &Layer) -> Vec<(&'static OptionSpec, Source, String)> {
    OPTIONS
        .iter()
        .map(|spec| {
            let found = [
                (Source::Flag, &sources.flags),
                (Source::Env, &sources.env),
                (Source::Database, stored),
                (Source::File, &sources.file),
            ]
            .into_iter()
            .filter(|(source, _)| *source != Source::Database || storable(spec.key))
            .find_map(|(source, layer)| layer.get(spec.key).map(|v| (source, v.clone())))
            .unwrap_or((Source::Default, spec.default.to_owned()));
            (spec, found.0, found.1)
        })
        .collect()
}

async fn show(context: &Context) -> Result<ExitCode> {
    let sources = context.sources()?;
    let database_url = context.database_url(&sources)?;
    let db = ccflare_storage::Db::open(&database_url).await?;
    let stored = ccflare_storage::settings::all(&db)
        .await
        .context("reading stored settings")?;
    let resolved = context::resolve(&sources, &stored);
    let rows: Vec<(&'static OptionSpec, Source, String)> = match &resolved {
        Ok(settings) => OPTIONS
            .iter()
            .map(|spec| {
                let (source, raw) = settings.sources[spec.key].clone();
                (spec, source, raw)
            })
            .collect(),
        Err(_) => raw_sources(&sources, &stored),
    };
    let value_of = |spec: &OptionSpec, raw: &str| -> String {
        if spec.key == "database_url" && raw.trim().is_empty() {
            // The platform default, which is what the server opens.
            database_url.clone()
        } else if raw.is_empty() {
            "-".to_owned()
        } else {
            shown(spec, raw)
        }
    };
    let error = resolved.as_ref().err().map(|e| format!("{e:#}"));
    if context.json() {
        output::print_json(&ShowJson {
            options: rows
                .iter()
                .map(|(spec, source, raw)| OptionJson {
                    key: spec.key,
                    env: spec.env,
                    value: value_of(spec, raw),
                    source: source.as_str(),
                })
                .collect(),
            config_file: sources.config_file.as_deref().map(context::show_path),
            error: error.clone(),
        })?;
    } else {
        let mut table = Table::new(&[
            ("OPTION", Align::Left),
            ("VALUE", Align::Left),
            ("SOURCE", Align::Left),
        ])
        .flex(1)
        .wrap();
        for (spec, source, raw) in &rows {
            let color = (*source == Source::Default).then_some(Color::Dim);
            table.row(vec![
                spec.key.into(),
                value_of(spec, raw).into(),
                Cell::colored(source.as_str(), color),
            ]);
        }
        let mut text = table.render(&context.style);
        match &sources.config_file {
            Some(path) => text.push_str(&format!("config file: {}\n", context::show_path(path))),
            None => text.push_str("config file: none\n"),
        }
        output::print(&text)?;
        if let Some(error) = &error {
            bail!("the configuration is not valid: {error}");
        }
    }
    Ok(if error.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// When a running server applies a change of `key`.
fn when_applied(key: &str) -> &'static str {
    if APPLIED_WHILE_RUNNING.contains(&key) {
        "a running server applies it within about a second"
    } else {
        "a running server applies it at its next start"
    }
}

async fn set(context: &Context, name: &str, value: &str) -> Result<ExitCode> {
    let spec = find_option(name)?;
    if !storable(spec.key) {
        bail!(
            "{} cannot be stored in the database: it is read before the database is opened; set {} or the config file instead",
            spec.key,
            spec.env
        );
    }
    let value = value.trim();
    // Validated alone, so that an unrelated bad value elsewhere does not block this one; the
    // error names the option, the value (never a key) and what is allowed.
    let mut candidate = Layer::new();
    candidate.insert(spec.key.to_owned(), value.to_owned());
    let checked =
        Settings::resolve_with_database(&Layer::new(), &Layer::new(), &candidate, &Layer::new())?;
    // One spelling in the database, whichever the person typed (`round_robin`, `Priority`).
    let normalized;
    let value = if spec.key == "lb_strategy" {
        normalized = checked.strategy.as_str().to_owned();
        normalized.as_str()
    } else {
        value
    };

    let sources = context.sources()?;
    let db = ccflare_storage::Db::open(&context.database_url(&sources)?).await?;
    ccflare_storage::settings::set(&db, spec.key, value, context.now())
        .await
        .with_context(|| format!("storing {}", spec.key))?;
    let outranked = sources.env.contains_key(spec.key);
    if context.json() {
        output::print_json(&serde_json::json!({
            "key": spec.key,
            "value": shown(spec, value),
            "applied_while_running": APPLIED_WHILE_RUNNING.contains(&spec.key),
            "outranked_by_env": outranked,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut text = format!(
        "stored {} = {}; {}\n",
        spec.key,
        shown(spec, value),
        when_applied(spec.key)
    );
    if outranked {
        text.push_str(&format!(
            "note: {} is set in this environment (or .env), which outranks the database\n",
            spec.env
        ));
    }
    output::print(&text)?;
    Ok(ExitCode::SUCCESS)
}

async fn unset(context: &Context, name: &str) -> Result<ExitCode> {
    let spec = find_option(name)?;
    let db = context.open_db().await?;
    let removed = ccflare_storage::settings::unset(&db, spec.key)
        .await
        .with_context(|| format!("removing {}", spec.key))?;
    if context.json() {
        output::print_json(&serde_json::json!({ "key": spec.key, "removed": removed }))?;
    } else if removed {
        output::print(&format!(
            "removed the stored {}; the config file or the default applies again ({})\n",
            spec.key,
            when_applied(spec.key)
        ))?;
    } else {
        output::print(&format!(
            "no stored value for {}; nothing changed\n",
            spec.key
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_found_by_key_env_or_flag() {
        for name in ["lb_strategy", "LB_STRATEGY", "strategy", "--strategy"] {
            assert_eq!(find_option(name).unwrap().key, "lb_strategy");
        }
        let err = find_option("stratgy").unwrap_err().to_string();
        assert!(
            err.contains("\"stratgy\"") && err.contains("lb_strategy"),
            "{err}"
        );
    }

    #[test]
    fn keys_are_masked_one_by_one() {
        let spec = find_option("api_keys").unwrap();
        assert_eq!(
            shown(
                spec,
                "sk-ant-api03-aaaaaaaaaaaaaaaa-1111,sk-ant-api03-bbbbbbbbbbbbbbbb-2222"
            ),
            "sk-ant-…1111, sk-ant-…2222"
        );
        assert_eq!(shown(find_option("port").unwrap(), "80"), "80");
    }
}
