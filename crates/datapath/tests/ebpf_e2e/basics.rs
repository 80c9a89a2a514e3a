//! Traffic through the attached programs, and config changes.

use crate::topology::*;
use crate::traffic::*;

use std::net::IpAddr;

use masq_datapath::Datapath;

#[test]
fn pod_traffic_leaves_with_the_node_address_and_replies_come_back() {
    with_private_bpffs(pod_traffic_leaves_with_the_node_address_and_replies_come_back_body);
}

fn pod_traffic_leaves_with_the_node_address_and_replies_come_back_body() {
    let Some(t) = topology() else { return };
    let desired = t.desired();
    let mut agent = t.agent();
    let report = t.node.enter(|| agent.sync(&desired)).unwrap().unwrap();
    assert!(report.changed);
    assert!(t.node.enter(|| agent.matches(&desired)).unwrap().unwrap());

    // TCP: the server sees the node; every echo reaches the pod.
    let (ok, peer) = tcp_peer_seen(&t, INTERNET);
    assert!(ok, "TCP echo through masquerade failed");
    assert_eq!(peer.unwrap().ip(), IpAddr::V4(NODE));

    // UDP echo.
    let (echoed, peer) = udp_peer_seen(&t, INTERNET);
    assert_eq!(echoed.as_deref(), Some(&b"udp ping"[..]), "UDP echo lost");
    assert_eq!(peer.unwrap().ip(), IpAddr::V4(NODE));

    // A kept destination sees the pod itself (and cannot answer: no route back).
    let (_, peer) = udp_peer_seen(&t, KEPT);
    assert_eq!(peer.unwrap().ip(), IpAddr::V4(POD));

    // ICMP echo: answered only through reverse SNAT.
    t.pod
        .exec("ping", &["-c", "2", "-W", "2", "203.0.113.10"])
        .unwrap();
    let entries = agent.nat_entries().unwrap();
    assert!(entries
        .iter()
        .any(|e| e.original.proto == 1 && e.original.src() == POD));
    assert!(entries
        .iter()
        .any(|e| e.original.proto == 6 && e.original.src() == POD));
    let counters = agent.counters().unwrap();
    assert!(counters[&masq_datapath::ebpf::Reason::TranslatedEgress] >= 6);
    assert!(counters[&masq_datapath::ebpf::Reason::KeepNonMasqDst] >= 1);
}

#[test]
fn config_changes_update_the_cidr_trie_in_place() {
    with_private_bpffs(config_changes_update_the_cidr_trie_in_place_body);
}

fn config_changes_update_the_cidr_trie_in_place_body() {
    let Some(t) = topology() else { return };
    let mut desired = t.desired();
    let mut agent = t.agent();
    t.node.enter(|| agent.sync(&desired)).unwrap().unwrap();
    desired.config.non_masquerade_cidrs = vec![
        "10.0.0.0/8".parse().unwrap(),
        "203.0.113.0/24".parse().unwrap(),
    ];
    assert!(!t.node.enter(|| agent.matches(&desired)).unwrap().unwrap());
    let report = t.node.enter(|| agent.sync(&desired)).unwrap().unwrap();
    assert!(report.changed && !report.drift_repaired);
    assert!(t.node.enter(|| agent.matches(&desired)).unwrap().unwrap());
    // 203.0.113.10 is now kept: the server sees the pod.
    let (_, peer) = udp_peer_seen(&t, INTERNET);
    assert_eq!(peer.unwrap().ip(), IpAddr::V4(POD));
    let rendered = agent.render(&desired);
    assert!(rendered.contains("203.0.113.0/24\n"), "{rendered}");
}

#[test]
fn probe_accepts_a_bpffs_pin_dir_and_refuses_anything_else() {
    with_private_bpffs(|| {
        masq_datapath::ebpf::Ebpf::new("/sys/fs/bpf/masq-probe".into())
            .probe()
            .unwrap();
        let err = masq_datapath::ebpf::Ebpf::new(std::env::temp_dir().join("masq-probe"))
            .probe()
            .unwrap_err();
        assert!(err.to_string().contains("not on a bpf filesystem"), "{err}");
    });
}
