//! `ccflare-server`: the server, headless. Start-up, serving and shutdown are `ccflare-app`'s
//! (the `ccflare` binary runs the same, under its terminal UI or with `--serve`); here are
//! only the command line's name, the `healthcheck` subcommand and the exit status. Errors are
//! printed once, as one line, and the exit code is non-zero.

use ccflare_app::{LoadError, one_line};
use clap::{Arg, ArgAction, Command};
use std::process::ExitCode;
use std::time::Duration;

const NAME: &str = "ccflare-server";

fn main() -> ExitCode {
    let command = ccflare_app::cli::command(
        NAME,
        "A proxy for the Anthropic API that spreads requests over a pool of Claude accounts",
    )
    .subcommand(
        Command::new("healthcheck")
            .about(
                "Ask the server configured here (same options) whether it is ready: exit 0 \
                 when its /health answers ok or degraded, 1 otherwise; one line",
            )
            .arg(
                Arg::new("timeout")
                    .long("timeout")
                    .value_name("SECONDS")
                    .value_parser(clap::value_parser!(u64).range(1..))
                    .help("seconds to wait for the answer (default: 5)"),
            )
            .arg(
                Arg::new("strict")
                    .long("strict")
                    .action(ArgAction::SetTrue)
                    .help("count degraded (no account available, database failing) as not ready"),
            ),
    );
    let loaded = ccflare_app::cli::load(command, std::env::args_os());
    // A configuration that cannot be read fails the check too, with the check's exit status.
    let asked_for_check = std::env::args_os().skip(1).any(|a| a == "healthcheck");
    let (loaded, matches) = match loaded {
        Ok(loaded) => loaded,
        // A usage error in a HEALTHCHECK line is "not ready" too: 1, not clap's 2.
        Err(LoadError::Clap(error)) if asked_for_check && error.use_stderr() => {
            let _ = error.print();
            return ExitCode::FAILURE;
        }
        Err(LoadError::Clap(error)) => error.exit(),
        Err(error) if asked_for_check => {
            eprintln!("not ready: {NAME} healthcheck: {}", one_line(&error));
            return ExitCode::FAILURE;
        }
        Err(error) => {
            eprintln!("{NAME}: error: {}", one_line(&error));
            return ExitCode::from(2);
        }
    };
    if let Some(options) = matches.subcommand_matches("healthcheck") {
        let timeout = options
            .get_one::<u64>("timeout")
            .map_or(ccflare_app::healthcheck::DEFAULT_TIMEOUT, |s| {
                Duration::from_secs(*s)
            });
        // Every failure is exit status 1 (Docker reserves 2).
        return ccflare_app::healthcheck::run(
            &loaded.settings,
            timeout,
            options.get_flag("strict"),
        );
    }
    ccflare_app::serve_headless(loaded, NAME)
}
