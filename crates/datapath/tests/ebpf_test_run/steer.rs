//! The steering program of a VPC-native node's secondary interfaces (`docs/vpc-native.md`). Its
//! FIB lookup reads the routes of the calling thread's network namespace, so these cases run in
//! a namespace of their own holding an uplink with a default route in the main table.

use std::net::Ipv4Addr;

use etherparse::icmpv4::DestUnreachableHeader;
use etherparse::Icmpv4Type;
use masq_datapath::ebpf::types::{MasqSteer, Reason};
use masq_datapath::ebpf::Contents;
use masq_testbed::topology::set_sysctl;
use masq_testbed::Netns;

use crate::harness::*;

/// The egress interface's address in the namespace: what steered flows are translated to.
const UPLINK: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 1);
const MARK: u32 = 0x1000;

/// A namespace with `uplink` (a veth whose peer stays in the namespace) holding [`UPLINK`] and the main table's default route;
/// returns it with the uplink's ifindex.
fn node_with_uplink() -> (Netns, u32) {
    let ns = Netns::new("steer").unwrap();
    ns.ip(&["link", "set", "lo", "up"]).unwrap();
    ns.ip(&[
        "link", "add", "uplink", "type", "veth", "peer", "name", "wire",
    ])
    .unwrap();
    ns.ip(&["link", "set", "wire", "up"]).unwrap();
    ns.ip(&["addr", "add", &format!("{UPLINK}/24"), "dev", "uplink"])
        .unwrap();
    ns.ip(&["link", "set", "uplink", "up"]).unwrap();
    ns.ip(&["route", "add", "default", "via", "172.31.0.2"])
        .unwrap();
    // A FIB lookup answers only where the interface it starts from forwards.
    set_sysctl(&ns, "net/ipv4/ip_forward", "1").unwrap();
    let shown = ns.ip(&["-j", "link", "show", "uplink"]).unwrap();
    let links: serde_json::Value = serde_json::from_str(&shown).unwrap();
    let ifindex = links[0]["ifindex"].as_u64().unwrap() as u32;
    (ns, ifindex)
}

fn steering_contents(uplink_ifindex: u32, mark: u32) -> Contents {
    let mut c = base_contents();
    c.snat_pools.clear();
    c.snat_pools.insert(uplink_ifindex, vec![UPLINK]);
    c.local_addrs.insert(UPLINK);
    c.steer = MasqSteer { mark, table: 254 };
    c
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn masqueraded_flows_are_translated_to_the_egress_address_and_redirected() {
    masq_testbed::require(&[]);
    let (ns, ifindex) = node_with_uplink();
    ns.enter(|| {
        let h = Harness::new(&steering_contents(ifindex, MARK));
        let (rc, out, mark) = h.steer(&tcp(POD, 40000, EXTERNAL, 80, b"hello"));
        assert_eq!(rc, REDIRECT, "handed to the egress interface");
        assert_eq!(inspect(&out).src, UPLINK, "the egress interface's address");
        assert_eq!(mark & MARK, MARK, "marked, so the egress program leaves it");
        // The established flow keeps being redirected.
        let (rc, out, _) = h.steer(&tcp(POD, 40000, EXTERNAL, 80, b"again"));
        assert_eq!((rc, inspect(&out).src), (REDIRECT, UPLINK));

        // The reply is translated back and marked for masq's ip rule (reverse-path check).
        let port = inspect(&out).sport;
        let (rc, back, mark) = h.ingress_marked(&tcp(EXTERNAL, 80, UPLINK, port, b"world"));
        assert_eq!(rc, CONTINUE);
        assert_eq!(inspect(&back).dst, POD);
        assert_eq!(mark & MARK, MARK);

        // So is an ICMP error about the flow (path MTU discovery through strict rp_filter).
        let error = icmp_error_about(
            &out,
            Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
                next_hop_mtu: 1400,
            }),
        );
        let (rc, back, mark) = h.ingress_marked(&error);
        assert_eq!((rc, inspect(&back).dst), (CONTINUE, POD));
        assert_eq!(mark & MARK, MARK, "ICMP error about a steered flow marked");
        assert_eq!(h.count(Reason::IcmpErrorTranslated), 1);

        // A kept destination keeps the pod's own route: untouched, not redirected, unmarked.
        let kept = Ipv4Addr::new(10, 0, 2, 10);
        let (rc, out, mark) = h.steer(&tcp(POD, 40001, kept, 80, b"vpc"));
        assert_eq!((rc, inspect(&out).src, mark), (CONTINUE, POD, 0));
        assert_eq!(h.count(Reason::TranslatedEgress), 2);
    })
    .unwrap();
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn without_egress_routing_the_steering_program_leaves_everything() {
    masq_testbed::require(&[]);
    let (ns, ifindex) = node_with_uplink();
    ns.enter(|| {
        let mut contents = steering_contents(ifindex, 0);
        // A test run's packet is on lo (ifindex 1): let the egress program translate there.
        contents.snat_pools.insert(1, vec![UPLINK]);
        let h = Harness::new(&contents);
        let (rc, out, mark) = h.steer(&tcp(POD, 40000, EXTERNAL, 80, b"hello"));
        assert_eq!((rc, inspect(&out).src, mark), (CONTINUE, POD, 0));
        // Replies of flows the egress interface translated itself are not marked either.
        let (rc, plain) = h.egress(&tcp(POD, 40002, EXTERNAL, 80, b"plain"));
        assert_eq!(rc, CONTINUE);
        let port = inspect(&plain).sport;
        let (_, back, mark) = h.ingress_marked(&tcp(EXTERNAL, 80, UPLINK, port, b"back"));
        assert_eq!((inspect(&back).dst, mark), (POD, 0));
    })
    .unwrap();
}

