//! New maps get the old flow table (docs/ebpf.md, "Upgrades and table size"): a restart with
//! another `--nat-table-size`, and an upgrade from the `maps-v2` layout.

use crate::topology::*;
use crate::traffic::*;

use std::collections::BTreeSet;
use std::net::IpAddr;

use masq_datapath::ebpf::maps::name;
use masq_datapath::ebpf::{Ebpf, Flow, NatDirection, MAPS_SUBDIR};
use masq_datapath::Datapath;

/// Every translation in the table: (direction, original tuple, translated tuple).
fn translations(agent: &Ebpf) -> BTreeSet<(bool, Flow, Flow)> {
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
    carried_over_to(before_second, second_size, false);
}

/// [`carried_over`], the second agent with `--enable-ipv6` when `ipv6`.
fn carried_over_to(before_second: impl FnOnce(&Topology), second_size: u32, ipv6: bool) {
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

    let v6_capacity = || {
        let pin = t
            .pin_dir
            .join(MAPS_SUBDIR)
            .join(masq_datapath::ebpf::maps::name::NAT6_EGRESS);
        aya::maps::MapData::from_pin(pin)
            .unwrap()
            .info()
            .unwrap()
            .max_entries()
    };
    assert_eq!(v6_capacity(), 1, "no IPv6 table without --enable-ipv6");
    before_second(&t);
    let mut resized = desired.clone();
    resized.node.nat.table_size = second_size;
    resized.node.enable_ipv6 = ipv6;
    let mut second = t.agent();
    t.node.enter(|| second.sync(&resized)).unwrap().unwrap();
    assert_eq!(translations(&second), table, "the flows did not come over");
    if ipv6 {
        assert_eq!(v6_capacity(), second_size, "the IPv6 table got its size");
    }
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

/// Without `--enable-ipv6` the IPv6 flow table is one entry (the maps are preallocated);
/// turning IPv6 on gives it its size, in new maps, and the IPv4 flows come over.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn turning_ipv6_on_sizes_its_table_and_carries_the_flows_over() {
    with_private_bpffs(|| carried_over_to(|_| {}, masq_datapath::ebpf::DEFAULT_NAT_CAPACITY, true));
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

/// A map an older build pinned under a name this one no longer has (`masq_nonmasq_dst`, now
/// `masq_dst_policy`) is unpinned at the next load, and traffic goes on.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_retired_map_is_unpinned_at_the_next_load() {
    with_private_bpffs(|| {
        let t = topology();
        let desired = t.desired();
        let mut first = t.agent();
        t.node.enter(|| first.sync(&desired)).unwrap().unwrap();
        drop(first);
        let maps = t.pin_dir.join(MAPS_SUBDIR);
        let retired = maps.join("masq_nonmasq_dst");
        let map = aya::maps::MapData::from_pin(maps.join(name::DST_POLICY)).unwrap();
        map.pin(&retired).unwrap();
        assert!(retired.exists());
        let mut second = t.agent();
        t.node.enter(|| second.sync(&desired)).unwrap().unwrap();
        assert!(!retired.exists(), "the retired map is still pinned");
        assert!(maps.join(name::DST_POLICY).exists());
        let (echo, peer) = udp_peer_seen(&t, INTERNET);
        assert!(echo.is_some());
        assert_eq!(peer.unwrap().ip(), IpAddr::V4(NODE));
    });
}
