//! `masq`: the IP-masquerade agent for Kubernetes nodes and its tools (docs/cli.md).
//!
//! [`flags`] holds the command line as typed, [`settings`] validates it, [`commands`] runs each
//! subcommand. Errors are printed here, once, one line each, and mapped to the exit codes of
//! docs/cli.md: 0 success, 1 invalid input (config, arguments, destinations), 2 runtime failure.

mod commands;
mod datapaths;
mod demo;
mod ebpf_metrics;
mod errors;
mod flags;
mod pool_flags;
mod settings;

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(error) => {
            for line in format!("{error:#}").lines() {
                eprintln!("masq: {line}");
            }
            ExitCode::from(errors::exit_code_for(&error))
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = match flags::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return Ok(clap_exit(&error)),
    };
    commands::run(cli.command)
}

/// clap prints its own message; invalid arguments exit 1 like every other invalid input
/// (clap's default is 2, which masq keeps for runtime failures).
fn clap_exit(error: &clap::Error) -> ExitCode {
    // Printing can only fail on a closed stream, and then there is no one left to tell.
    let _ = error.print();
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}
