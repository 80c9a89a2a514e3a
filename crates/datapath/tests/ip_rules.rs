//! masq's `ip rule`s over netlink (`egress::IpRules`) and around a datapath (`Routed`), each
//! test in its own network namespace, read back with `ip rule show`: adoption of a rule without
//! the protocol, stale rules of masq's protocol removed, foreign rules untouched, IPv6 rules, and
//! the order around the datapath's own sync (added before it, stale ones removed after it).

use std::sync::{Arc, Mutex};

use masq_config::Config;
use masq_datapath::egress::{desired_rules, IpRules, PolicyRule};
use masq_datapath::{
    Datapath, Desired, EgressRouting, Error, Interface, Kind, NodeSettings, Routed, SyncReport,
};
use masq_testbed::Netns;

/// `ip [-6] rule show` inside the namespace, one rule a line.
fn rules(ns: &Netns, ipv6: bool) -> Vec<String> {
    let family = if ipv6 { "-6" } else { "-4" };
    let text = ns.ip(&[family, "rule", "show"]).unwrap();
    text.lines().map(str::to_string).collect()
}

fn masqs(ns: &Netns, ipv6: bool) -> Vec<String> {
    rules(ns, ipv6)
        .into_iter()
        .filter(|r| r.contains("proto 109"))
        .collect()
}

fn ip_rule(ns: &Netns, args: &str) {
    let mut full = vec!["rule", "add"];
    full.extend(args.split(' '));
    ns.ip(&full).unwrap();
}

