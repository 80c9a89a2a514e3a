//! Restart, kill -9, drift and cleanup.

use crate::topology::*;
use crate::traffic::*;

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use masq_datapath::ebpf::{attach, AttachMode, Direction, Ebpf, Maps, MAPS_SUBDIR};
use masq_datapath::Datapath;

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_restarted_agent_adopts_links_and_maps_without_breaking_a_connection() {
    with_private_bpffs(a_restarted_agent_adopts_links_and_maps_without_breaking_a_connection_body);
}

fn a_restarted_agent_adopts_links_and_maps_without_breaking_a_connection_body() {
    let t = topology();
    let desired = t.desired();
    let mut first = t.agent();
    t.node.enter(|| first.sync(&desired)).unwrap().unwrap();

    std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel();
        let server = s.spawn(|| tcp_server(&t.external, INTERNET, tx));
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let (to_pod, from_test) = mpsc::channel::<u8>();
        let client = s.spawn(|| {
            t.pod
                .enter(move || {
                    let mut conn = TcpStream::connect_timeout(
                        &(INTERNET, 8080).into(),
                        Duration::from_secs(3),
                    )
                    .unwrap();
                    conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                    let mut echoed = 0;
                    while let Ok(round) = from_test.recv_timeout(Duration::from_secs(10)) {
                        let mut back = [0u8; 1];
                        if conn.write_all(&[round]).is_ok()
                            && conn.read_exact(&mut back).is_ok()
                            && back[0] == round
                        {
                            echoed += 1;
                        }
                        if round == 2 {
                            break;
                        }
                    }
                    echoed
                })
                .unwrap()
        });
        to_pod.send(0).unwrap();
        // The agent goes away: its links stay pinned and keep translating.
        let before = first.nat_entries().unwrap().len();
        drop(first);
        std::thread::sleep(Duration::from_millis(100));
        to_pod.send(1).unwrap();
        // A new agent adopts the maps (NAT entries included) and swaps its programs in.
        let mut second = t.agent();
        let report = t.node.enter(|| second.sync(&desired)).unwrap().unwrap();
        assert!(!report.changed, "adoption rewrote state: {report:?}");
        assert!(second.nat_entries().unwrap().len() >= before);
        assert!(t.node.enter(|| second.matches(&desired)).unwrap().unwrap());
        to_pod.send(2).unwrap();
        assert_eq!(
            client.join().unwrap(),
            3,
            "the connection broke across the restart"
        );
        assert_eq!(server.join().unwrap().unwrap().ip(), IpAddr::V4(NODE));

        // Cleanup leaves nothing behind.
        t.node.enter(|| second.cleanup()).unwrap().unwrap();
        assert!(!t.pin_dir.exists());
        let attached = t
            .node
            .enter(|| {
                Direction::BOTH
                    .iter()
                    .any(|d| attach::is_attached("eth0", *d))
            })
            .unwrap();
        assert!(!attached, "a program is still attached after cleanup");
    });
}

const CHILD_PIN_ENV: &str = "MASQ_E2E_AGENT_PIN";
const CHILD_READY: &str = "masq-agent-ready";

/// Not a test: the agent process that `kill_9_under_traffic_breaks_no_connection` starts (inside
/// the node namespace and the private bpffs) and kills.
#[test]
#[ignore = "helper process of kill_9_under_traffic_breaks_no_connection"]
fn agent_child_process() {
    let pin = std::env::var(CHILD_PIN_ENV).expect("started by the kill -9 test");
    let desired = desired_for(nix::net::if_::if_nametoindex("eth0").unwrap());
    Ebpf::new(PathBuf::from(pin)).sync(&desired).unwrap();
    println!("{CHILD_READY}");
    std::thread::sleep(Duration::from_secs(30));
}

