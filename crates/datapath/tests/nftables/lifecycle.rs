//! The table's life around the syncs: drift detected and repaired between them, cleanup
//! removing the table and nothing else, and a probe that installs nothing.

use masq_datapath::nft::Nftables;
use masq_datapath::Datapath;
use masq_testbed::addr;

use crate::bed::*;

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
fn probe_checks_support_without_installing_anything() {
    masq_testbed::require(NEEDS);
    let ns = masq_testbed::Netns::new("probe").unwrap();
    ns.enter(|| Nftables::new().probe()).unwrap().unwrap();
    assert_eq!(ns.exec("nft", &["list", "tables"]).unwrap().trim(), "");
}
