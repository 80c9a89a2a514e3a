//! The bed every test here stands on: a pod/node/external topology with probes on the external
//! hosts and an nftables backend for the node (`Bed`), the configs the tests vary, and checks
//! on nft's listings (counters zeroed, the root namespace untouched).

use std::net::IpAddr;

use ipnet::IpNet;
use masq_config::Config;
use masq_datapath::nft::Nftables;
use masq_datapath::{Datapath, Desired, NodeSettings, SyncReport};
use masq_testbed::{addr, Probes, Topology};

pub(crate) const PORT: u16 = 8080;

pub(crate) fn nets(cidrs: &[&str]) -> Vec<IpNet> {
    cidrs.iter().map(|c| c.parse().unwrap()).collect()
}

/// A config keeping only `non_masquerade`: TEST-NET hosts are masqueraded unless listed.
pub(crate) fn config(non_masquerade: &[&str]) -> Config {
    Config {
        non_masquerade_cidrs: nets(non_masquerade),
        ..Config::default()
    }
}

pub(crate) fn desired(config: Config) -> Desired {
    Desired {
        config,
        node: NodeSettings::default(),
    }
}

/// What every test here needs besides root.
pub(crate) const NEEDS: &[&str] = &["nft", "ping"];

/// A topology with probes on every external host, and an nftables backend for its node.
pub(crate) struct Bed {
    pub(crate) topology: Topology,
    probes: Probes,
    pub(crate) nft: Nftables,
}

impl Bed {
    pub(crate) fn new() -> Bed {
        Bed::with(Topology::builder())
    }

    pub(crate) fn with(builder: masq_testbed::TopologyBuilder) -> Bed {
        // Namespaces a killed earlier run could not remove.
        masq_testbed::netns::sweep_stale();
        let topology = builder.build().unwrap();
        let probes = Probes::start(&topology.external, &topology.external_hosts(), PORT).unwrap();
        Bed {
            topology,
            probes,
            nft: Nftables::new(),
        }
    }

    /// Syncs, and checks the kernel then matches (which also proves that what nft lists back
    /// compares equal to what was written, or every sync would rewrite the chain).
    pub(crate) fn sync(&mut self, desired: &Desired) -> SyncReport {
        let nft = &mut self.nft;
        let report = self
            .topology
            .node
            .enter(|| nft.sync(desired))
            .unwrap()
            .unwrap();
        assert!(self.matches(desired), "kernel differs right after sync");
        let nft = &mut self.nft;
        let again = self
            .topology
            .node
            .enter(|| nft.sync(desired))
            .unwrap()
            .unwrap();
        assert!(!again.changed, "a second sync changed something");
        report
    }

    pub(crate) fn matches(&self, desired: &Desired) -> bool {
        let nft = &self.nft;
        self.topology
            .node
            .enter(|| nft.matches(desired))
            .unwrap()
            .unwrap()
    }

    /// The datapath's cheap between-syncs check (ruleset generation, then the table outline).
    pub(crate) fn intact(&self) -> bool {
        let nft = &self.nft;
        self.topology.node.enter(|| nft.intact()).unwrap().unwrap()
    }

    /// What `dst` sees as the source of `from`'s traffic, checked to agree over TCP, UDP and
    /// ICMP.
    pub(crate) fn source(&self, from: &masq_testbed::Netns, dst: impl Into<IpAddr>) -> IpAddr {
        let dst = dst.into();
        let seen = self.probes.sources(from, dst).unwrap();
        seen.agreed()
            .unwrap_or_else(|| panic!("protocols disagree on the source seen by {dst}: {seen:?}"))
    }

    pub(crate) fn pod_source(&self, dst: impl Into<IpAddr>) -> IpAddr {
        self.source(&self.topology.pod, dst)
    }

    /// nft in the node namespace.
    pub(crate) fn nft(&self, args: &[&str]) -> String {
        self.topology.node.exec("nft", args).unwrap()
    }

    /// The table with rule and set handles, counters zeroed: equal listings mean nothing was
    /// recreated.
    pub(crate) fn listing(&self) -> String {
        let text = self.nft(&["-a", "list", "table", "inet", "masq"]);
        assert_root_untouched();
        zero_counters(&text)
    }
}

/// Replaces counter values (they move with the probes' traffic) by zeros.
pub(crate) fn zero_counters(text: &str) -> String {
    let mut out = Vec::new();
    let mut words = text.split(' ').peekable();
    while let Some(word) = words.next() {
        out.push(word.to_string());
        if word == "packets" || word == "bytes" {
            if let Some(value) = words.next() {
                let digits = value.trim_start_matches(|c: char| c.is_ascii_digit());
                out.push(format!("0{digits}"));
            }
        }
    }
    out.join(" ")
}

/// Loads nft syntax with `nft -f -` inside `ns`.
pub(crate) fn load(ns: &masq_testbed::Netns, text: &str) {
    ns.pipe("nft", &["-f", "-"], text).unwrap();
}

/// The root namespace must never get a masq table (tests only read it).
pub(crate) fn assert_root_untouched() {
    let tables = std::process::Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    let tables = String::from_utf8_lossy(&tables.stdout);
    assert!(
        !tables.lines().any(|l| l.trim() == "table inet masq"),
        "the root namespace has a masq table"
    );
}

pub(crate) const POD: IpAddr = IpAddr::V4(addr::POD);
pub(crate) const POD2: IpAddr = IpAddr::V4(addr::POD2);
pub(crate) const NODE: IpAddr = IpAddr::V4(addr::NODE);
