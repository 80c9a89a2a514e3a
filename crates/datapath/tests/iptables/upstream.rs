//! Taking over from kubernetes-sigs/ip-masq-agent: its chain, written as it writes it, is
//! adopted or replaced in place with a single jump, and a chain left under another name is
//! reported and kept.

use masq_datapath::ipt::{Backend, Family, Iptables};
use masq_datapath::Datapath;
use masq_testbed::Netns;

use crate::ipt_support::{config, desired, RFC1918};
use crate::nat_table::*;

/// Exactly what kubernetes-sigs/ip-masq-agent (v2.10+, default flags) does on a node: its own
/// argument order, the jump ensured with `-C` then `-A`, then the chain restored. Its jump comment
/// carries literal quote characters (`"\"ip-masq-agent: …\""`); some older releases had none.
fn install_like_upstream(ns: &Netns, backend: Backend, chain: &str, quoted_jump: bool) {
    let iptables = program(backend, Family::V4, "");
    ns.exec(&iptables, &["-t", "nat", "-N", chain]).unwrap();
    let mut comment = format!(
        "ip-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic to our \
         custom {chain} chain"
    );
    if quoted_jump {
        comment = format!("\"{comment}\"");
    }
    ns.exec(
        &iptables,
        &[
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-m",
            "comment",
            "--comment",
            &comment,
            "-m",
            "addrtype",
            "!",
            "--dst-type",
            "LOCAL",
            "-j",
            chain,
        ],
    )
    .unwrap();
    let non_masq =
        "-m comment --comment \"ip-masq-agent: local traffic is not subject to MASQUERADE\"";
    let mut payload = format!("*nat\n:{chain} - [0:0]\n");
    for cidr in ["169.254.0.0/16"].iter().chain(RFC1918.iter()) {
        payload.push_str(&format!("-A {chain} {non_masq} -d {cidr} -j RETURN\n"));
    }
    // Upstream run with `--to-ports 1024-29999,32768-65535`, the ports masq hands out by
    // default (every unprivileged one but the NodePort range): its per-protocol split.
    let masq = "-m comment --comment \"ip-masq-agent: outbound traffic is subject to MASQUERADE \
                (must be last in chain)\"";
    for protocol in ["tcp", "udp", "sctp"] {
        payload.push_str(&format!(
            "-A {chain} -p {protocol} {masq} -m statistic --mode random --probability \
             0.46929256292 -j MASQUERADE --to-ports 1024-29999 --random-fully\n\
             -A {chain} -p {protocol} {masq} -j MASQUERADE --to-ports 32768-65535 --random-fully\n"
        ));
    }
    payload.push_str(&format!(
        "-A {chain} {masq} -j MASQUERADE --random-fully\nCOMMIT\n"
    ));
    restore(ns, backend, Family::V4, &payload);
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn takes_over_a_chain_written_by_upstream() {
    for quoted_jump in [true, false] {
        each_backend("migrate", |ns, backend| {
            migrate_from_upstream(ns, backend, quoted_jump)
        });
    }
}

fn migrate_from_upstream(ns: &Netns, backend: Backend, quoted_jump: bool) {
    install_like_upstream(ns, backend, CHAIN, quoted_jump);
    let upstream_jump = saved(ns, backend, Family::V4)
        .lines()
        .find(|l| l.starts_with("-A POSTROUTING "))
        .unwrap()
        .to_string();

    // Same config as upstream's default (and its port list): identical rules, adopted without
    // a write.
    let same = desired(config(&RFC1918));
    let mut datapath = Iptables::new(backend);
    assert!(ns.enter(|| datapath.matches(&same)).unwrap().unwrap());
    let report = sync(ns, &mut datapath, &same);
    assert!(!report.changed, "{report:?}");

    // masq's own default: the chain is replaced in place, the jump stays single.
    let reserved = desired(masq_config::Config::default());
    let report = sync(ns, &mut datapath, &reserved);
    assert!(report.changed && !report.drift_repaired, "{report:?}");
    assert_installed(ns, backend, &datapath, &reserved);
    let save = saved(ns, backend, Family::V4);
    assert_eq!(
        save.lines()
            .filter(|l| l.contains("-j MASQUERADE") && !l.contains("--to-ports"))
            .count(),
        1
    );
    // Upstream's own jump was kept as it was, so switching back to upstream adds nothing.
    assert_eq!(jump_count(&save, &upstream_jump), 1, "{save}");

    // masq's jump next to upstream's (say, an older masq ran): one of them goes.
    if quoted_jump {
        restore(ns, backend, Family::V4, &format!("*nat\n{JUMP}\nCOMMIT\n"));
        assert_eq!(jumps_to(&saved(ns, backend, Family::V4), CHAIN), 2);
        let report = sync(ns, &mut datapath, &reserved);
        assert!(report.drift_repaired, "{report:?}");
        assert_installed(ns, backend, &datapath, &reserved);
        assert_eq!(
            jump_count(&saved(ns, backend, Family::V4), &upstream_jump),
            1
        );
    }
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn reports_and_keeps_a_chain_left_under_another_name() {
    each_backend("leftover", |ns, backend| {
        install_like_upstream(ns, backend, "IP-MASQ", true);
        // What kube-up's node scripts wrote before ip-masq-agent existed, no longer referenced.
        let iptables = program(backend, Family::V4, "");
        ns.exec(&iptables, &["-t", "nat", "-N", "OLD-MASQ"])
            .unwrap();
        let kube_up_rule = [
            "-t",
            "nat",
            "-A",
            "OLD-MASQ",
            "-d",
            "10.0.0.0/8",
            "-m",
            "comment",
            "--comment",
            "ip-masq: local traffic is not subject to MASQUERADE",
            "-j",
            "RETURN",
        ];
        ns.exec(&iptables, &kube_up_rule).unwrap();
        let d = desired(config(&RFC1918));
        let mut datapath = Iptables::new(backend);
        sync(ns, &mut datapath, &d);
        let leftovers = ns.enter(|| datapath.leftovers(CHAIN)).unwrap().unwrap();
        let mut here: Vec<_> = leftovers.iter().filter(|l| l.backend == backend).collect();
        here.sort_by(|a, b| a.chain.cmp(&b.chain));
        assert_eq!(here.len(), 2, "{leftovers:?}");
        assert_eq!(here[0].chain, "IP-MASQ");
        assert_eq!(here[0].family, "iptables");
        // Link-local, the 3 RFC 1918 ranges, 3 protocols × 2 port ranges, the catch-all.
        assert_eq!(here[0].rules, 11);
        assert!(here[0].referenced);
        assert_eq!(here[1].chain, "OLD-MASQ");
        assert!(!here[1].referenced);

        ns.enter(|| datapath.cleanup()).unwrap().unwrap();
        let save = saved(ns, backend, Family::V4);
        assert_eq!(chain_lines(&save, CHAIN), None, "{save}");
        assert_eq!(chain_lines(&save, "IP-MASQ").map(|r| r.len()), Some(11));
    });
}
