//! `masq validate FILE` or `masq validate --config-dir DIR`: exit 0 when the config is valid,
//! else exit 1 with every problem, each naming its file.

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
    let file = match (&args.file, &args.config_dir) {
        (Some(file), _) => file.as_path(),
        (None, Some(dir)) => return validate_dir(dir, &opts),
        (None, None) => unreachable!("clap requires FILE or --config-dir"),
    };
    let from_stdin = file == Path::new("-");
    let shown_path = if from_stdin {
        Path::new("<stdin>")
    } else {
        file
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
        if !file.exists() {
            return Err(InvalidInput::one(format!(
                "{}: no such file (the agent would run with the defaults)",
                file.display()
            ))
            .into());
        }
        masq_config::load(file, &opts)
    };
    let loaded = result.map_err(|error| InvalidConfig {
        path: shown_path.to_path_buf(),
        error,
    })?;
    super::warn_config(shown_path, &loaded.warnings);
    super::print(&format!("{}: valid\n", shown_path.display()))?;
    Ok(ExitCode::SUCCESS)
}

/// Every file of the directory on its own, then their merge; `DIR: valid (N files)` and the
/// files merged, one per line.
fn validate_dir(dir: &Path, opts: &ParseOptions) -> anyhow::Result<ExitCode> {
    if !dir.is_dir() {
        return Err(InvalidInput::one(format!(
            "{}: no such directory (the agent would run with the defaults)",
            dir.display()
        ))
        .into());
    }
    let merged = masq_config::load_dir(dir, opts)?;
    for warning in &merged.warnings {
        eprintln!("masq: warning: {warning}");
    }
    let mut text = format!("{}: valid ({} files)\n", dir.display(), merged.files.len());
    for file in &merged.files {
        text.push_str(&format!("  {}\n", file.display()));
    }
    super::print(&text)?;
    Ok(ExitCode::SUCCESS)
}
