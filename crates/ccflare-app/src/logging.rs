//! Where a server's log lines go. The log feed (`/api/logs/stream`, the UI's Logs tab) always
//! gets info and above; the terminal gets them only when the server runs headless, since with
//! the UI open the terminal is the UI's; a file named by `log_file` gets them either way.
//! `LOG_LEVEL` (or `RUST_LOG`) filters the terminal and the file, in text or JSON as
//! `LOG_FORMAT` says.

mod text;

use ccflare_api::LogFeed;
use ccflare_core::config::Settings;
use std::fs::{File, OpenOptions};
use std::sync::Mutex;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// Whether the server may write to the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logging {
    /// Headless: log lines on stderr (`ccflare-server`, `ccflare --serve`).
    Terminal,
    /// A UI owns the terminal: nothing is written to it; the lines reach the log feed (and
    /// the log file when one is set).
    Quiet,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the log file {path} (CCFLARE_LOG_FILE)")]
pub struct LogFileError {
    path: String,
    #[source]
    source: std::io::Error,
}

type Boxed = Box<dyn Layer<Registry> + Send + Sync>;

/// A formatting layer for `writer`, filtered by `LOG_LEVEL`/`RUST_LOG`, in `LOG_FORMAT`.
fn lines<W>(settings: &Settings, writer: W, ansi: bool) -> Boxed
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    // RUST_LOG is for experts who want per-module levels; LOG_LEVEL is the documented knob.
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| EnvFilter::new(&settings.log_level));
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    if settings.log_json {
        layer.json().with_filter(filter).boxed()
    } else {
        layer
            .with_ansi(ansi)
            .event_format(text::Text)
            .with_filter(filter)
            .boxed()
    }
}

/// Installs the process's log subscriber: `feed` always, stderr for [`Logging::Terminal`], the
/// log file when `settings` names one. Only the first call in a process installs one (tests
/// that start several servers share it).
pub fn init(settings: &Settings, feed: &LogFeed, logging: Logging) -> Result<(), LogFileError> {
    let mut layers: Vec<Boxed> = Vec::new();
    if logging == Logging::Terminal {
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        layers.push(lines(settings, std::io::stderr, ansi));
    }
    if let Some(path) = &settings.log_file {
        // Appends are small writes of whole lines, like those to stderr; a lock keeps lines
        // from different threads whole.
        let file: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| LogFileError {
                path: path.clone(),
                source,
            })?;
        layers.push(lines(settings, Mutex::new(file), false));
    }
    // The feed always keeps info and above, whatever LOG_LEVEL says.
    layers.push(feed.layer().with_filter(LevelFilter::INFO).boxed());
    let _ = tracing_subscriber::registry().with(layers).try_init();
    Ok(())
}
