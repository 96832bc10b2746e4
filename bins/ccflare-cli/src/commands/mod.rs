//! One module per command. Each has its clap arguments and a `run` that returns the exit
//! code; errors go up as `anyhow::Error` with lower-case context and are printed once by
//! `main`.

pub mod accounts;
pub mod config;
pub mod doctor;
pub mod login;
pub mod logs;
pub mod stats;
