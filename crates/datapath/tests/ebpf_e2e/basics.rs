//! Traffic through the attached programs, and config changes.

use crate::topology::*;
use crate::traffic::*;

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use masq_datapath::Datapath;
use masq_testbed::{veth, Netns};

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn pod_traffic_leaves_with_the_node_address_and_replies_come_back() {
    with_private_bpffs(pod_traffic_leaves_with_the_node_address_and_replies_come_back_body);
}

fn pod_traffic_leaves_with_the_node_address_and_replies_come_back_body() {
    let t = topology();
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
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn config_changes_update_the_cidr_trie_in_place() {
    with_private_bpffs(config_changes_update_the_cidr_trie_in_place_body);
}

fn config_changes_update_the_cidr_trie_in_place_body() {
    let t = topology();
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
    assert!(
        rendered.contains("203.0.113.0/24 keep non-masquerade-cidr\n"),
        "{rendered}"
    );
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn probe_mounts_a_bpffs_where_the_pin_dir_has_none_and_says_why_when_it_cannot() {
    with_private_bpffs(|| {
        use masq_datapath::ebpf::bpffs::is_bpffs;
        // On a bpffs already: nothing to mount.
        let mut on_bpffs = masq_datapath::ebpf::Ebpf::new(bpffs().join("masq-probe"));
        on_bpffs.probe().unwrap();
        assert_eq!(on_bpffs.findings(&desired_for(1)), Vec::<String>::new());
        // Elsewhere: a bpffs on the pin directory itself, in this test's own mount namespace.
        let scratch = tempfile::tempdir().unwrap();
        let pin_dir = scratch.path().join("masq");
        assert!(!is_bpffs(&pin_dir).unwrap());
        let mut elsewhere = masq_datapath::ebpf::Ebpf::new(pin_dir.clone());
        elsewhere.probe().unwrap();
        assert!(is_bpffs(&pin_dir).unwrap());
        let findings = elsewhere.findings(&desired_for(1));
        assert!(
            findings.len() == 1
                && findings[0].contains(&format!("masq mounted one on {}", pin_dir.display())),
            "{findings:?}"
        );
        nix::mount::umount2(&pin_dir, nix::mount::MntFlags::MNT_DETACH).unwrap();
        // Where no directory can be made, the error says how to provide a bpffs.
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = masq_datapath::ebpf::Ebpf::new(file.path().join("masq"))
            .probe()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not on a bpf filesystem") && err.contains("mount -t bpf bpf"),
            "{err}"
        );
    });
}

/// Adds a host `far` (198.51.100.20) behind the external namespace, which becomes a router with
/// a 1280-byte MTU towards it: the place where ICMP errors about the pod's traffic come from.
fn add_far_host(t: &Topology) -> Netns {
    let far = Netns::new("far").unwrap();
    veth(&t.external, "efar", &far, "eth0").unwrap();
    t.external
        .ip(&["link", "set", "efar", "mtu", "1280"])
        .unwrap();
    t.external
        .ip(&["addr", "add", "198.51.100.1/24", "dev", "efar"])
        .unwrap();
    t.external
        .exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"])
        .unwrap();
    far.ip(&["link", "set", "eth0", "mtu", "1280"]).unwrap();
    far.ip(&["addr", "add", "198.51.100.20/24", "dev", "eth0"])
        .unwrap();
    far.ip(&["route", "add", "default", "via", "198.51.100.1"])
        .unwrap();
    far
}

const FAR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);

fn set_int_option(sock: &UdpSocket, level: i32, name: i32, value: i32) {
    // SAFETY: a valid socket and a pointer to an int of the stated size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt {level}/{name}");
}

fn get_int_option(sock: &UdpSocket, level: i32, name: i32) -> i32 {
    let mut value: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: as above, with room for the answer.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&mut value as *mut i32).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "getsockopt {level}/{name}");
    value
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn path_mtu_discovery_and_traceroute_errors_reach_the_pod() {
    with_private_bpffs(path_mtu_discovery_and_traceroute_errors_reach_the_pod_body);
}

/// The pod's kernel validates the ICMP checksum and matches the quoted header against its
/// socket: the errors arrive only if masq translated them back correctly.
fn path_mtu_discovery_and_traceroute_errors_reach_the_pod_body() {
    let t = topology();
    let _far = add_far_host(&t);
    let mut agent = t.agent();
    t.node.enter(|| agent.sync(&t.desired())).unwrap().unwrap();

    let (mtu, ttl_error) = t
        .pod
        .enter(|| {
            // Fragmentation needed: a 1400-byte datagram with DF set meets the 1280 link.
            let sock = UdpSocket::bind((POD, 0)).unwrap();
            set_int_option(
                &sock,
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                libc::IP_PMTUDISC_DO,
            );
            sock.connect((FAR, 9)).unwrap();
            let deadline = Instant::now() + Duration::from_secs(3);
            let mut mtu = get_int_option(&sock, libc::IPPROTO_IP, libc::IP_MTU);
            while mtu != 1280 && Instant::now() < deadline {
                let _ = sock.send(&[0u8; 1400]);
                std::thread::sleep(Duration::from_millis(100));
                mtu = get_int_option(&sock, libc::IPPROTO_IP, libc::IP_MTU);
            }

            // Time exceeded: TTL 2 dies at the router (the node's forwarding takes one).
            let probe = UdpSocket::bind((POD, 0)).unwrap();
            set_int_option(&probe, libc::IPPROTO_IP, libc::IP_RECVERR, 1);
            set_int_option(&probe, libc::IPPROTO_IP, libc::IP_TTL, 2);
            probe.connect((FAR, 33434)).unwrap();
            probe
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            probe.send(b"traceroute").unwrap();
            let mut buf = [0u8; 64];
            let ttl_error = probe.recv(&mut buf).err().and_then(|e| e.raw_os_error());
            (mtu, ttl_error)
        })
        .unwrap();
    assert_eq!(
        mtu, 1280,
        "the fragmentation-needed error did not reach the pod"
    );
    assert_eq!(
        ttl_error,
        Some(libc::EHOSTUNREACH),
        "no time-exceeded error at the pod"
    );
    assert!(agent.counters().unwrap()[&masq_datapath::ebpf::Reason::IcmpErrorTranslated] >= 2);
}