/// Starts `agent_child_process` from a thread inside the node namespace (the child inherits the
/// thread's network and mount namespaces) and waits until its programs are attached.
fn start_child_agent(t: &Topology) -> std::process::Child {
    use std::io::BufRead;
    let mut child = t
        .node
        .enter(|| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--ignored",
                    "--exact",
                    "lifecycle::agent_child_process",
                    "--nocapture",
                ])
                .env(CHILD_PIN_ENV, &t.pin_dir)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains(CHILD_READY) {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the child agent did not get ready");
    child
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn maps_of_another_layout_version_are_unpinned() {
    with_private_bpffs(maps_of_another_layout_version_are_unpinned_body);
}

fn maps_of_another_layout_version_are_unpinned_body() {
    let t = topology();
    // What an agent of an older layout left: a directory of pinned maps (one suffices).
    let old = t.pin_dir.join("maps-v1");
    std::fs::create_dir_all(&old).unwrap();
    let older = masq_datapath::ebpf::load_unpinned().unwrap();
    older
        .map("masq_config")
        .unwrap()
        .pin(old.join("masq_config"))
        .unwrap();
    drop(older);
    let mut agent = t.agent();
    t.node.enter(|| agent.sync(&t.desired())).unwrap().unwrap();
    assert!(!old.exists(), "{} is still there", old.display());
    assert!(t.pin_dir.join(MAPS_SUBDIR).exists());
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn kill_9_under_traffic_breaks_no_connection() {
    with_private_bpffs(kill_9_under_traffic_breaks_no_connection_body);
}

fn kill_9_under_traffic_breaks_no_connection_body() {
    let t = topology();
    let mut child = start_child_agent(&t);
    const ROUNDS: u32 = 300;

    let (echoed, peer) = std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel();
        let server = s.spawn(|| tcp_server(&t.external, INTERNET, tx));
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let client = s.spawn(|| {
            t.pod
                .enter(|| {
                    let mut conn = TcpStream::connect_timeout(
                        &(INTERNET, 8080).into(),
                        Duration::from_secs(3),
                    )
                    .unwrap();
                    conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                    let mut echoed = 0;
                    for round in 0..ROUNDS {
                        let msg = round.to_be_bytes();
                        let mut back = [0u8; 4];
                        if conn.write_all(&msg).is_err() || conn.read_exact(&mut back).is_err() {
                            break;
                        }
                        if back == msg {
                            echoed += 1;
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    echoed
                })
                .unwrap()
        });
        std::thread::sleep(Duration::from_millis(300));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        // The replacement agent adopts what the killed one pinned.
        let mut next = t.agent();
        let report = t.node.enter(|| next.sync(&t.desired())).unwrap().unwrap();
        assert!(
            !report.changed,
            "adoption after kill -9 rewrote state: {report:?}"
        );
        (client.join().unwrap(), server.join().unwrap())
    });
    assert_eq!(echoed, ROUNDS, "messages lost across kill -9 and adoption");
    assert_eq!(peer.unwrap().ip(), IpAddr::V4(NODE));
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn drift_in_maps_and_links_is_repaired_by_the_next_sync() {
    with_private_bpffs(drift_in_maps_and_links_is_repaired_by_the_next_sync_body);
}

fn drift_in_maps_and_links_is_repaired_by_the_next_sync_body() {
    let t = topology();
    let desired = t.desired();
    let mut agent = t.agent();
    t.node.enter(|| agent.sync(&desired)).unwrap().unwrap();
    let report = t.node.enter(|| agent.sync(&desired)).unwrap().unwrap();
    assert!(!report.changed && !report.drift_repaired, "{report:?}");

    // Someone empties the CIDR trie behind the agent's back.
    let mut maps = Maps::open_pinned(&t.pin_dir.join(MAPS_SUBDIR)).unwrap();
    let mut tampered = maps.read().unwrap();
    tampered.dst_policy.clear();
    maps.apply(&tampered).unwrap();
    assert!(!t.node.enter(|| agent.matches(&desired)).unwrap().unwrap());
    let report = t.node.enter(|| agent.sync(&desired)).unwrap().unwrap();
    assert!(report.changed && report.drift_repaired, "{report:?}");

    // Someone detaches the programs (and removes the link pins).
    attach::detach_all(&t.pin_dir).unwrap();
    assert!(!t.node.enter(|| agent.matches(&desired)).unwrap().unwrap());
    let report = t.node.enter(|| agent.sync(&desired)).unwrap().unwrap();
    assert!(report.changed && report.drift_repaired, "{report:?}");
    assert!(t.node.enter(|| agent.matches(&desired)).unwrap().unwrap());
    let (ok, peer) = tcp_peer_seen(&t, INTERNET);
    assert!(ok);
    assert_eq!(peer.unwrap().ip(), IpAddr::V4(NODE));
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn the_clsact_fallback_translates_restarts_in_place_and_cleans_up() {
    with_private_bpffs(the_clsact_fallback_translates_restarts_in_place_and_cleans_up_body);
}

fn the_clsact_fallback_translates_restarts_in_place_and_cleans_up_body() {
    let t = topology();
    let desired = t.desired();
    let clsact = || t.agent().with_attach_mode(AttachMode::Clsact);
    let mut first = clsact();
    let report = t.node.enter(|| first.sync(&desired)).unwrap().unwrap();
    assert!(report.changed);
    assert!(t.node.enter(|| first.matches(&desired)).unwrap().unwrap());
    let (ok, peer) = tcp_peer_seen(&t, INTERNET);
    assert!(ok);
    assert_eq!(peer.unwrap().ip(), IpAddr::V4(NODE));

    // The filters outlive the agent; a new one replaces their programs in place.
    drop(first);
    assert!(t
        .node
        .enter(|| Direction::BOTH
            .iter()
            .all(|d| attach::is_attached("eth0", *d)))
        .unwrap());
    let mut second = clsact();
    let report = t.node.enter(|| second.sync(&desired)).unwrap().unwrap();
    assert!(!report.changed, "{report:?}");
    let (ok, peer) = tcp_peer_seen(&t, INTERNET);
    assert!(ok);
    assert_eq!(peer.unwrap().ip(), IpAddr::V4(NODE));
    let filters = t
        .node
        .exec("tc", &["filter", "show", "dev", "eth0", "egress"])
        .unwrap();
    let ours = filters
        .lines()
        .filter(|l| l.contains("masq_egress"))
        .count();
    assert_eq!(ours, 1, "one filter, replaced in place: {filters}");

    t.node.enter(|| second.cleanup()).unwrap().unwrap();
    assert!(!t
        .node
        .enter(|| Direction::BOTH
            .iter()
            .any(|d| attach::is_attached("eth0", *d)))
        .unwrap());
    assert!(!t.pin_dir.exists());
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn program_swaps_under_a_flood_leave_no_packet_untranslated() {
    with_private_bpffs(program_swaps_under_a_flood_leave_no_packet_untranslated_body);
}

/// An upgrade replaces the programs in place (`BPF_LINK_UPDATE`): a pod floods the external
/// side while agents are replaced one after the other; the server must see every datagram from
/// the node address, none from the pod.
fn program_swaps_under_a_flood_leave_no_packet_untranslated_body() {
    use std::net::UdpSocket;
    let t = topology();
    let desired = t.desired();
    let mut agent = t.agent();
    t.node.enter(|| agent.sync(&desired)).unwrap().unwrap();
    // About 1.2 s of flood (a pause of 1 ms every 20 datagrams): room for two swaps or more,
    // each loading and verifying the programs anew (about 0.4 s here).
    const DATAGRAMS: u32 = 24000;
    let flooding = std::sync::atomic::AtomicBool::new(true);
    let ((from_node, from_elsewhere, overflowed), swaps) = std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel();
        let server = s.spawn(|| {
            t.external
                .enter(move || {
                    let sock = UdpSocket::bind((INTERNET, 5353)).unwrap();
                    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                    tx.send(()).unwrap();
                    let (mut node, mut other) = (0u32, 0u32);
                    let mut buf = [0u8; 16];
                    while let Ok((_, peer)) = sock.recv_from(&mut buf) {
                        if peer.ip() == IpAddr::V4(NODE) {
                            node += 1;
                        } else {
                            other += 1;
                        }
                    }
                    // A busy machine can overflow the receiver's socket buffer; the kernel
                    // counts that, and it says nothing about the datapath.
                    (node, other, udp_receive_buffer_errors())
                })
                .unwrap()
        });
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let flood = s.spawn(|| {
            t.pod
                .enter(|| {
                    let sock = UdpSocket::bind((POD, 40000)).unwrap();
                    for i in 0..DATAGRAMS {
                        sock.send_to(&i.to_be_bytes(), (INTERNET, 5353)).unwrap();
                        if i % 20 == 19 {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                })
                .unwrap();
            flooding.store(false, std::sync::atomic::Ordering::Relaxed);
        });
        let mut swaps = 0;
        while flooding.load(std::sync::atomic::Ordering::Relaxed) && swaps < 50 {
            let mut next = t.agent();
            let report = t.node.enter(|| next.sync(&desired)).unwrap().unwrap();
            assert!(!report.changed, "{report:?}");
            agent = next;
            swaps += 1;
        }
        flood.join().unwrap();
        (server.join().unwrap(), swaps)
    });
    eprintln!("{swaps} program swaps during a flood of {DATAGRAMS} datagrams");
    assert!(swaps >= 2, "only {swaps} swaps happened during the flood");
    assert_eq!(
        from_elsewhere, 0,
        "datagrams left untranslated during swaps"
    );
    assert_eq!(
        from_node + overflowed,
        DATAGRAMS,
        "datagrams lost ({overflowed} overflowed the receiver's buffer)"
    );
    drop(agent);
}

/// `RcvbufErrors` of the calling thread's network namespace (/proc/net/snmp, `Udp:` lines).
fn udp_receive_buffer_errors() -> u32 {
    let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next().unwrap(), udp.next().unwrap());
    let column = names
        .split_whitespace()
        .position(|n| n == "RcvbufErrors")
        .unwrap();
    values
        .split_whitespace()
        .nth(column)
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn an_interface_dropped_from_the_desired_state_loses_the_programs() {
    with_private_bpffs(an_interface_dropped_from_the_desired_state_loses_the_programs_body);
}

fn an_interface_dropped_from_the_desired_state_loses_the_programs_body() {
    let t = topology();
    // A veth pair inside the node.
    t.node
        .ip(&[
            "link", "add", "extra0", "type", "veth", "peer", "name", "extra1",
        ])
        .unwrap();
    t.node.ip(&["link", "set", "extra0", "up"]).unwrap();
    let mut desired = t.desired();
    let mut extra = desired.node.interfaces[0].clone();
    extra.name = "extra0".into();
    extra.index = t
        .node
        .enter(|| nix::net::if_::if_nametoindex("extra0").unwrap())
        .unwrap();
    desired.node.interfaces.push(extra);
    let attached_on = |iface: &'static str| {
        t.node
            .enter(move || {
                Direction::BOTH
                    .iter()
                    .all(|d| attach::is_attached(iface, *d))
            })
            .unwrap()
    };
    for mode in [AttachMode::Auto, AttachMode::Clsact] {
        let mut agent = t.agent().with_attach_mode(mode);
        t.node.enter(|| agent.sync(&desired)).unwrap().unwrap();
        assert!(attached_on("eth0") && attached_on("extra0"), "{mode:?}");
        let mut fewer = desired.clone();
        fewer.node.interfaces.pop();
        let report = t.node.enter(|| agent.sync(&fewer)).unwrap().unwrap();
        assert!(report.changed, "{mode:?}");
        assert!(attached_on("eth0"), "{mode:?}");
        assert!(
            !t.node
                .enter(|| Direction::BOTH
                    .iter()
                    .any(|d| attach::is_attached("extra0", *d)))
                .unwrap(),
            "{mode:?}: extra0 still has masq's programs"
        );
        t.node.enter(|| agent.cleanup()).unwrap().unwrap();
    }
}
