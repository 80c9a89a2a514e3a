//! masq beside a CNI's tc programs on the same uplink (issue 13, item 5): a CNI-like program
//! (`bpf/tests/cni_like.bpf.c`: counts packets, returns `TC_ACT_OK` like Cilium's `bpf_host`,
//! which ends the hook) attached before masq starts and after, by TCX and as clsact filters. In
//! every case pod traffic leaves with the node's address, the replies reach the pod, the CNI's
//! program sees both directions, masq's position survives a restart and a repair, and `cleanup`
//! leaves the CNI's program attached. A masq behind such a program would never see a packet: the
//! pod's TCP connection would not even open (the external side has no route to pods).

use crate::topology::*;
use crate::traffic::*;

use std::net::IpAddr;

use aya::programs::links::LinkOrder;
use aya::programs::TcAttachType::{self, Egress, Ingress};
use masq_datapath::ebpf::cni_like::CniLike;
use masq_datapath::ebpf::{attach, AttachMode, Ebpf, HookOrder};
use masq_datapath::Datapath;

/// The programs on eth0's `hook`, first to run first.
fn order(t: &Topology, hook: TcAttachType) -> Vec<String> {
    t.node
        .enter(move || HookOrder::read("eth0", hook).unwrap())
        .unwrap()
        .programs
        .into_iter()
        .map(|p| p.name)
        .collect()
}

/// The CNI-like program on both hooks of eth0 by TCX, at `head` or after what is there.
fn cni_by_tcx(t: &Topology, head: bool) -> CniLike {
    let position = || {
        if head {
            LinkOrder::first()
        } else {
            LinkOrder::last()
        }
    };
    t.node
        .enter(move || {
            let mut cni = CniLike::load().unwrap();
            cni.attach_tcx("eth0", Egress, position()).unwrap();
            cni.attach_tcx("eth0", Ingress, position()).unwrap();
            cni
        })
        .unwrap()
}

/// What the agent would tell `masq status` (read in the node's namespace).
fn findings(t: &Topology, agent: &Ebpf, desired: &masq_datapath::Desired) -> Vec<String> {
    t.node.enter(|| agent.findings(desired)).unwrap()
}

/// The CNI-like program on both hooks of eth0 as clsact filters at `priority` (0: the kernel
/// chooses, as `tc filter add` without `prio` does).
fn cni_by_clsact(t: &Topology, priority: u16) -> CniLike {
    t.node
        .enter(move || {
            let mut cni = CniLike::load().unwrap();
            cni.attach_clsact("eth0", Egress, priority, 1).unwrap();
            cni.attach_clsact("eth0", Ingress, priority, 1).unwrap();
            cni
        })
        .unwrap()
}

