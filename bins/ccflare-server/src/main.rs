//! `ccflare-server`: the server, headless. Start-up, serving and shutdown are `ccflare-app`'s
//! (the `ccflare` binary runs the same under its terminal UI); here are only the command
//! line's name, the banner and the exit status. Errors are printed once, as one line, and the
//! exit code is non-zero.

use ccflare_app::{LoadError, Logging, Server, ShutdownSignals};
use std::process::ExitCode;

const NAME: &str = "ccflare-server";

fn main() -> ExitCode {
    let command = ccflare_app::cli::command(
        NAME,
        "A proxy for the Anthropic API that spreads requests over a pool of Claude accounts",
    );
    let loaded = match ccflare_app::cli::load(command, std::env::args_os()) {
        Ok((loaded, _)) => loaded,
        Err(LoadError::Clap(error)) => error.exit(),
        Err(error) => {
            eprintln!("{NAME}: error: {:#}", anyhow::Error::from(error));
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{NAME}: error: starting the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(loaded)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{NAME}: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(loaded: ccflare_app::Loaded) -> anyhow::Result<()> {
    let server = Server::start(loaded, Logging::Terminal).await?;
    // Before the banner: whoever reads it (a supervisor, a test) may stop the server at once,
    // and a signal that comes before its handler exists would kill the process outright
    // instead of shutting it down cleanly. From here on, a signal waits for the server to
    // see it.
    let signals = ShutdownSignals::listen()?;
    server.print_banner(NAME);
    server.serve(signals.recv()).wait().await?;
    Ok(())
}
