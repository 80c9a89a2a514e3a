//! What masq owns in one namespace ([`Installed`]), read with the command-line tools: the nft
//! table, the iptables chain and jumps of either backend, the eBPF pins and hooks.

use std::path::Path;

use anyhow::Result;
use masq_testbed::Netns;

use super::{ebpf, run_ok_stdout};

/// What masq owns in one namespace, read with the command-line tools.
#[derive(Debug, PartialEq, Eq)]
pub struct Installed {
    /// `inet masq` exists.
    pub nft_table: bool,
    /// Rules in the `inet masq` table (handles listed by `nft -a`).
    pub nft_rules: usize,
    /// The `IP-MASQ-AGENT` chain exists in the nat table (either backend).
    pub ipt_chain: bool,
    /// Rules in that chain.
    pub ipt_rules: usize,
    /// `-A POSTROUTING ... -j IP-MASQ-AGENT` lines.
    pub ipt_jumps: usize,
    /// The iptables backends (`nft`, `legacy`) holding the chain.
    pub ipt_backends: Vec<&'static str>,
    /// Files under the eBPF pin directory, relative and sorted (`links/eth0-egress`,
    /// `maps-v3/masq_config`, ...); empty without a pin directory.
    pub bpf_pins: Vec<String>,
    /// Hooks of the namespace's interfaces running one of masq's programs (`eth0 egress`),
    /// TCX or clsact; only looked at when there is a pin directory.
    pub bpf_hooks: Vec<String>,
}

impl Installed {
    /// What masq owns in `ns`; `pin_dir` is the eBPF datapath's pin directory, if it runs.
    pub fn read(ns: &Netns, pin_dir: Option<&Path>) -> Result<Installed> {
        let tables = run_ok_stdout(ns, "nft", &["list", "tables"])?;
        let nft_table = tables.lines().any(|l| l.trim() == "table inet masq");
        let nft_rules = if nft_table {
            let table = run_ok_stdout(ns, "nft", &["-a", "list", "table", "inet", "masq"])?;
            table.lines().filter(|l| is_nft_rule(l)).count()
        } else {
            0
        };
        let mut save = String::new();
        let mut ipt_backends = Vec::new();
        for backend in ["nft", "legacy"] {
            let program = format!("iptables-{backend}-save");
            // A backend whose kernel module is not loaded prints nothing or fails: it holds no rules.
            if let Ok(out) = ns.command(&program).args(["-t", "nat"]).output() {
                let text = String::from_utf8_lossy(&out.stdout);
                if text.lines().any(|l| l.starts_with(":IP-MASQ-AGENT ")) {
                    ipt_backends.push(backend);
                }
                save.push_str(&text);
            }
        }
        Ok(Installed {
            nft_table,
            nft_rules,
            ipt_chain: save.lines().any(|l| l.starts_with(":IP-MASQ-AGENT ")),
            ipt_rules: save
                .lines()
                .filter(|l| l.starts_with("-A IP-MASQ-AGENT "))
                .count(),
            ipt_jumps: save
                .lines()
                .filter(|l| l.starts_with("-A POSTROUTING ") && l.contains("-j IP-MASQ-AGENT"))
                .count(),
            ipt_backends,
            bpf_pins: pin_dir.map(ebpf::pinned_files).unwrap_or_default(),
            bpf_hooks: match pin_dir {
                Some(_) => ebpf::hooks(Some(ns))?,
                None => Vec::new(),
            },
        })
    }

    pub fn nothing(&self) -> bool {
        !self.nft_table
            && !self.ipt_chain
            && self.ipt_jumps == 0
            && self.bpf_pins.is_empty()
            && self.bpf_hooks.is_empty()
    }
}

/// A rule line of `nft -a list`: ends with a handle and is not a table, chain or set header.
pub fn is_nft_rule(line: &str) -> bool {
    let line = line.trim();
    let header = ["table ", "chain ", "set ", "map "]
        .iter()
        .any(|h| line.starts_with(h));
    line.contains("# handle ") && !header
}
