//! Kernel tests of the nftables datapath. Each test builds its own pod/node/external topology
//! (masq-testbed), installs the ruleset inside the node namespace and proves it with real TCP,
//! UDP and ICMP traffic: the external servers report the source address they saw. Needs root,
//! `nft` and `ping`; skips with a printed reason otherwise. The root namespace is only read.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use masq_config::Config;
use masq_datapath::nft::Nftables;
use masq_datapath::{Datapath, Desired, NodeSettings, PortRange, SyncReport};
use masq_testbed::probe::TcpSession;
use masq_testbed::{addr, addr6, Probes, Topology};

const PORT: u16 = 8080;

fn nets(cidrs: &[&str]) -> Vec<IpNet> {
    cidrs.iter().map(|c| c.parse().unwrap()).collect()
}

/// A config keeping only `non_masquerade`: TEST-NET hosts are masqueraded unless listed.
fn config(non_masquerade: &[&str]) -> Config {
    Config {
        non_masquerade_cidrs: nets(non_masquerade),
        masq_link_local: false,
        masq_link_local_ipv6: false,
        resync_interval: Duration::from_secs(60),
        cidr_limit: 16384,
        non_masquerade_src_cidrs: Vec::new(),
        masquerade_cidrs: Vec::new(),
    }
}

fn desired(config: Config) -> Desired {
    Desired {
        config,
        node: NodeSettings::default(),
    }
}

/// What every test here needs besides root.
const NEEDS: &[&str] = &["nft", "ping"];

/// A topology with probes on every external host, and an nftables backend for its node.
struct Bed {
    topology: Topology,
    probes: Probes,
    nft: Nftables,
}

impl Bed {
    fn new() -> Bed {
        Bed::with(Topology::builder())
    }

