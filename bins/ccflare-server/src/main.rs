//! `ccflare-server`: the server, headless. Start-up, serving and shutdown are `ccflare-app`'s
//! (the `ccflare` binary runs the same, under its terminal UI or with `--serve`); here are
//! only the command line's name and the exit status. Errors are printed once, as one line,
//! and the exit code is non-zero.

use ccflare_app::{LoadError, one_line};
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
            eprintln!("{NAME}: error: {}", one_line(&error));
            return ExitCode::from(2);
        }
    };
    ccflare_app::serve_headless(loaded, NAME)
}