/// The egress interface's IPv6 address in the namespace of [`node_with_uplink6`].
const UPLINK6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfd00, 0x31, 0, 0, 0, 0, 0, 1);

/// [`node_with_uplink`] with IPv6 too: the uplink holds [`UPLINK6`] and the main table an IPv6
/// default route (forwarding on, which the FIB lookup needs).
fn node_with_uplink6() -> (Netns, u32) {
    let (ns, ifindex) = node_with_uplink();
    set_sysctl(&ns, "net/ipv6/conf/all/disable_ipv6", "0").unwrap();
    set_sysctl(&ns, "net/ipv6/conf/all/forwarding", "1").unwrap();
    ns.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{UPLINK6}/64"),
        "dev",
        "uplink",
        "nodad",
    ])
    .unwrap();
    ns.ip(&[
        "-6",
        "route",
        "add",
        "default",
        "via",
        "fd00:31::2",
        "dev",
        "uplink",
    ])
    .unwrap();
    (ns, ifindex)
}

/// IPv6 steering (issue 17): the FIB lookup in the egress table finds the uplink, the flow is
/// translated to the uplink's IPv6 address, marked and redirected; its reply and an ICMPv6
/// error about it are marked; a kept destination keeps the pod's route.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn ipv6_flows_are_steered_with_the_fib_lookup() {
    use crate::harness6::*;
    use etherparse::Icmpv6Type;
    masq_testbed::require(&[]);
    let (ns, ifindex) = node_with_uplink6();
    ns.enter(|| {
        let mut contents = steering_contents(ifindex, MARK);
        contents.config.flags |= masq_datapath::ebpf::types::CFG_IPV6;
        contents.v6.snat_pools.insert(ifindex, vec![UPLINK6]);
        contents.v6.local_addrs.insert(UPLINK6);
        contents.v6.dst_policy.insert(
            "fd00::/8".parse().unwrap(),
            masq_decision::Reason::NonMasqueradeCidr,
        );
        let h = Harness::new(&contents);
        let (rc, out, mark) = h.steer(&tcp6(POD6, 40000, EXTERNAL6, 80, "S", b"hello"));
        assert_eq!(rc, REDIRECT, "handed to the egress interface");
        assert_eq!(inspect6(&out).src, UPLINK6);
        assert_eq!(mark & MARK, MARK);
        let entries = list(&h.maps);
        assert!(entries.iter().all(|e| e.steered), "{entries:?}");

        let port = inspect6(&out).sport;
        let (rc, back, mark) = h.ingress_marked(&tcp6(EXTERNAL6, 80, UPLINK6, port, "SA", b""));
        assert_eq!((rc, inspect6(&back).dst), (CONTINUE, POD6));
        assert_eq!(mark & MARK, MARK);
        let error = icmp6_error_about(&out, Icmpv6Type::PacketTooBig { mtu: 1280 });
        let (_, back, mark) = h.ingress_marked(&error);
        assert_eq!((inspect6(&back).dst, mark & MARK), (POD6, MARK));

        let kept = tcp6(POD6, 40001, KEPT6, 80, "S", b"vpc");
        let (rc, out, mark) = h.steer(&kept);
        assert_eq!((rc, out, mark), (CONTINUE, kept, 0));
    })
    .unwrap();
}