    fn with(builder: masq_testbed::TopologyBuilder) -> Bed {
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
    fn sync(&mut self, desired: &Desired) -> SyncReport {
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

    fn matches(&self, desired: &Desired) -> bool {
        let nft = &self.nft;
        self.topology
            .node
            .enter(|| nft.matches(desired))
            .unwrap()
            .unwrap()
    }

    /// The datapath's cheap between-syncs check (ruleset generation, then the table outline).
    fn intact(&self) -> bool {
        let nft = &self.nft;
        self.topology.node.enter(|| nft.intact()).unwrap().unwrap()
    }

    /// What `dst` sees as the source of `from`'s traffic, checked to agree over TCP, UDP and
    /// ICMP.
    fn source(&self, from: &masq_testbed::Netns, dst: impl Into<IpAddr>) -> IpAddr {
        let dst = dst.into();
        let seen = self.probes.sources(from, dst).unwrap();
        seen.agreed()
            .unwrap_or_else(|| panic!("protocols disagree on the source seen by {dst}: {seen:?}"))
    }

    fn pod_source(&self, dst: impl Into<IpAddr>) -> IpAddr {
        self.source(&self.topology.pod, dst)
    }

    /// nft in the node namespace.
    fn nft(&self, args: &[&str]) -> String {
        self.topology.node.exec("nft", args).unwrap()
    }

    /// The table with rule and set handles, counters zeroed: equal listings mean nothing was
    /// recreated.
    fn listing(&self) -> String {
        let text = self.nft(&["-a", "list", "table", "inet", "masq"]);
        assert_root_untouched();
        zero_counters(&text)
    }
}

/// Replaces counter values (they move with the probes' traffic) by zeros.
fn zero_counters(text: &str) -> String {
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
fn load(ns: &masq_testbed::Netns, text: &str) {
    use std::io::Write;
    let mut child = ns
        .command("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "nft -f rejected:\n{text}");
}

/// The root namespace must never get a masq table (tests only read it).
fn assert_root_untouched() {
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

const POD: IpAddr = IpAddr::V4(addr::POD);
const POD2: IpAddr = IpAddr::V4(addr::POD2);
const NODE: IpAddr = IpAddr::V4(addr::NODE);

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn masquerades_all_but_non_masquerade_and_link_local_destinations() {
    masq_testbed::require(NEEDS);
    let mut bed = Bed::new();
    let want = desired(config(&["10.0.0.0/8"]));
    let report = bed.sync(&want);
    assert!(report.changed && !report.drift_repaired);
    assert!(bed.matches(&want));
    assert_eq!(bed.pod_source(addr::INTERNET), NODE);
    assert_eq!(bed.pod_source(addr::INTERNET2), NODE);
    assert_eq!(bed.source(&bed.topology.pod2, addr::INTERNET), NODE);
    assert_eq!(bed.pod_source(addr::PRIVATE), POD, "nonMasqueradeCIDRs");
    assert_eq!(
        bed.pod_source(addr::METADATA),
        POD,
        "link-local is kept by default"
    );
    // The counters tell which step decided: 3 protocols × 2 masqueraded destinations from pod.
    let counters = bed
        .topology
        .node
        .enter(|| bed.nft.counters())
        .unwrap()
        .unwrap();
    let packets = |reason: &str| -> u64 {
        counters
            .iter()
            .filter(|c| c.comment.as_deref() == Some(reason))
            .map(|c| c.packets)
            .sum()
    };
    assert!(packets("masquerade") >= 9, "{counters:?}");
    assert!(packets("non-masquerade-cidr") >= 3, "{counters:?}");
    assert!(packets("link-local") >= 3, "{counters:?}");
    assert_root_untouched();
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn masq_link_local_masquerades_the_metadata_server() {
    masq_testbed::require(NEEDS);
    let mut bed = Bed::new();
    let mut cfg = config(&["10.0.0.0/8"]);
    cfg.masq_link_local = true;
    bed.sync(&desired(cfg));
    assert_eq!(bed.pod_source(addr::METADATA), NODE);
    assert_eq!(bed.pod_source(addr::PRIVATE), POD);
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn non_masquerade_sources_keep_their_address() {
    masq_testbed::require(NEEDS);
    let mut bed = Bed::new();
    let mut cfg = config(&[]);
    cfg.non_masquerade_src_cidrs = nets(&["10.244.1.3/32"]);
    bed.sync(&desired(cfg));
    assert_eq!(bed.source(&bed.topology.pod2, addr::INTERNET), POD2);
    assert_eq!(bed.pod_source(addr::INTERNET), NODE);
    // An empty nonMasqueradeCIDRs masquerades private destinations too.
    assert_eq!(bed.pod_source(addr::PRIVATE), NODE);
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn with_pod_cidrs_only_pods_are_masqueraded() {
    masq_testbed::require(NEEDS);
    let mut bed = Bed::new();
    let mut want = desired(config(&[]));
    // Pretend only the first pod's address is a pod: the second is then "not a pod".
    want.node.pod_cidrs = nets(&["10.244.1.2/32"]);
    bed.sync(&want);
    assert_eq!(bed.pod_source(addr::INTERNET), NODE);
    assert_eq!(bed.source(&bed.topology.pod2, addr::INTERNET), POD2);
    want.node.pod_cidrs = nets(&[addr::POD_CIDR]);
    bed.sync(&want);
    assert_eq!(bed.source(&bed.topology.pod2, addr::INTERNET), NODE);
    // Turning pod CIDRs off removes their set and rule in the same transaction.
    want.node.pod_cidrs.clear();
    want.config.non_masquerade_src_cidrs = nets(&["10.244.1.2/32"]);
    bed.sync(&want);
    assert!(!bed.listing().contains("pod-v4"));
    assert_eq!(bed.source(&bed.topology.pod2, addr::INTERNET), NODE);
    assert_eq!(bed.pod_source(addr::INTERNET), POD);
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn native_routing_cidr_is_never_masqueraded() {
    masq_testbed::require(NEEDS);
    let mut bed = Bed::new();
    let mut want = desired(config(&[]));
    want.node.native_routing_cidr = Some("10.200.0.0/16".parse().unwrap());
    bed.sync(&want);
    assert_eq!(bed.pod_source(addr::PRIVATE), POD);
    assert_eq!(bed.pod_source(addr::INTERNET), NODE);
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn snat_ip_and_port_range_are_used() {
    masq_testbed::require(NEEDS);
    let mut bed = Bed::new();
    let node = &bed.topology.node;
    node.ip(&["addr", "add", "172.30.0.100/24", "dev", "eth0"])
        .unwrap();
    let mut want = desired(config(&[]));
    want.node.snat_ips = vec!["172.30.0.100".parse().unwrap()];
    want.node.port_ranges = vec![PortRange {
        first: 40000,
        last: 40099,
    }];
    bed.sync(&want);
    assert_eq!(
        bed.pod_source(addr::INTERNET),
        IpAddr::from([172, 30, 0, 100])
    );
    for _ in 0..5 {
        let server = SocketAddr::new(addr::INTERNET.into(), PORT);
        let mut session = TcpSession::connect(&bed.topology.pod, server).unwrap();
        let seen = session.observed_source().unwrap();
        assert!((40000..=40099).contains(&seen.port()), "source port {seen}");
    }
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_second_instance_adopts_without_duplicates_or_changes() {
    masq_testbed::require(NEEDS);
    let mut bed = Bed::new();
    let want = desired(config(&["10.0.0.0/8", "10.1.0.0/16", "192.168.0.0/16"]));
    bed.sync(&want);
    let before = bed.listing();
    assert_eq!(before.matches("10.0.0.0/8").count(), 1, "{before}");
    assert!(
        !before.contains("10.1.0.0/16"),
        "overlaps are merged: {before}"
    );

    let mut restarted = Nftables::new();
    let report = bed
        .topology
        .node
        .enter(|| restarted.sync(&want))
        .unwrap()
        .unwrap();
    assert_eq!(
        report,
        SyncReport {
            changed: false,
            drift_repaired: false,
            installed_entries: before.matches("counter").count() + 2,
        }
    );
    assert_eq!(bed.listing(), before);
    assert_eq!(bed.pod_source(addr::PRIVATE), POD);
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_cidr_change_edits_the_set_in_place() {
    masq_testbed::require(NEEDS);
    let mut bed = Bed::new();
    bed.sync(&desired(config(&["10.0.0.0/8"])));
    assert_eq!(bed.pod_source(addr::PRIVATE), POD);
    assert_eq!(bed.pod_source(addr::INTERNET), NODE);
    let chain_before = bed.nft(&["-a", "list", "chain", "inet", "masq", "postrouting"]);
    let chain_before = zero_counters(&chain_before);

    // Overlapping replacement (10/8 → 10.200/16) plus a new CIDR, in one transaction that
    // only touches elements.
    let want = desired(config(&["10.200.0.0/16", "203.0.113.0/24"]));
    let batch = bed
        .topology
        .node
        .enter(|| bed.nft.pending_batch(&want))
        .unwrap()
        .unwrap()
        .expect("a change is pending");
    assert!(batch.contains("\"element\""), "{batch}");
    assert!(
        !batch.contains("flush"),
        "the set or chain would be flushed: {batch}"
    );
    assert!(
        !batch.contains("\"rule\""),
        "rules would be rewritten: {batch}"
    );
    let report = bed.sync(&want);
    assert!(report.changed && !report.drift_repaired);
    let chain_after = bed.nft(&["-a", "list", "chain", "inet", "masq", "postrouting"]);
    assert_eq!(
        zero_counters(&chain_after),
        chain_before,
        "rules were recreated"
    );
    assert_eq!(bed.pod_source(addr::INTERNET), POD);
    assert_eq!(bed.pod_source(addr::PRIVATE), POD);
    assert_eq!(bed.pod_source(addr::INTERNET2), NODE);

    bed.sync(&desired(config(&[])));
    assert_eq!(bed.pod_source(addr::PRIVATE), NODE);
    assert_eq!(bed.pod_source(addr::INTERNET), NODE);

    // Adjacent prefixes that cannot merge stay two elements; the whole space is one.
    bed.sync(&desired(config(&[
        "203.0.112.0/24",
        "203.0.113.0/25",
        "10.200.0.10/32",
    ])));
    assert_eq!(bed.pod_source(addr::INTERNET), POD);
    assert_eq!(bed.pod_source(addr::PRIVATE), POD);
    assert_eq!(bed.pod_source(addr::INTERNET2), NODE);
    bed.sync(&desired(config(&["0.0.0.0/0"])));
    assert_eq!(bed.pod_source(addr::INTERNET2), POD);
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn drift_is_detected_and_repaired() {
    masq_testbed::require(NEEDS);
    let mut bed = Bed::new();
    let want = desired(config(&["10.0.0.0/8"]));
    bed.sync(&want);
    let installed = bed.listing();
    assert!(bed.intact());
    // Someone else's commit moves the generation, but masq's table is as written.
    bed.nft(&["add", "table", "inet", "someone-else"]);
    assert!(bed.intact(), "a foreign commit is not drift");

    // Someone deletes the whole table.
    bed.nft(&["delete", "table", "inet", "masq"]);
    assert!(!bed.intact(), "the outline check misses a deleted table");
    assert!(!bed.matches(&want));
    assert_eq!(
        bed.pod_source(addr::INTERNET),
        POD,
        "nothing masquerades without the table"
    );
    let report = bed.sync(&want);
    assert!(report.changed && report.drift_repaired);
    assert!(bed.matches(&want));
    assert!(bed.intact());
    assert_eq!(bed.pod_source(addr::INTERNET), NODE);

    // Someone deletes a set element.
    bed.nft(&[
        "delete",
        "element",
        "inet",
        "masq",
        "nonmasq-dst-v4",
        "{ 10.0.0.0/8 }",
    ]);
    assert!(!bed.matches(&want));
    assert_eq!(bed.pod_source(addr::PRIVATE), NODE);
    assert!(bed.sync(&want).drift_repaired);
    assert_eq!(bed.pod_source(addr::PRIVATE), POD);

    // Someone deletes the translation rules (one per default port range, then the
    // catch-all), then someone adds one.
    let chain = bed.nft(&["-a", "list", "chain", "inet", "masq", "postrouting"]);
    let handles: Vec<String> = chain
        .lines()
        .filter(|l| l.contains("comment \"masquerade\""))
        .filter_map(|l| l.rsplit(' ').next())
        .map(str::to_string)
        .collect();
    assert_eq!(handles.len(), 3, "{chain}");
    for handle in &handles {
        bed.nft(&[
            "delete",
            "rule",
            "inet",
            "masq",
            "postrouting",
            "handle",
            handle,
        ]);
    }
    assert!(!bed.intact(), "the outline check misses a deleted rule");
    assert!(!bed.matches(&want));
    assert_eq!(bed.pod_source(addr::INTERNET), POD);
    assert!(bed.sync(&want).drift_repaired);
    bed.nft(&[
        "insert",
        "rule",
        "inet",
        "masq",
        "postrouting",
        "ip",
        "saddr",
        "10.244.1.2",
        "return",
    ]);
    assert!(!bed.intact(), "the outline check misses an added rule");
    assert!(!bed.matches(&want));
    assert!(bed.sync(&want).drift_repaired);
    assert_eq!(bed.pod_source(addr::INTERNET), NODE);

    // Someone adds a set and a chain using it to masq's table (or an older masq left them).
    load(
        &bed.topology.node,
        "table inet masq {\n set old { type ipv4_addr; elements = { 192.0.2.1 } }\n \
         chain extra {\n ip daddr @old return\n }\n}\n",
    );
    assert!(
        !bed.intact(),
        "the outline check misses an added set and chain"
    );
    assert!(!bed.matches(&want));
    assert!(bed.sync(&want).drift_repaired);
    let listing = bed.listing();
    assert!(
        !listing.contains("old") && !listing.contains("extra"),
        "{listing}"
    );

    // A repaired table has the same content as the first one (handles differ after the delete).
    let strip_handles = |text: &str| -> String {
        text.lines()
            .map(|l| l.split(" # handle").next().unwrap_or(l).to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip_handles(&bed.listing()), strip_handles(&installed));

    // Without a change since, a sync is a no-op.
    let report = bed.sync(&want);
    assert!(!report.changed && !report.drift_repaired);
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn cleanup_removes_the_table_and_nothing_else() {
    masq_testbed::require(NEEDS);
    let mut bed = Bed::new();
    load(
        &bed.topology.node,
        "table inet other {\n set s {\n type ipv4_addr\n elements = { 192.0.2.1 }\n }\n \
         chain c {\n type nat hook postrouting priority 50;\n ip daddr @s counter return\n }\n}\n",
    );
    let other_before = bed.nft(&["-a", "list", "table", "inet", "other"]);

    bed.sync(&desired(config(&[])));
    assert_eq!(bed.pod_source(addr::INTERNET), NODE);
    let nft = &mut bed.nft;
    bed.topology.node.enter(|| nft.cleanup()).unwrap().unwrap();
    let tables = bed.nft(&["list", "tables"]);
    assert!(!tables.contains("inet masq"), "{tables}");
    assert!(!bed.matches(&desired(config(&[]))));
    assert_eq!(bed.pod_source(addr::INTERNET), POD);
    // Absent is success, for `masq cleanup` run twice or on a clean node.
    let nft = &mut bed.nft;
    bed.topology.node.enter(|| nft.cleanup()).unwrap().unwrap();

    let other_after = bed.nft(&["-a", "list", "table", "inet", "other"]);
    assert_eq!(other_after, other_before, "another table was touched");
    assert_root_untouched();
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn the_rendered_text_is_what_sync_installs() {
    masq_testbed::require(NEEDS);
    let bed = Bed::new();
    let mut want = desired(config(&["10.0.0.0/8", "192.168.0.0/16"]));
    want.node.pod_cidrs = nets(&[addr::POD_CIDR]);
    want.node.port_ranges = vec![PortRange {
        first: 1024,
        last: 65535,
    }];
    let text = bed.nft.render(&want);
    load(&bed.topology.node, &text);
    assert!(bed.matches(&want), "rendered text loaded:\n{text}");
    let mut fresh = Nftables::new();
    let report = bed
        .topology
        .node
        .enter(|| fresh.sync(&want))
        .unwrap()
        .unwrap();
    assert!(!report.changed, "sync would change what render printed");
    assert_eq!(bed.pod_source(addr::INTERNET), NODE);
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn ipv6_is_masqueraded_when_enabled() {
    masq_testbed::require(NEEDS);
    let mut bed = Bed::with(Topology::builder().ipv6(true));
    let mut want = desired(config(&["10.0.0.0/8", "fd00::/8"]));
    // Without --enable-ipv6 IPv6 passes untouched.
    bed.sync(&want);
    assert_eq!(bed.pod_source(addr6::INTERNET), IpAddr::from(addr6::POD));
    want.node.enable_ipv6 = true;
    bed.sync(&want);
    assert_eq!(bed.pod_source(addr6::INTERNET), IpAddr::from(addr6::NODE));
    assert_eq!(bed.pod_source(addr6::PRIVATE), IpAddr::from(addr6::POD));
    assert_eq!(bed.pod_source(addr::INTERNET), NODE);
    assert_eq!(bed.pod_source(addr::PRIVATE), POD);
    want.node.pod_cidrs = nets(&[addr::POD_CIDR, addr6::POD_CIDR]);
    bed.sync(&want);
    assert_eq!(bed.pod_source(addr6::INTERNET), IpAddr::from(addr6::NODE));
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn probe_checks_support_without_installing_anything() {
    masq_testbed::require(NEEDS);
    let ns = masq_testbed::Netns::new("probe").unwrap();
    ns.enter(|| Nftables::new().probe()).unwrap().unwrap();
    assert_eq!(ns.exec("nft", &["list", "tables"]).unwrap().trim(), "");
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_large_set_is_edited_by_difference() {
    masq_testbed::require(NEEDS);
    let ns = masq_testbed::Netns::new("large").unwrap();
    // 8192 prefixes that cannot merge (every other /24).
    let cidrs: Vec<String> = (0..64)
        .flat_map(|b| (0..128).map(move |c| format!("10.{b}.{}.0/24", c * 2)))
        .collect();
    let refs: Vec<&str> = cidrs.iter().map(String::as_str).collect();
    let mut want = desired(config(&refs));
    let mut nft = Nftables::new();
    let started = std::time::Instant::now();
    let report = ns.enter(|| nft.sync(&want)).unwrap().unwrap();
    let first = started.elapsed();
    assert!(report.changed);
    assert!(report.installed_entries > 8192);

    want.config.non_masquerade_cidrs[0] = "192.168.7.0/24".parse().unwrap();
    let batch = ns
        .enter(|| nft.pending_batch(&want))
        .unwrap()
        .unwrap()
        .unwrap();
    let commands: serde_json::Value = serde_json::from_str(&batch).unwrap();
    let commands = commands["nftables"].as_array().unwrap();
    assert_eq!(
        commands.len(),
        3,
        "add table, delete one element, add one element"
    );
    let started = std::time::Instant::now();
    let report = ns.enter(|| nft.sync(&want)).unwrap().unwrap();
    let change = started.elapsed();
    assert!(report.changed && !report.drift_repaired);
    assert!(ns.enter(|| nft.matches(&want)).unwrap().unwrap());
    eprintln!("8192 prefixes: first sync {first:?}, one-CIDR change {change:?}");
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn existing_connections_keep_their_translation_across_a_change() {
    masq_testbed::require(NEEDS);
    let mut bed = Bed::new();
    bed.sync(&desired(config(&[])));
    let server = SocketAddr::new(addr::INTERNET.into(), PORT);
    let mut session = TcpSession::connect(&bed.topology.pod, server).unwrap();
    assert_eq!(session.observed_source().unwrap().ip(), NODE);
    bed.sync(&desired(config(&["203.0.113.0/24"])));
    // conntrack keeps the translation of the open connection; new ones follow the new config.
    assert_eq!(session.observed_source().unwrap().ip(), NODE);
    assert_eq!(bed.pod_source(addr::INTERNET), POD);
}

/// Element-only changes go to the kernel over netlink, not through nft: prefixes that touch
/// (the end of one is the start of the next), the top and bottom of both address spaces, and
/// a foreign commit in between (another table) that makes the backend read the table again.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn element_changes_at_neighbours_and_edges_list_back_as_written() {
    masq_testbed::require(NEEDS);
    let mut bed = Bed::with(Topology::builder().ipv6(true));
    let with_ipv6 = |cidrs: &[&str]| {
        let mut want = desired(config(cidrs));
        want.node.enable_ipv6 = true;
        want
    };
    bed.sync(&with_ipv6(&["10.0.0.0/8", "fd00::/8"]));
    let steps: [&[&str]; 5] = [
        // Neighbours that do not merge into one prefix, and the first address.
        &[
            "10.0.0.0/8",
            "203.0.112.0/24",
            "203.0.113.0/25",
            "0.0.0.0/32",
            "fd00::/8",
        ],
        // The last addresses of both families: their intervals have no end element.
        &[
            "203.0.113.0/25",
            "255.255.255.255/32",
            "ffff::/16",
            "::/128",
            "fd00::/9",
        ],
        // One neighbour removed while the other stays.
        &[
            "203.0.113.0/25",
            "203.0.113.128/26",
            "10.0.0.0/8",
            "fd00::/8",
        ],
        &["203.0.113.128/26", "10.0.0.0/8", "fd00::/8"],
        &[],
    ];
    for (i, cidrs) in steps.iter().enumerate() {
        if i == 2 {
            load(
                &bed.topology.node,
                "table inet other {\n set s {\n type ipv4_addr\n }\n}\n",
            );
        }
        let want = with_ipv6(cidrs);
        let report = bed.sync(&want);
        assert!(
            report.changed && !report.drift_repaired,
            "step {i}: {report:?}"
        );
    }
    assert_eq!(bed.pod_source(addr::INTERNET), NODE);
    assert_eq!(bed.pod_source(addr6::PRIVATE), IpAddr::from(addr6::NODE));
    bed.sync(&with_ipv6(&["203.0.113.0/25", "fd00::/8"]));
    assert_eq!(bed.pod_source(addr::INTERNET), POD);
    assert_eq!(bed.pod_source(addr::PRIVATE), NODE);
    assert_eq!(bed.pod_source(addr6::PRIVATE), IpAddr::from(addr6::POD));
}
