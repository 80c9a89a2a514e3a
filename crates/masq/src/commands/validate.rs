//! `masq validate FILE`: exit 0 when the file is valid, else exit 1 with every problem.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use masq_config::ParseOptions;

use crate::errors::{InvalidConfig, InvalidInput};
use crate::flags::ValidateArgs;

pub fn run(args: &ValidateArgs) -> anyhow::Result<ExitCode> {
    let opts = ParseOptions {
        enable_ipv6: args.enable_ipv6,
        ..ParseOptions::default()
    };
    let from_stdin = args.file == Path::new("-");
    let shown_path = if from_stdin {
        Path::new("<stdin>")
    } else {
        args.file.as_path()
    };
    let result = if from_stdin {
        let mut bytes = Vec::new();
        // One byte past the limit is enough for the size check to see an oversized input.
        std::io::stdin()
            .take(masq_config::MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .context("reading standard input")?;
        masq_config::parse(&bytes, &opts)
    } else {
        // The agent takes a missing file for the defaults, but asking to validate one is
        // almost always a typo in the path.
        if !args.file.exists() {
            return Err(InvalidInput::one(format!(
                "{}: no such file (the agent would run with the defaults)",
                args.file.display()
            ))
            .into());
        }
        masq_config::load(&args.file, &opts)
    };
    let loaded = result.map_err(|error| InvalidConfig {
        path: shown_path.to_path_buf(),
        error,
    })?;
    super::warn_config(shown_path, &loaded.warnings);
    super::print(&format!("{}: valid\n", shown_path.display()))?;
    Ok(ExitCode::SUCCESS)
}
