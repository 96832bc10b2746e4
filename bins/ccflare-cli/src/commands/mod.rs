//! One module per command. Each has its clap arguments and a `run` that returns the exit
//! code; errors go up as `anyhow::Error` with lower-case context and are printed once by
//! `main`. What more than one command reads from the person at the terminal is here.

pub mod accounts;
pub mod config;
pub mod db;
pub mod doctor;
pub mod keys;
pub mod login;
pub mod logs;
pub mod replay;
pub mod secrets;
pub mod stats;

use anyhow::{Context as _, Result};
use std::io::{BufRead, IsTerminal, Write};

/// The first non-empty line of standard input, after `prompt` on standard error when standard
/// input is a terminal; `None` when the input ends first. `reading` names what is read, for
/// the error of a failed read.
pub(crate) fn first_line_of_stdin(prompt: &str, reading: &'static str) -> Result<Option<String>> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
    }
    for line in stdin.lock().lines() {
        let line = line.context(reading)?;
        if !line.trim().is_empty() {
            return Ok(Some(line));
        }
    }
    Ok(None)
}
