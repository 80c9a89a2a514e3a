//! What the agent is asked to install ([`Datapath`]: its flag, the programs its tests need, how
//! a node is made to look like its host) and the damages another tool can do to it behind the
//! agent's back ([`Damage`]).

use std::net::IpAddr;
use std::path::Path;

use anyhow::Result;
use masq_testbed::{addr, Netns, PrivateBpffs};

use super::{ebpf, run_ok};

/// What the agent is asked to install, and how to look at what it installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datapath {
    Nftables,
    /// iptables through the nf_tables backend (the host binary's default).
    IptablesNft,
    /// iptables through the legacy backend, chosen by the agent because kubelet's hint chain
    /// exists there (as on a node whose kubelet uses iptables-legacy).
    IptablesLegacy,
    /// tc programs pinned on a bpffs private to the test's thread (see [`Datapath::prepare`]).
    Ebpf,
}

impl Datapath {
    /// The one of [`Datapath::damages`] the agent's 5-second check between resyncs catches.
    pub fn damage_caught_between_resyncs(self) -> &'static str {
        match self {
            Datapath::Nftables => "table deleted",
            Datapath::IptablesNft | Datapath::IptablesLegacy => "jump removed",
            Datapath::Ebpf => "egress link detached",
        }
    }

    pub fn flag(self) -> &'static str {
        match self {
            Datapath::Nftables => "nftables",
            Datapath::IptablesNft | Datapath::IptablesLegacy => "iptables",
            Datapath::Ebpf => "ebpf",
        }
    }

    /// Programs the tests run for this datapath, besides `ip`.
    pub fn programs(self) -> &'static [&'static str] {
        match self {
            Datapath::Nftables => &["nft", "ping"],
            Datapath::IptablesNft => &["nft", "ping", "iptables-nft-save"],
            Datapath::IptablesLegacy => &["nft", "ping", "iptables-legacy-save"],
            // `tc` is how the datapath (and `Installed`) sees clsact filters.
            Datapath::Ebpf => &["nft", "ping", "bpftool", "tc"],
        }
    }

    /// The iptables programs' suffix (`iptables-<suffix>-save`).
    pub fn iptables_backend(self) -> Option<&'static str> {
        match self {
            Datapath::Nftables | Datapath::Ebpf => None,
            Datapath::IptablesNft => Some("nft"),
            Datapath::IptablesLegacy => Some("legacy"),
        }
    }

    /// Makes the node look like this datapath's host before the agent starts. For eBPF, the
    /// calling thread (the test's) moves into its own mount namespace with a fresh bpffs: the
    /// agents and `masq` commands it starts afterwards inherit it, pins survive a `kill -9`,
    /// and nothing reaches the host's /sys/fs/bpf. Keep the returned value for the whole test.
    pub fn prepare(self, node: &Netns) -> Result<Option<PrivateBpffs>> {
        match self {
            Datapath::IptablesLegacy => {
                run_ok(
                    node,
                    "iptables-legacy",
                    &["-t", "mangle", "-N", "KUBE-IPTABLES-HINT"],
                )?;
                Ok(None)
            }
            Datapath::Ebpf => Ok(Some(PrivateBpffs::mount()?)),
            Datapath::Nftables | Datapath::IptablesNft => Ok(None),
        }
    }

    /// Two ways another tool damages this datapath behind the agent's back, each with the
    /// destination that shows it and the source that destination sees once repaired.
    /// `pin_dir` is the eBPF datapath's `--bpf-pin-dir` (ignored by the others).
    pub fn damages(self, pin_dir: Option<&Path>) -> Vec<Damage> {
        let nft = |args: &[&str]| owned("nft", args);
        let ipt = |args: &[&str]| {
            let backend = self.iptables_backend().unwrap_or("nft");
            owned(&format!("iptables-{backend}"), args)
        };
        let (internet, private) = (IpAddr::from(addr::INTERNET), IpAddr::from(addr::PRIVATE));
        let (node, pod) = (IpAddr::from(addr::NODE), IpAddr::from(addr::POD));
        match self {
            Datapath::Nftables => vec![
                Damage {
                    what: "table deleted",
                    command: nft(&["delete", "table", "inet", "masq"]),
                    dst: internet,
                    repaired: node,
                },
                Damage {
                    what: "set element deleted",
                    command: nft(&[
                        "delete",
                        "element",
                        "inet",
                        "masq",
                        "nonmasq-dst-v4",
                        "{ 10.0.0.0/8 }",
                    ]),
                    dst: private,
                    repaired: pod,
                },
            ],
            Datapath::IptablesNft | Datapath::IptablesLegacy => vec![
                Damage {
                    what: "chain flushed",
                    command: ipt(&["-t", "nat", "-F", "IP-MASQ-AGENT"]),
                    dst: internet,
                    repaired: node,
                },
                Damage {
                    what: "jump removed",
                    command: ipt(&["-t", "nat", "-F", "POSTROUTING"]),
                    dst: internet,
                    repaired: node,
                },
            ],
            Datapath::Ebpf => {
                ebpf::damages(pin_dir.expect("the eBPF datapath has a pin directory"))
            }
        }
    }
}

/// A program and its arguments, owned.
pub(super) fn owned(program: &str, args: &[&str]) -> (String, Vec<String>) {
    (
        program.to_string(),
        args.iter().map(|a| a.to_string()).collect(),
    )
}

/// A change made behind the agent's back (see [`Datapath::damages`]).
pub struct Damage {
    /// What was done, for messages.
    pub what: &'static str,
    /// The program and its arguments, run in the node namespace.
    pub command: (String, Vec<String>),
    /// A destination whose source the damage changes...
    pub dst: IpAddr,
    /// ...and the source it sees with the rules intact.
    pub repaired: IpAddr,
}

impl Damage {
    /// Does it, in the node namespace.
    pub fn apply(&self, node: &Netns) -> Result<()> {
        let args: Vec<&str> = self.command.1.iter().map(String::as_str).collect();
        run_ok(node, &self.command.0, &args)
    }
}
