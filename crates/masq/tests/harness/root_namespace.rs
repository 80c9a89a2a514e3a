//! [`run`]: every scenario between two read-only checks that the root namespace holds no masq
//! object ([`masq_in_root_namespace`]), before and after, also when the scenario fails.

use std::path::Path;

use anyhow::Result;

use super::{ebpf, Datapath};

/// masq objects visible in the root namespace, read with read-only commands. The rest of the
/// root ruleset belongs to others and may change while the tests run.
pub fn masq_in_root_namespace(datapath: Datapath) -> Vec<String> {
    let read = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let mut found = Vec::new();
    if read("nft", &["list", "tables"])
        .lines()
        .any(|l| l.trim() == "table inet masq")
    {
        found.push("nft table inet masq".to_string());
    }
    let mut saves = vec!["iptables-save".to_string()];
    saves.extend(
        datapath
            .iptables_backend()
            .map(|b| format!("iptables-{b}-save")),
    );
    for save in saves {
        if read(&save, &[]).lines().any(|l| l.contains("IP-MASQ")) {
            found.push(format!("an IP-MASQ chain or rule in {save}"));
        }
    }
    if datapath == Datapath::Ebpf {
        match ebpf::hooks(None) {
            Ok(hooks) => found.extend(hooks.iter().map(|h| format!("a masq program on {h}"))),
            Err(e) => found.push(format!("cannot read the root namespace's hooks: {e:#}")),
        }
        let default_pins = Path::new(masq_datapath::names::BPF_PIN_DIR);
        if default_pins.exists() {
            found.push(format!("{} exists", default_pins.display()));
        }
    }
    found
}

/// Runs one scenario on one datapath, between two checks of the root namespace.
pub fn run(datapath: Datapath, scenario: fn(Datapath) -> Result<()>) {
    masq_testbed::require(datapath.programs());
    masq_testbed::netns::sweep_stale();
    let before = masq_in_root_namespace(datapath);
    assert!(
        before.is_empty(),
        "the root namespace holds masq objects before the test: {before:?}"
    );
    // The root namespace is checked after a failed assertion too.
    let result = std::panic::catch_unwind(|| scenario(datapath));
    let after = masq_in_root_namespace(datapath);
    assert!(
        after.is_empty(),
        "the root namespace holds masq objects after the test: {after:?}"
    );
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{e:#}"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
