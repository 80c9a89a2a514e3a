//! New maps get the old flow table (docs/ebpf.md, "Upgrades and table size"): a restart with
//! another `--nat-table-size`, and an upgrade from the `maps-v2` layout.

use crate::topology::*;
use crate::traffic::*;

use std::collections::BTreeSet;
use std::net::IpAddr;

use masq_datapath::ebpf::types::NatTuple;
use masq_datapath::ebpf::{Ebpf, NatDirection, MAPS_SUBDIR};
use masq_datapath::Datapath;

/// Every translation in the table: (direction, original tuple, translated tuple).
fn translations(agent: &Ebpf) -> BTreeSet<(bool, NatTuple, NatTuple)> {
    agent
        .nat_entries()
        .unwrap()
        .into_iter()
        .map(|e| {
            (
                e.direction == NatDirection::Egress,
                e.original,
                e.translated,
            )
        })
        .collect()
}

/// Flows through the first agent, then the second agent (built by `second`) takes over; the
/// table must hold the same translations, and traffic must still be translated.
fn carried_over(before_second: impl FnOnce(&Topology), second_size: u32) {
    let t = topology();
    let desired = t.desired();
    let mut first = t.agent();
    t.node.enter(|| first.sync(&desired)).unwrap().unwrap();
    for _ in 0..3 {
        let (echo, peer) = udp_peer_seen(&t, INTERNET);
        assert!(echo.is_some());
        assert_eq!(peer.unwrap().ip(), IpAddr::V4(NODE));
    }
    let (ok, _) = tcp_peer_seen(&t, INTERNET);
    assert!(ok);
    let table = translations(&first);
    assert!(table.len() >= 8, "{table:?}");
    drop(first);

    before_second(&t);
    let mut resized = desired.clone();
    resized.node.nat.table_size = second_size;
    let mut second = t.agent();
    t.node.enter(|| second.sync(&resized)).unwrap().unwrap();
    assert_eq!(translations(&second), table, "the flows did not come over");
    let pressure = second.pressure().unwrap();
    assert_eq!(pressure.capacity, second_size);
    let leftovers: Vec<_> = std::fs::read_dir(&t.pin_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("maps-"))
        .collect();
    assert_eq!(leftovers, [MAPS_SUBDIR], "old maps left pinned");
    let (echo, peer) = udp_peer_seen(&t, INTERNET);
    assert!(echo.is_some());
    assert_eq!(peer.unwrap().ip(), IpAddr::V4(NODE));
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_new_table_size_carries_the_flows_over() {
    with_private_bpffs(|| carried_over(|_| {}, 4096));
}

/// The `maps-v2` directory of an older agent (the same entry layout): its table comes over,
/// and the directory goes once the new programs hold the hooks.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn an_upgrade_from_maps_v2_carries_the_flows_over() {
    with_private_bpffs(|| {
        carried_over(
            |t| {
                let current = t.pin_dir.join(MAPS_SUBDIR);
                std::fs::rename(&current, t.pin_dir.join("maps-v2")).unwrap();
            },
            masq_datapath::ebpf::DEFAULT_NAT_CAPACITY,
        )
    });
}
