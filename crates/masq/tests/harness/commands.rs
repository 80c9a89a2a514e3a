//! Running a program inside a namespace and failing, with its stderr, when it fails.

use anyhow::{bail, Context, Result};
use masq_testbed::Netns;

pub fn run_ok(ns: &Netns, program: &str, args: &[&str]) -> Result<()> {
    run_ok_stdout(ns, program, args).map(drop)
}

pub fn run_ok_stdout(ns: &Netns, program: &str, args: &[&str]) -> Result<String> {
    let out = ns
        .command(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "in {}: {program} {args:?}: {}",
            ns.name(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
