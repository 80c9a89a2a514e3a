//! How a sync writes: a second instance adopts the table without a write, CIDR changes edit
//! set elements in place (by difference, for a large set too, neighbours and edges listing back
//! as written), and the rendered text is what sync installs.

use std::net::IpAddr;

use masq_datapath::nft::Nftables;
use masq_datapath::{Datapath, PortRange, SyncReport};
use masq_testbed::{addr, addr6, Topology};

use crate::bed::*;

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
