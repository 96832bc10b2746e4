//! `ccflare`: the server of `ccflare-server`, started in this process, under the terminal UI
//! (`ccflare-tui`). The same command line, configuration, database and port as
//! `ccflare-server` (both start through `ccflare-app`); `--serve` runs headless exactly as
//! `ccflare-server` does.
//!
//! With the UI open the server writes nothing to the terminal: its log lines go to the Logs
//! tab (and to the log file, when one is set). Quitting (`q`, Ctrl-C) or SIGTERM drains and
//! stops the server as SIGTERM stops `ccflare-server`; once the terminal is restored, one line
//! says how it ended. Without a terminal on standard input and output, it says to use
//! `--serve` and exits 2, having started nothing.

mod source;

use ccflare_app::{LoadError, Loaded, Logging, Server, ShutdownSignals, one_line};
use ccflare_tui::{Exit, Theme};
use clap::{Arg, ArgAction};
use source::InProcess;
use std::io::IsTerminal;
use std::process::ExitCode;

const NAME: &str = "ccflare";

/// Exit status when the UI cannot open (not a terminal), as for a usage error.
const USAGE: u8 = 2;

fn main() -> ExitCode {
    let command = ccflare_app::cli::command(
        NAME,
        "A proxy for the Anthropic API that spreads requests over a pool of Claude accounts, \
         with a terminal UI",
    )
    .arg(
        Arg::new("serve")
            .long("serve")
            .action(ArgAction::SetTrue)
            .help("run headless, without the terminal UI (as ccflare-server does)"),
    );
    let (loaded, matches) = match ccflare_app::cli::load(command, std::env::args_os()) {
        Ok(loaded) => loaded,
        Err(LoadError::Clap(error)) => error.exit(),
        Err(error) => {
            eprintln!("{NAME}: error: {}", one_line(&error));
            return ExitCode::from(USAGE);
        }
    };
    let serve = matches.get_flag("serve");
    let terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    if !serve && !terminal {
        eprintln!(
            "{NAME}: the terminal UI needs a terminal on standard input and output; to run the \
             server without it, use `ccflare --serve` or `ccflare-server`"
        );
        return ExitCode::from(USAGE);
    }
    if serve {
        return ccflare_app::serve_headless(loaded, NAME);
    }
    let Some(runtime) = ccflare_app::runtime(NAME) else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(with_ui(loaded))
}

/// The UI runs on this thread (the server's tasks run on the runtime's workers): it gets the
/// lowest priority, so that on a busy machine its frames wait for the proxy, not the other way
/// round. Measured at 1,000 streams/s on two vCPUs: stream overhead p99 +0.40/+0.60 ms instead
/// of +0.51/+0.82 (docs/benchmarks.md, "With the terminal UI open"). On Linux the nice value
/// is the thread's own, and threads this one starts later (the terminal's input reader)
/// inherit it; the server's threads all exist by now and keep theirs.
fn yield_to_the_proxy() {
    // Lowering one's own priority is always allowed; were it refused, the UI would run as
    // before, which is no reason to stop.
    let _ = rustix::process::setpriority_process(None, UI_NICE);
}

/// The nice value of the UI's thread: the lowest priority.
const UI_NICE: i32 = 19;

/// Starts the server, runs the UI over it until the person quits or a signal comes, then
/// drains and stops the server and says how it went.
async fn with_ui(loaded: Loaded) -> ExitCode {
    // Until the UI opens, failures are printed as usual.
    let server = match Server::start(loaded, Logging::Quiet).await {
        Ok(server) => server,
        Err(error) => {
            eprintln!("{NAME}: error: {}", one_line(&error));
            // A missing or wrong encryption key is configuration, as in `ccflare-server`.
            return if error.is_configuration() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            };
        }
    };
    let signals = match ShutdownSignals::listen() {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("{NAME}: error: {}", one_line(&error));
            return ExitCode::FAILURE;
        }
    };
    let url = server.url();
    let source = InProcess::new(&server.handles()).await;
    // SIGTERM and SIGINT stop the server as they stop ccflare-server; the UI ends when the
    // server stops accepting, whoever asked.
    let running = server.serve(signals.recv());
    yield_to_the_proxy();
    let ui = ccflare_tui::run(source, Theme::from_env(), running.stopping()).await;
    // The terminal is the shell's again (the UI's guard restored it on every way out).
    running.stop();
    let stopped = running.wait().await;
    let ui_failed = match &ui {
        Ok(Exit::Quit | Exit::Shutdown | Exit::InputClosed) => false,
        Err(error) => {
            eprintln!("{NAME}: error: {error}");
            true
        }
    };
    match stopped {
        Ok(stopped) => {
            let how = if matches!(ui, Ok(Exit::Shutdown)) {
                " on a signal"
            } else {
                ""
            };
            let drained = match stopped.cut_connections {
                0 => "requests in flight finished".to_owned(),
                n => format!("{n} connections still open at the shutdown deadline were cut"),
            };
            println!(
                "{NAME}: stopped the server on {url}{how}: {drained}; every record is written"
            );
            if ui_failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(error) => {
            eprintln!("{NAME}: error: {}", one_line(&error));
            ExitCode::FAILURE
        }
    }
}