fn wanted(priority: u32, ipv6: bool) -> PolicyRule {
    PolicyRule {
        ipv6,
        priority,
        mark: 0x1000,
        table: 254,
    }
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn adopts_masqs_rules_removes_stale_ones_and_leaves_the_rest() {
    masq_testbed::require(&[]);
    let ns = Netns::new("rules").unwrap();
    // Someone else's: another mark, and a CNI's per-pod rule.
    ip_rule(&ns, "priority 1001 fwmark 0x80 lookup main");
    ip_rule(&ns, "priority 1536 from 10.0.1.20 lookup 2");
    // masq's exact selector without the protocol (a kernel before 4.17 drops it).
    ip_rule(&ns, "priority 1000 fwmark 0x1000/0x1000 lookup main");
    // masq's protocol: an earlier priority, and a mask that is not the mark.
    ip_rule(
        &ns,
        "priority 900 fwmark 0x1000/0x1000 lookup main protocol 109",
    );
    ip_rule(
        &ns,
        "priority 950 fwmark 0x1000/0xffff lookup main protocol 109",
    );
    let want = [wanted(1000, false)];
    let before = rules(&ns, false);

    ns.enter(|| {
        assert!(!IpRules.matches(&want).unwrap(), "stale rules are there");
        assert!(
            !IpRules.add_missing(&want).unwrap(),
            "adopted, not duplicated"
        );
        assert!(IpRules.remove_stale(&want).unwrap());
        assert!(IpRules.matches(&want).unwrap());
        assert!(
            !IpRules.remove_stale(&want).unwrap(),
            "nothing left to remove"
        );
    })
    .unwrap();
    let after = rules(&ns, false);
    assert!(masqs(&ns, false).is_empty(), "{after:?}");
    let kept: Vec<&String> = before
        .iter()
        .filter(|r| !r.starts_with("900:") && !r.starts_with("950:"))
        .collect();
    assert_eq!(
        after.iter().collect::<Vec<_>>(),
        kept,
        "only the stale ones go"
    );

    // IPv6 beside IPv4 (--enable-ipv6), then every rule of masq's protocol goes (cleanup).
    let both = [wanted(1000, false), wanted(1000, true)];
    ns.enter(|| assert!(IpRules.add_missing(&both).unwrap()))
        .unwrap();
    assert_eq!(
        masqs(&ns, true),
        ["1000:\tfrom all fwmark 0x1000/0x1000 lookup main proto 109"]
    );
    ns.enter(|| assert!(IpRules.matches(&both).unwrap()))
        .unwrap();
    ns.enter(|| assert!(IpRules.remove_stale(&[]).unwrap()))
        .unwrap();
    assert!(masqs(&ns, true).is_empty());
    let left = rules(&ns, false);
    assert!(
        left.iter().any(|r| r.starts_with("1001:")),
        "someone else's rule stays: {left:?}"
    );
    // Without the config only the protocol says a rule is masq's (docs/vpc-native.md).
    assert!(left.iter().any(|r| r.starts_with("1000:")), "{left:?}");
}

/// A stand-in datapath that records masq's rules as they are when it syncs and cleans up.
#[derive(Clone, Default)]
struct Witness(Arc<Mutex<Vec<String>>>);

impl Witness {
    fn look(&self, when: &str) {
        let out = std::process::Command::new("ip")
            .args(["rule", "show"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let seen: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("proto 109"))
            .map(|l| l.split(':').next().unwrap())
            .collect();
        self.0
            .lock()
            .unwrap()
            .push(format!("{when}: {}", seen.join(",")));
    }
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

impl Datapath for Witness {
    fn kind(&self) -> Kind {
        Kind::Nftables
    }
    fn render(&self, _: &Desired) -> String {
        "table\n".into()
    }
    fn sync(&mut self, _: &Desired) -> Result<SyncReport, Error> {
        self.look("sync");
        Ok(SyncReport::default())
    }
    fn matches(&self, _: &Desired) -> Result<bool, Error> {
        Ok(true)
    }
    fn cleanup(&mut self) -> Result<(), Error> {
        self.look("cleanup");
        Ok(())
    }
}

fn desired(priority: u32) -> Desired {
    Desired {
        config: Config::default(),
        node: NodeSettings {
            interfaces: vec![Interface {
                name: "eth0".into(),
                index: 2,
                addrs: Vec::new(),
            }],
            egress_routing: Some(EgressRouting {
                rule_priority: priority,
                ..EgressRouting::default()
            }),
            uplinks: vec![masq_datapath::Uplink {
                name: "eth1".into(),
                tables: vec![2],
            }],
            ..NodeSettings::default()
        },
    }
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn rules_are_added_before_the_datapath_syncs_and_removed_after() {
    masq_testbed::require(&[]);
    let ns = Netns::new("routed").unwrap();
    let witness = Witness::default();
    let mut routed = Routed::new(witness.clone());
    let first = desired(1000);
    let report = ns.enter(|| routed.sync(&first)).unwrap().unwrap();
    assert!(report.changed && !report.drift_repaired);
    assert_eq!(report.installed_entries, 1, "the rule counts as an entry");
    assert_eq!(
        witness.take(),
        ["sync: 1000"],
        "the rule before the datapath marks"
    );

    // Another priority: the new rule is there while the datapath changes its marking, the old
    // one goes only after.
    let moved = desired(1100);
    let report = ns.enter(|| routed.sync(&moved)).unwrap().unwrap();
    assert!(report.changed && !report.drift_repaired, "{report:?}");
    assert_eq!(witness.take(), ["sync: 1000,1100"]);
    assert_eq!(masqs(&ns, false).len(), 1);
    assert!(ns.enter(|| routed.matches(&moved)).unwrap().unwrap());

    // Deleted by someone else: not ready until repaired, and counted as drift.
    ns.ip(&["rule", "del", "priority", "1100"]).unwrap();
    assert!(!ns.enter(|| routed.matches(&moved)).unwrap().unwrap());
    let report = ns.enter(|| routed.sync(&moved)).unwrap().unwrap();
    assert!(report.changed && report.drift_repaired, "{report:?}");
    witness.take();

    // Rendered once, after the datapath's text.
    let text = routed.render(&moved);
    assert!(text.starts_with("table\n"), "{text}");
    for rule in desired_rules(&moved.node) {
        assert!(text.contains(&rule.text()), "{text}");
    }

    // Cleanup: the datapath's objects first (its marks stop), the rules after.
    ns.enter(|| routed.cleanup()).unwrap().unwrap();
    assert_eq!(witness.take(), ["cleanup: 1100"]);
    assert!(masqs(&ns, false).is_empty());
}
