//! What leaves untouched: kept destinations and sources, addresses outside the pod CIDRs,
//! replies to unknown flows; and a flow keeps the decision it began with when the config
//! changes.

use std::net::Ipv4Addr;

use etherparse::PacketBuilder;
use ipnet::Ipv4Net;
use masq_datapath::ebpf::types::Reason;

use crate::harness::*;

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn kept_destinations_and_sources_leave_untouched() {
    let mut contents = base_contents();
    contents
        .nonmasq_src
        .insert("10.244.9.0/24".parse::<Ipv4Net>().unwrap());
    let mut h = Harness::new(&contents);
    let cases = [
        (
            tcp(POD, 40000, Ipv4Addr::new(10, 1, 2, 3), 80, b""),
            Reason::KeepNonMasqDst,
        ),
        (
            tcp(POD, 40000, Ipv4Addr::new(169, 254, 169, 254), 80, b""),
            Reason::KeepLinkLocal,
        ),
        (
            tcp(Ipv4Addr::new(10, 244, 9, 9), 1, EXTERNAL, 80, b""),
            Reason::KeepNonMasqSrc,
        ),
        (tcp(POD, 40001, NODE, 80, b""), Reason::KeepLocal),
    ];
    for (frame, reason) in &cases {
        let (rc, out) = h.egress(frame);
        assert_eq!(rc, CONTINUE);
        assert_eq!(&out, frame, "{reason:?}");
        assert_eq!(h.count(*reason), 1, "{reason:?}");
    }
    h.set_link_local(true);
    let (_, out) = h.egress(&tcp(POD, 40002, Ipv4Addr::new(169, 254, 169, 254), 80, b""));
    assert_eq!(
        inspect(&out).src,
        NODE,
        "masqLinkLocal: true masquerades 169.254/16"
    );
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn pod_cidrs_limit_who_is_a_pod() {
    let mut contents = base_contents();
    contents
        .pod_cidrs
        .insert("10.244.1.0/24".parse::<Ipv4Net>().unwrap());
    contents.config.flags |= masq_datapath::ebpf::types::CFG_POD_CIDRS;
    let h = Harness::new(&contents);
    let outsider = tcp(Ipv4Addr::new(192, 168, 7, 7), 1000, EXTERNAL, 80, b"");
    assert_eq!(h.egress(&outsider).1, outsider);
    assert_eq!(h.count(Reason::KeepNotAPod), 1);
    assert_eq!(
        inspect(&h.egress(&tcp(POD, 1000, EXTERNAL, 80, b"")).1).src,
        NODE
    );
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn established_flows_keep_their_translation_when_the_config_changes() {
    let mut h = Harness::new(&base_contents());
    assert_eq!(
        inspect(&h.egress(&tcp(POD, 40000, EXTERNAL, 80, b"")).1).src,
        NODE
    );
    let mut changed = base_contents();
    keep_dst(&mut changed, Ipv4Net::new(EXTERNAL, 32).unwrap());
    h.maps.apply(&changed).unwrap();
    assert_eq!(
        inspect(&h.egress(&tcp(POD, 40000, EXTERNAL, 80, b"more")).1).src,
        NODE
    );
    assert_eq!(
        inspect(&h.egress(&tcp(POD, 40001, EXTERNAL, 80, b"")).1).src,
        POD
    );
}

/// A connection that began kept (its destination was in nonMasqueradeCIDRs) stays kept when the
/// config changes: its next segment carries no SYN, so no translation starts mid-stream (the
/// peer would reset it). A new connection to the same destination is masqueraded.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_kept_tcp_connection_is_not_translated_mid_stream_after_a_config_change() {
    let mut h = Harness::new(&base_contents());
    let mut kept = base_contents();
    keep_dst(&mut kept, Ipv4Net::new(EXTERNAL, 32).unwrap());
    h.maps.apply(&kept).unwrap();
    assert_eq!(
        inspect(&h.egress(&tcp(POD, 40000, EXTERNAL, 80, b"")).1).src,
        POD
    );
    h.maps.apply(&base_contents()).unwrap();

    let mut segment = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(POD.octets(), EXTERNAL.octets(), 64)
        .tcp(40000, 80, 2000, 512)
        .ack(1)
        .write(&mut segment, b"more")
        .unwrap();
    assert_eq!(h.egress(&segment), (CONTINUE, segment.clone()));
    assert_eq!(h.count(Reason::PassTracked), 1);
    assert_eq!(h.count(Reason::NatCreated), 0);

    assert_eq!(
        inspect(&h.egress(&tcp(POD, 40001, EXTERNAL, 80, b"")).1).src,
        NODE
    );
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn replies_to_unknown_flows_are_untouched() {
    let h = Harness::new(&base_contents());
    let stray = tcp(EXTERNAL, 80, NODE, 45678, b"");
    assert_eq!(h.ingress(&stray), (CONTINUE, stray.clone()));
}
