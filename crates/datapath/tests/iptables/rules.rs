//! masq's own rules: installed as rendered, adopted and changed, drift repaired, IPv6 rules
//! following the flag, every kind of rule reading back as rendered, a chain name too long
//! refused.

use masq_datapath::ipt::{Family, Iptables};
use masq_datapath::{Datapath, PortRange};
use masq_testbed::Netns;

use crate::ipt_support::{config, desired, nets, RFC1918};
use crate::nat_table::*;

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn installs_what_render_prints_adopts_and_follows_changes() {
    each_backend("install", |ns, backend| {
        let first = desired(masq_config::Config::default());
        let mut datapath = Iptables::new(backend);
        let report = sync(ns, &mut datapath, &first);
        assert!(report.changed && !report.drift_repaired, "{report:?}");
        // The exemptions, link-local, and per protocol (tcp, udp, sctp) one rule for each of
        // the two default port ranges, then the catch-all.
        assert_eq!(
            report.installed_entries,
            masq_config::RESERVED_CIDRS.len() + 3 + 6
        );
        assert_installed(ns, backend, &datapath, &first);
        assert_eq!(jump_count(&saved(ns, backend, Family::V4), JUMP), 1);

        let again = sync(ns, &mut datapath, &first);
        assert!(!again.changed && !again.drift_repaired, "{again:?}");

        // A restarted agent adopts what the previous run wrote: nothing to write.
        let mut restarted = Iptables::new(backend);
        let adopted = sync(ns, &mut restarted, &first);
        assert!(!adopted.changed && !adopted.drift_repaired, "{adopted:?}");

        let mut second = config(&RFC1918);
        second.masq_link_local = true;
        let second = desired(second);
        assert!(!ns.enter(|| restarted.matches(&second)).unwrap().unwrap());
        let changed = sync(ns, &mut restarted, &second);
        assert!(changed.changed && !changed.drift_repaired, "{changed:?}");
        assert_installed(ns, backend, &restarted, &second);
    });
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn drift_is_detected_and_repaired() {
    each_backend("drift", |ns, backend| {
        let d = desired(config(&RFC1918));
        let mut datapath = Iptables::new(backend);
        sync(ns, &mut datapath, &d);
        let iptables = program(backend, Family::V4, "");
        let intact = |datapath: &Iptables| ns.enter(|| datapath.intact()).unwrap().unwrap();
        assert!(intact(&datapath));

        // The chain flushed: left to the resync's full comparison (intact() looks at the jump).
        ns.exec(&iptables, &["-t", "nat", "-F", CHAIN]).unwrap();
        assert!(!ns.enter(|| datapath.matches(&d)).unwrap().unwrap());
        let report = sync(ns, &mut datapath, &d);
        assert!(report.changed && report.drift_repaired, "{report:?}");
        assert_installed(ns, backend, &datapath, &d);

        // The jump deleted, as a flush of the nat table does: intact() sees it.
        ns.exec(&iptables, &["-t", "nat", "-D", "POSTROUTING", "1"])
            .unwrap();
        assert!(
            !intact(&datapath),
            "{backend:?}: the missing jump went unseen"
        );
        assert!(!ns.enter(|| datapath.matches(&d)).unwrap().unwrap());
        let report = sync(ns, &mut datapath, &d);
        assert!(report.drift_repaired, "{report:?}");
        assert_installed(ns, backend, &datapath, &d);
        assert!(intact(&datapath));

        // A second copy of the jump (say, two agents once raced): back to exactly one.
        let copy = format!(
            "*nat\n{}\nCOMMIT\n",
            JUMP.replacen("-A POSTROUTING", "-I POSTROUTING 1", 1)
        );
        restore(ns, backend, Family::V4, &copy);
        assert_eq!(jump_count(&saved(ns, backend, Family::V4), JUMP), 2);
        let report = sync(ns, &mut datapath, &d);
        assert!(report.drift_repaired, "{report:?}");
        assert_installed(ns, backend, &datapath, &d);
    });
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn ipv6_rules_follow_the_flag_and_cleanup_removes_everything() {
    each_backend("ipv6", |ns, backend| {
        let mut cfg = config(&["10.0.0.0/8", "fd00::/8"]);
        cfg.non_masquerade_src_cidrs = nets(&["fd10::/64"]);
        let mut d = desired(cfg);
        d.node.enable_ipv6 = true;
        let mut datapath = Iptables::new(backend);
        sync(ns, &mut datapath, &d);
        assert_installed(ns, backend, &datapath, &d);
        assert!(saved(ns, backend, Family::V6).contains("-d fe80::/10"));

        d.node.enable_ipv6 = false;
        d.config.non_masquerade_cidrs = nets(&["10.0.0.0/8"]);
        d.config.non_masquerade_src_cidrs.clear();
        let report = sync(ns, &mut datapath, &d);
        assert!(report.changed, "{report:?}");
        assert_installed(ns, backend, &datapath, &d);

        d.node.enable_ipv6 = true;
        sync(ns, &mut datapath, &d);
        ns.enter(|| datapath.cleanup()).unwrap().unwrap();
        for family in Family::ALL {
            let save = saved(ns, backend, family);
            assert!(!save.contains(CHAIN), "{backend} {family:?}: {save}");
        }
        // Absent is success.
        ns.enter(|| datapath.cleanup()).unwrap().unwrap();
    });
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn every_rule_kind_reads_back_as_rendered() {
    each_backend("kinds", |ns, backend| {
        let mut cfg = config(&["10.0.0.0/8", "fd00::/8"]);
        cfg.masq_link_local = true;
        cfg.non_masquerade_src_cidrs = nets(&["10.10.0.0/16"]);
        cfg.masquerade_cidrs = nets(&["10.5.0.0/16", "fd00:5::/32"]);
        cfg.non_masquerade_cidrs
            .push("10.5.3.0/24".parse().unwrap());
        let mut d = desired(cfg);
        d.node.enable_ipv6 = true;
        d.node.iptables_chain = "MASQ-TEST".to_string();
        d.node.pod_cidrs = nets(&["10.244.0.0/16", "fd20::/64"]);
        d.node.snat_ips = vec!["192.0.2.10".parse().unwrap()];
        d.node.native_routing_cidr = Some("10.96.0.0/12".parse().unwrap());
        let ranges = vec![
            PortRange {
                first: 1024,
                last: 29999,
            },
            PortRange {
                first: 30500,
                last: 30500,
            },
            PortRange {
                first: 32768,
                last: 65535,
            },
        ];
        d.node.port_ranges = ranges;
        let mut datapath = Iptables::new(backend);
        sync(ns, &mut datapath, &d);
        assert_installed(ns, backend, &datapath, &d);
        let save = saved(ns, backend, Family::V4);
        assert!(save.contains("--probability"), "{save}");
        assert!(save.contains("--to-source 192.0.2.10:1024-29999"), "{save}");
        // A one-port range reads back as the bare port.
        assert!(save.contains("--to-source 192.0.2.10:30500 "), "{save}");
        assert!(
            save.contains("-s 10.244.0.0/16 -d 10.5.0.0/16 -p tcp"),
            "{save}"
        );
    });
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn refuses_a_chain_name_iptables_cannot_hold() {
    masq_testbed::require(&[]);
    let ns = Netns::new("badchain").unwrap();
    let mut d = desired(config(&RFC1918));
    d.node.iptables_chain = "A-CHAIN-NAME-LONGER-THAN-28-BYTES".to_string();
    let mut datapath = Iptables::new(backends()[0]);
    let err = ns.enter(|| datapath.sync(&d)).unwrap().unwrap_err();
    assert!(err.to_string().contains("A-CHAIN-NAME-LONGER"), "{err}");
    assert!(err.to_string().contains("28"), "{err}");
}
