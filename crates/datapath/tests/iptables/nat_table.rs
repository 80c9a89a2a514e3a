//! The nat table inside a test's namespace, on each backend: read with `iptables-save`
//! (masq's chain, its jump), written with `iptables-restore`, synced, and checked to hold
//! exactly what `render` prints.

use masq_datapath::ipt::{Backend, Family, IptFamily, Iptables};
use masq_datapath::{Datapath, Desired};
use masq_testbed::Netns;

pub(crate) const CHAIN: &str = "IP-MASQ-AGENT";
pub(crate) const JUMP: &str = "-A POSTROUTING -m comment --comment \"ip-masq-agent: ensure nat \
                               POSTROUTING directs all non-LOCAL destination traffic to our \
                               custom IP-MASQ-AGENT chain\" -m addrtype ! --dst-type LOCAL -j \
                               IP-MASQ-AGENT";

/// Both backends (Debian's iptables package ships both); a test fails where one is missing.
pub(crate) fn backends() -> Vec<Backend> {
    masq_testbed::require(&["iptables-nft-restore", "iptables-legacy-restore"]);
    vec![Backend::Nft, Backend::Legacy]
}

pub(crate) fn program(backend: Backend, family: Family, tool: &str) -> String {
    format!("{}-{backend}{tool}", family.command())
}

/// The nat table as `iptables-save` prints it inside `ns`.
pub(crate) fn saved(ns: &Netns, backend: Backend, family: Family) -> String {
    ns.exec(&program(backend, family, "-save"), &[]).unwrap()
}

/// The `-A CHAIN` lines of `chain`, `None` when it is not declared.
pub(crate) fn chain_lines(save: &str, chain: &str) -> Option<Vec<String>> {
    let declared = save.lines().any(|l| l.starts_with(&format!(":{chain} ")));
    declared.then(|| {
        save.lines()
            .filter(|l| l.starts_with(&format!("-A {chain} ")))
            .map(str::to_string)
            .collect()
    })
}

pub(crate) fn jump_count(save: &str, jump: &str) -> usize {
    save.lines().filter(|l| *l == jump).count()
}

/// POSTROUTING rules jumping to `chain`, whatever their comment.
pub(crate) fn jumps_to(save: &str, chain: &str) -> usize {
    save.lines()
        .filter(|l| l.starts_with("-A POSTROUTING ") && l.ends_with(&format!(" -j {chain}")))
        .count()
}

/// Runs `f` with a fresh datapath inside a fresh namespace, once per backend.
pub(crate) fn each_backend(role: &str, f: impl Fn(&Netns, Backend)) {
    for backend in backends() {
        let ns = Netns::new(&format!("{role}-{backend}")).unwrap();
        f(&ns, backend);
    }
}

pub(crate) fn sync(ns: &Netns, datapath: &mut Iptables, d: &Desired) -> masq_datapath::SyncReport {
    ns.enter(|| datapath.sync(d)).unwrap().unwrap()
}

pub(crate) fn assert_installed(ns: &Netns, backend: Backend, datapath: &Iptables, d: &Desired) {
    for family in Family::ALL {
        let save = saved(ns, backend, family);
        if family == Family::V6 && !d.node.enable_ipv6 {
            assert_eq!(chain_lines(&save, CHAIN), None, "{backend}: {save}");
            continue;
        }
        let rules = datapath.chain_rules(d, family);
        assert_eq!(
            chain_lines(&save, &d.node.iptables_chain),
            Some(rules),
            "{backend} {family:?}"
        );
        assert_eq!(
            jumps_to(&save, &d.node.iptables_chain),
            1,
            "{backend} {family:?}: {save}"
        );
    }
    assert!(ns.enter(|| datapath.matches(d)).unwrap().unwrap());
}

pub(crate) fn restore(ns: &Netns, backend: Backend, family: Family, payload: &str) {
    ns.pipe(
        &program(backend, family, "-restore"),
        &["--noflush"],
        payload,
    )
    .unwrap();
}