/// Pod traffic is translated and answered while the CNI's program counts it both ways.
fn translated_beside(t: &Topology, cni: &CniLike, when: &str) {
    let seen = |hook| cni.packets(hook).unwrap();
    let (egress, ingress) = (seen(Egress), seen(Ingress));
    let (ok, peer) = tcp_peer_seen(t, INTERNET);
    assert!(ok, "{when}: the pod's TCP connection failed");
    assert_eq!(peer.unwrap().ip(), IpAddr::V4(NODE), "{when}");
    let (echoed, peer) = udp_peer_seen(t, INTERNET);
    assert_eq!(
        echoed.as_deref(),
        Some(&b"udp ping"[..]),
        "{when}: UDP echo lost"
    );
    assert_eq!(peer.unwrap().ip(), IpAddr::V4(NODE), "{when}");
    assert!(seen(Egress) > egress, "{when}: the CNI saw nothing leave");
    assert!(
        seen(Ingress) > ingress,
        "{when}: the CNI saw nothing arrive"
    );
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_cni_program_attached_by_tcx_before_masq_runs_after_it() {
    with_private_bpffs(a_cni_program_attached_by_tcx_before_masq_runs_after_it_body);
}

fn a_cni_program_attached_by_tcx_before_masq_runs_after_it_body() {
    let t = topology();
    let cni = cni_by_tcx(&t, false);
    let desired = t.desired();
    let mut agent = t.agent();
    t.node.enter(|| agent.sync(&desired)).unwrap().unwrap();
    assert_eq!(order(&t, Egress), ["masq_egress", "cnilike_egress"]);
    assert_eq!(order(&t, Ingress), ["masq_ingress", "cnilike_ingress"]);
    translated_beside(&t, &cni, "CNI attached first");
    assert_eq!(findings(&t, &agent, &desired), Vec::<String>::new());

    t.node.enter(|| agent.cleanup()).unwrap().unwrap();
    assert_eq!(order(&t, Egress), ["cnilike_egress"], "cleanup left it");
    assert_eq!(order(&t, Ingress), ["cnilike_ingress"], "cleanup left it");
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_cni_program_attached_by_tcx_after_masq_stays_behind_it_across_restart_and_repair() {
    with_private_bpffs(
        a_cni_program_attached_by_tcx_after_masq_stays_behind_it_across_restart_and_repair_body,
    );
}

fn a_cni_program_attached_by_tcx_after_masq_stays_behind_it_across_restart_and_repair_body() {
    let t = topology();
    let desired = t.desired();
    let mut agent = t.agent();
    t.node.enter(|| agent.sync(&desired)).unwrap().unwrap();
    let cni = cni_by_tcx(&t, false);
    assert_eq!(order(&t, Egress), ["masq_egress", "cnilike_egress"]);
    translated_beside(&t, &cni, "CNI attached after masq");

    // A restarted agent swaps its programs into the pinned links: same place.
    drop(agent);
    let mut agent = t.agent();
    let report = t.node.enter(|| agent.sync(&desired)).unwrap().unwrap();
    assert!(!report.changed, "{report:?}");
    assert_eq!(order(&t, Egress), ["masq_egress", "cnilike_egress"]);
    translated_beside(&t, &cni, "after a restart");

    // masq's links detached behind its back (never the CNI's): re-created at the head.
    attach::detach_all(&t.pin_dir).unwrap();
    assert_eq!(order(&t, Egress), ["cnilike_egress"]);
    let report = t.node.enter(|| agent.sync(&desired)).unwrap().unwrap();
    assert!(report.drift_repaired, "{report:?}");
    assert_eq!(order(&t, Egress), ["masq_egress", "cnilike_egress"]);
    assert_eq!(order(&t, Ingress), ["masq_ingress", "cnilike_ingress"]);
    translated_beside(&t, &cni, "after a repair");

    // A program put at the head after masq is ahead of it: nothing masq can do without a
    // window of untranslated traffic, so it says so.
    let ahead = cni_by_tcx(&t, true);
    assert_eq!(order(&t, Egress)[0], "cnilike_egress");
    let findings = findings(&t, &agent, &desired);
    assert!(
        findings.iter().any(
            |f| f.starts_with("on eth0 egress, cnilike_egress (tcx, id ")
                && f.contains("runs before masq_egress")
        ),
        "{findings:?}"
    );
    drop(ahead);

    t.node.enter(|| agent.cleanup()).unwrap().unwrap();
    assert_eq!(order(&t, Egress), ["cnilike_egress"], "cleanup left it");
    assert_eq!(order(&t, Ingress), ["cnilike_ingress"], "cleanup left it");
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_cni_filter_at_priority_1_before_masq_runs_after_it_on_clsact() {
    with_private_bpffs(a_cni_filter_at_priority_1_before_masq_runs_after_it_on_clsact_body);
}

/// Cilium's legacy tc layout: `prio 1 handle 1 bpf da` on both hooks. masq's filter shares
/// priority 1 and, added later, runs first (the kernel puts a new filter at the head of its
/// priority).
fn a_cni_filter_at_priority_1_before_masq_runs_after_it_on_clsact_body() {
    let t = topology();
    let cni = cni_by_clsact(&t, 1);
    let desired = t.desired();
    let clsact = || t.agent().with_attach_mode(AttachMode::Clsact);
    let mut agent = clsact();
    t.node.enter(|| agent.sync(&desired)).unwrap().unwrap();
    assert_eq!(order(&t, Egress), ["masq_egress", "cnilike_egress"]);
    assert_eq!(order(&t, Ingress), ["masq_ingress", "cnilike_ingress"]);
    translated_beside(&t, &cni, "clsact, CNI attached first");

    // A restarted agent replaces its filters' programs in place.
    drop(agent);
    let mut agent = clsact();
    let report = t.node.enter(|| agent.sync(&desired)).unwrap().unwrap();
    assert!(!report.changed, "{report:?}");
    assert_eq!(order(&t, Egress), ["masq_egress", "cnilike_egress"]);
    translated_beside(&t, &cni, "clsact, after a restart");

    t.node.enter(|| agent.cleanup()).unwrap().unwrap();
    assert_eq!(order(&t, Egress), ["cnilike_egress"], "cleanup left it");
    assert_eq!(order(&t, Ingress), ["cnilike_ingress"], "cleanup left it");
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_cni_filter_added_after_masq_on_clsact() {
    with_private_bpffs(a_cni_filter_added_after_masq_on_clsact_body);
}

/// Added after masq without a priority (the kernel picks one above masq's), the CNI's filter
/// runs behind masq. Added later at masq's own priority 1 it runs first (the kernel's order
/// within a priority is newest first): the limit of the clsact fallback, which masq reports.
fn a_cni_filter_added_after_masq_on_clsact_body() {
    let t = topology();
    let desired = t.desired();
    let mut agent = t.agent().with_attach_mode(AttachMode::Clsact);
    t.node.enter(|| agent.sync(&desired)).unwrap().unwrap();
    let cni = cni_by_clsact(&t, 0);
    assert_eq!(order(&t, Egress), ["masq_egress", "cnilike_egress"]);
    assert_eq!(order(&t, Ingress), ["masq_ingress", "cnilike_ingress"]);
    translated_beside(&t, &cni, "clsact, CNI attached after masq");
    assert_eq!(findings(&t, &agent, &desired), Vec::<String>::new());

    // The limit: a filter added at priority 1 after masq's runs first, and masq says so.
    drop(cni);
    let _cni = cni_by_clsact(&t, 1);
    assert_eq!(order(&t, Egress), ["cnilike_egress", "masq_egress"]);
    let findings = findings(&t, &agent, &desired);
    assert_eq!(findings.len(), 2, "one per hook: {findings:?}");
    assert!(
        findings[0].starts_with("on eth0 egress, cnilike_egress (clsact prio 1 handle 0x1, id "),
        "{findings:?}"
    );

    t.node.enter(|| agent.cleanup()).unwrap().unwrap();
    assert_eq!(order(&t, Egress), ["cnilike_egress"], "cleanup left it");
}
