//! `ccflare-cli secrets status | encrypt | rotate | decrypt`: the accounts' keys and OAuth
//! tokens at rest. `encrypt` writes every one of them encrypted with the configured key
//! (`CCFLARE_ENCRYPTION_KEY_FILE`, `CCFLARE_ENCRYPTION_KEY` or systemd's credential), `rotate`
//! re-encrypts them with a new key read from a file, `decrypt` writes them back in plaintext.
//! Each is one transaction (`ccflare_storage::secrets::rewrite`): all of them change or none.

use crate::context::Context;
use crate::output;
use anyhow::{Context as _, Result, bail};
use ccflare_storage::EncryptionKey;
use ccflare_storage::secrets::{self, Rewritten};
use clap::{Args, Subcommand};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

const NO_KEY: &str = "no encryption key is configured: set CCFLARE_ENCRYPTION_KEY_FILE to a file \
                      holding 32 bytes as 64 hex characters (make one with `openssl rand -hex \
                      32`), or CCFLARE_ENCRYPTION_KEY";

#[derive(Debug, Subcommand)]
#[command(after_help = "\
Examples:
  ccflare-cli secrets status
  CCFLARE_ENCRYPTION_KEY_FILE=/etc/ccflare/key ccflare-cli secrets encrypt
  ccflare-cli secrets rotate --new-key-file /etc/ccflare/key.new
  ccflare-cli secrets decrypt

Each change rewrites every key and token in one transaction: all or none.
Stop the server before rotate and decrypt, and start it with the new key
(or none): a server keeps the key it started with.")]
pub enum SecretsCommand {
    /// How the accounts' keys and tokens are stored, and with which key
    #[command(after_help = "\
Examples:
  ccflare-cli secrets status
  ccflare-cli secrets status --json

Counts the keys and tokens stored encrypted and in plaintext, and names
the keys (by id) they are encrypted with and the one configured.")]
    Status,
    /// Encrypt every key and token with the configured encryption key
    #[command(after_help = "\
Examples:
  openssl rand -hex 32 > /etc/ccflare/key && chmod 600 /etc/ccflare/key
  CCFLARE_ENCRYPTION_KEY_FILE=/etc/ccflare/key ccflare-cli secrets encrypt

One transaction: every key and token is encrypted, or none is. A server
started with the same key reads them; new ones are encrypted as written.")]
    Encrypt,
    /// Re-encrypt every key and token with a new key (from a file)
    #[command(after_help = "\
Examples:
  ccflare-cli secrets rotate --new-key-file /etc/ccflare/key.new

Reads with the configured key, writes with the new one, in one
transaction. Stop the server first; start it with the new key.")]
    Rotate(RotateArgs),
    /// Write every key and token back in plaintext
    #[command(after_help = "\
Examples:
  ccflare-cli secrets decrypt

Reads with the configured key and stores every key and token in
plaintext, in one transaction. Stop the server first; start it without
a key.")]
    Decrypt,
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// File holding the new key (in hex or base64)
    #[arg(long, value_name = "PATH")]
    new_key_file: PathBuf,
}

pub async fn run(context: &Context, command: SecretsCommand) -> Result<ExitCode> {
    let sources = context.sources()?;
    let url = context.database_url(&sources)?;
    let key = context.encryption_key(&sources)?;
    let db = ccflare_storage::Db::open(&url)
        .await?
        .with_encryption_key(key.clone());
    let result = match command {
        SecretsCommand::Status => status(context, &db).await,
        SecretsCommand::Encrypt => {
            let Some(key) = key else { bail!(NO_KEY) };
            let done = secrets::rewrite(&db, Some(&key))
                .await
                .context("encrypting the accounts' keys and tokens")?;
            report(
                context,
                "encrypt",
                &done,
                Some(&key),
                format!(
                    "encrypted the keys and tokens of {} with key {}",
                    accounts(done.accounts),
                    key.id()
                ),
            )
        }
        SecretsCommand::Rotate(args) => {
            let Some(old) = key else { bail!(NO_KEY) };
            let new = EncryptionKey::read_file(&args.new_key_file)?;
            if new.id() == old.id() {
                bail!("the new key is the key already configured ({})", old.id());
            }
            let done = secrets::rewrite(&db, Some(&new))
                .await
                .context("re-encrypting the accounts' keys and tokens")?;
            report(
                context,
                "rotate",
                &done,
                Some(&new),
                format!(
                    "re-encrypted the keys and tokens of {} with key {} (was {}); configure it \
                     now: CCFLARE_ENCRYPTION_KEY_FILE={} (the old key no longer opens them)",
                    accounts(done.accounts),
                    new.id(),
                    old.id(),
                    args.new_key_file.display()
                ),
            )
        }
        SecretsCommand::Decrypt => {
            let Some(key) = key else { bail!(NO_KEY) };
            let done = secrets::rewrite(&db, None)
                .await
                .context("decrypting the accounts' keys and tokens")?;
            report(
                context,
                "decrypt",
                &done,
                None,
                format!(
                    "decrypted the keys and tokens of {} (were under key {}): they are stored in \
                     plaintext now; remove the encryption key from the configuration",
                    accounts(done.accounts),
                    key.id()
                ),
            )
        }
    };
    db.close().await;
    result
}

fn accounts(n: u64) -> String {
    format!("{n} account{}", if n == 1 { "" } else { "s" })
}

fn report(
    context: &Context,
    action: &str,
    done: &Rewritten,
    key: Option<&EncryptionKey>,
    line: String,
) -> Result<ExitCode> {
    if context.json() {
        output::print_json(&json!({
            "action": action,
            "accounts": done.accounts,
            "values": done.values,
            "key": key.map(|key| key.id().to_string()),
            "log_truncated": done.log_truncated,
        }))?;
    } else {
        let mut text = format!("{line}\n");
        if !done.log_truncated {
            text.push_str(
                "note: another process (a running server) is reading the database: the old \
                 values leave its write-ahead log at its next checkpoint\n",
            );
        }
        output::print(&text)?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn status(context: &Context, db: &ccflare_storage::Db) -> Result<ExitCode> {
    let status = secrets::status(db).await?;
    let configured = db.encryption_key().map(|key| key.id().to_string());
    let stored: Vec<String> = status.keys.iter().map(ToString::to_string).collect();
    if context.json() {
        output::print_json(&json!({
            "plaintext": status.plaintext,
            "encrypted": status.encrypted,
            "encrypted_with": stored,
            "configured_key": configured,
            "settings_holding_keys": status.settings_holding_keys,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut text = format!(
        "keys and tokens  {} encrypted, {} in plaintext\n",
        status.encrypted, status.plaintext
    );
    if !stored.is_empty() {
        text.push_str(&format!("encrypted with   key {}\n", stored.join(", key ")));
    }
    text.push_str(&format!(
        "configured key   {}\n",
        configured.map_or_else(|| "none".to_owned(), |id| format!("key {id}"))
    ));
    for key in &status.settings_holding_keys {
        text.push_str(&format!(
            "warning: the stored setting {key} holds a key in plaintext: remove it with \
             `ccflare-cli config unset {key}`\n"
        ));
    }
    output::print(&text)?;
    Ok(ExitCode::SUCCESS)
}
