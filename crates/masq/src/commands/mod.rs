//! One module per subcommand. Each returns the exit code on success; errors go back to `main`,
//! which prints them and picks the exit code.

mod explain;
mod render;
mod validate;
pub mod wiring;

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;

use crate::errors::InvalidInput;
use crate::flags::{Command, NatCommand};
use crate::settings;

/// Runs the subcommand.
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Agent(args) => wiring::agent(args.settings()?),
        Command::Explain(args) => explain::run(&args),
        Command::Validate(args) => validate::run(&args),
        Command::Render(args) => render::run(&args),
        Command::Status(args) => {
            let metrics_addr = settings::socket_addr_flag("--metrics-addr", &args.metrics_addr)
                .map_err(InvalidInput::one)?;
            wiring::status(args.output, metrics_addr)
        }
        Command::Nat {
            command: NatCommand::List(args),
        } => wiring::nat_list(args.output, &args.bpf_pin_dir),
        Command::Cleanup(args) => {
            settings::chain_flag(&args.masq_chain).map_err(InvalidInput::one)?;
            wiring::cleanup(&args.masq_chain, &args.bpf_pin_dir)
        }
        Command::Demo(args) => wiring::demo(args.datapath),
    }
}

/// Writes `text` to standard output. A closed pipe (`masq explain … | head -1`) is not an
/// error: the reader has what it wanted.
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => result.context("writing to standard output"),
    }
}

/// Prints warnings about the config on standard error, naming the file.
pub fn warn_config(path: &std::path::Path, warnings: &[String]) {
    for warning in warnings {
        eprintln!("masq: warning: {}: {warning}", path.display());
    }
}

/// Loads the config as the agent would (a missing file means the defaults; a directory's
/// files merged), printing its warnings; an invalid file is a [`masq_config::DirError`] that
/// names the file of each problem.
pub fn load_config(
    source: &masq_config::Source,
    opts: &masq_config::ParseOptions,
) -> anyhow::Result<masq_config::Merged> {
    let loaded = source.load(opts)?;
    match source {
        // A directory's warnings name their file already.
        masq_config::Source::Dir(_) => {
            for warning in &loaded.warnings {
                eprintln!("masq: warning: {warning}");
            }
        }
        masq_config::Source::File(path) => warn_config(path, &loaded.warnings),
    }
    Ok(loaded)
}
