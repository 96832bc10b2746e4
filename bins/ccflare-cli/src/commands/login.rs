//! The OAuth login of `accounts add --oauth` and `accounts reauth`: show the risk once, print
//! the authorize URL (and open a browser when there is a display to show it on — never failing
//! when there is none, as on servers and in containers), read the pasted `CODE#STATE`, check
//! the state, and exchange the code. Tokens, the verifier and the pasted code are never
//! printed.

use crate::context::{self, Context};
use anyhow::{Context as _, Result, bail};
use ccflare_oauth::{Endpoints, LoginFlow, Mode, TokenClient, TokenSet};
use std::io::Write;

/// SPEC §15: said where a subscription account is added.
pub const SUBSCRIPTION_RISK: &str = "\
Warning: Claude Pro/Max subscription tokens belong to Claude Code. Anthropic's terms
for Free/Pro/Max forbid automated access other than with an API key, and routing
requests through subscription credentials can get the account banned without
notice. API keys are the supported way. Continue only if you accept that risk.";

/// The endpoints as a server started now would use them (flag, env, stored, file, default).
pub async fn endpoints(context: &Context) -> Result<Endpoints> {
    let sources = context.sources()?;
    let db = context.open_db().await?;
    let stored = ccflare_storage::settings::all(&db)
        .await
        .context("reading stored settings")?;
    let settings = context::resolve(&sources, &stored)?;
    Ok(settings.oauth)
}

/// Runs one login and returns its tokens.
pub async fn login(context: &Context, mode: Mode) -> Result<TokenSet> {
    let client = TokenClient::new(endpoints(context).await?);
    let flow = LoginFlow::start(mode, client.endpoints());
    let mut out = std::io::stdout().lock();
    if mode == Mode::Max {
        writeln!(out, "{SUBSCRIPTION_RISK}\n")?;
    }
    writeln!(
        out,
        "Open this URL in a browser and log in:\n\n  {}\n",
        flow.authorize_url()
    )?;
    writeln!(
        out,
        "Then paste the code shown after login (it looks like CODE#STATE)."
    )?;
    out.flush()?;
    drop(out);
    open_browser(flow.authorize_url());
    let pasted = read_paste()?;
    let code = flow.check_pasted(&pasted)?;
    let tokens = client
        .exchange(&flow, &code, context.now())
        .await
        .context("exchanging the code for tokens")?;
    Ok(tokens)
}

/// Mints an API key with a Console login's access token.
pub async fn mint_api_key(context: &Context, tokens: &TokenSet) -> Result<ccflare_core::Secret> {
    let client = TokenClient::new(endpoints(context).await?);
    client
        .create_api_key(&tokens.access_token)
        .await
        .context("creating an API key")
}

/// Opens the URL in a browser when one can be shown: a desktop session (`DISPLAY` or
/// `WAYLAND_DISPLAY`) on Linux, always on macOS. Any failure is ignored: the URL is printed.
fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        Some("open")
    } else if std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some()
    {
        Some("xdg-open")
    } else {
        None
    };
    if let Some(opener) = opener {
        let _ = std::process::Command::new(opener)
            .arg(url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
}

/// The first non-empty line of standard input.
fn read_paste() -> Result<String> {
    match super::first_line_of_stdin("Code: ", "reading the pasted code")? {
        Some(line) => Ok(line),
        None => bail!("no code was pasted (standard input ended)"),
    }
}
