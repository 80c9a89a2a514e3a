//! The eBPF datapath attached for real, in a pod / node / external topology of network
//! namespaces: ping, TCP and UDP from the pod to a TEST-NET host leave with the node's address
//! and the replies reach the pod; a kept destination sees the pod; an agent restart adopts the
//! pinned maps and links without breaking a live connection; cleanup removes everything.
//!
//! ```text
//! pod (10.244.1.5) ── node (vpod 10.244.1.1 | eth0 172.18.0.2) ── external (172.18.0.1,
//!                                                                  203.0.113.10, 10.9.9.9)
//! ```
//! The external side has no route to 10.244/16: a reply reaches the pod only through reverse
//! SNAT, and the servers report the peer address they saw. Traffic to a kept destination cannot
//! be answered, so it is checked one way (UDP) by the address the server sees.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use masq_config::Config;
use masq_datapath::ebpf::{attach, Direction, Ebpf, Maps, MAPS_SUBDIR};
use masq_datapath::{Datapath, Desired, Interface, NodeSettings};
use masq_testbed::{veth, Netns};

const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 5);
const NODE: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);
const INTERNET: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const KEPT: Ipv4Addr = Ipv4Addr::new(10, 9, 9, 9);

struct Topology {
    pod: Netns,
    node: Netns,
    external: Netns,
    pin_dir: PathBuf,
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Links pinned on bpffs are not per-namespace: always remove them.
        let _ = self
            .node
            .enter(|| Ebpf::new(self.pin_dir.clone()).cleanup());
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

/// Runs `body` on a thread with its own mount namespace and a fresh bpffs on /sys/fs/bpf, so
/// pins never touch the host's bpffs; threads it spawns (`Netns::enter`) inherit that namespace,
/// and the bpffs, with every pin and pinned link in it, goes away when the thread ends.
fn with_private_bpffs<R: Send>(body: impl FnOnce() -> R + Send) -> R {
    use nix::mount::{mount, MsFlags};
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .unwrap();
            mount(
                Some("bpf"),
                "/sys/fs/bpf",
                Some("bpf"),
                MsFlags::empty(),
                None::<&str>,
            )
            .unwrap();
            body()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn unique_pin_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    PathBuf::from(format!(
        "/sys/fs/bpf/masq-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

fn topology() -> Option<Topology> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: needs root for namespaces and eBPF");
        return None;
    }
    masq_testbed::netns::sweep_stale();
    let pod = Netns::new("pod").unwrap();
    let node = Netns::new("node").unwrap();
    let external = Netns::new("ext").unwrap();
    veth(&pod, "eth0", &node, "vpod").unwrap();
    veth(&node, "eth0", &external, "eth0").unwrap();
    pod.ip(&["addr", "add", "10.244.1.5/24", "dev", "eth0"])
        .unwrap();
    pod.ip(&["route", "add", "default", "via", "10.244.1.1"])
        .unwrap();
    node.ip(&["addr", "add", "10.244.1.1/24", "dev", "vpod"])
        .unwrap();
    node.ip(&["addr", "add", "172.18.0.2/24", "dev", "eth0"])
        .unwrap();
    node.ip(&["route", "add", "default", "via", "172.18.0.1"])
        .unwrap();
    node.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"])
        .unwrap();
    external
        .ip(&["addr", "add", "172.18.0.1/24", "dev", "eth0"])
        .unwrap();
    external
        .ip(&["addr", "add", "203.0.113.10/32", "dev", "lo"])
        .unwrap();
    external
        .ip(&["addr", "add", "10.9.9.9/32", "dev", "lo"])
        .unwrap();
    Some(Topology {
        pod,
        node,
        external,
        pin_dir: unique_pin_dir(),
    })
}

impl Topology {
    fn desired(&self) -> Desired {
        let index = self
            .node
            .enter(|| nix::net::if_::if_nametoindex("eth0").unwrap())
            .unwrap();
        desired_for(index)
    }

    fn agent(&self) -> Ebpf {
        Ebpf::new(self.pin_dir.clone())
    }
}

/// The desired state of the node, whose eth0 has `index`.
fn desired_for(index: u32) -> Desired {
    // TEST-NET is in the default set: list the kept ranges explicitly.
    let config = Config {
        non_masquerade_cidrs: vec!["10.0.0.0/8".parse().unwrap()],
        masq_link_local: false,
        masq_link_local_ipv6: false,
        resync_interval: Duration::from_secs(60),
        cidr_limit: 16384,
        non_masquerade_src_cidrs: Vec::new(),
    };
    Desired {
        config,
        node: NodeSettings {
            interfaces: vec![Interface {
                name: "eth0".into(),
                index,
                addrs: vec![IpAddr::V4(NODE)],
            }],
            ..NodeSettings::default()
        },
    }
}

/// Runs a TCP echo server for one connection in `ns`; returns the peer address it saw.
fn tcp_server(ns: &Netns, addr: Ipv4Addr, ready: mpsc::Sender<()>) -> Option<SocketAddr> {
    ns.enter(move || {
        let listener = TcpListener::bind((addr, 8080)).unwrap();
        listener.set_nonblocking(true).unwrap();
        ready.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok((mut conn, peer)) = listener.accept() {
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut buf = [0u8; 64];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                return Some(peer);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    })
    .unwrap()
}

/// Connects from the pod to `addr:8080`, sends `rounds` messages and checks each echo.
fn tcp_client(t: &Topology, addr: Ipv4Addr) -> bool {
    t.pod
        .enter(move || {
            let Ok(mut conn) =
                TcpStream::connect_timeout(&(addr, 8080).into(), Duration::from_secs(3))
            else {
                return false;
            };
            conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            for round in 0..3u8 {
                let msg = [b'm', round];
                let mut back = [0u8; 2];
                if conn.write_all(&msg).is_err() || conn.read_exact(&mut back).is_err() {
                    return false;
                }
                if back != msg {
                    return false;
                }
            }
            true
        })
        .unwrap()
}

fn tcp_peer_seen(t: &Topology, addr: Ipv4Addr) -> (bool, Option<SocketAddr>) {
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel();
        let server = s.spawn(|| tcp_server(&t.external, addr, tx));
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let ok = tcp_client(t, addr);
        (ok, server.join().unwrap())
    })
}

/// Sends one datagram from the pod to `addr:5353`, where a server echoes it back; returns the
/// echo the pod got (if any) and the peer address the server saw.
fn udp_peer_seen(t: &Topology, addr: Ipv4Addr) -> (Option<Vec<u8>>, Option<SocketAddr>) {
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel();
        let server = s.spawn(|| {
            t.external
                .enter(move || {
                    let sock = UdpSocket::bind((addr, 5353)).unwrap();
                    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    tx.send(()).unwrap();
                    let mut buf = [0u8; 64];
                    let (n, peer) = sock.recv_from(&mut buf).ok()?;
                    let _ = sock.send_to(&buf[..n], peer);
                    Some(peer)
                })
                .unwrap()
        });
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let echoed = t
            .pod
            .enter(|| {
                let sock = UdpSocket::bind((POD, 0)).unwrap();
                sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                sock.send_to(b"udp ping", (addr, 5353)).unwrap();
                let mut buf = [0u8; 64];
                sock.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
            })
            .unwrap();
        (echoed, server.join().unwrap())
    })
}

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
fn a_restarted_agent_adopts_links_and_maps_without_breaking_a_connection() {
    with_private_bpffs(a_restarted_agent_adopts_links_and_maps_without_breaking_a_connection_body);
}

fn a_restarted_agent_adopts_links_and_maps_without_breaking_a_connection_body() {
    let Some(t) = topology() else { return };
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
                .args(["--ignored", "--exact", "agent_child_process", "--nocapture"])
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
fn kill_9_under_traffic_breaks_no_connection() {
    with_private_bpffs(kill_9_under_traffic_breaks_no_connection_body);
}

fn kill_9_under_traffic_breaks_no_connection_body() {
    let Some(t) = topology() else { return };
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
fn drift_in_maps_and_links_is_repaired_by_the_next_sync() {
    with_private_bpffs(drift_in_maps_and_links_is_repaired_by_the_next_sync_body);
}

fn drift_in_maps_and_links_is_repaired_by_the_next_sync_body() {
    let Some(t) = topology() else { return };
    let desired = t.desired();
    let mut agent = t.agent();
    t.node.enter(|| agent.sync(&desired)).unwrap().unwrap();
    let report = t.node.enter(|| agent.sync(&desired)).unwrap().unwrap();
    assert!(!report.changed && !report.drift_repaired, "{report:?}");

    // Someone empties the CIDR trie behind the agent's back.
    let mut maps = Maps::open_pinned(&t.pin_dir.join(MAPS_SUBDIR)).unwrap();
    let mut tampered = maps.read().unwrap();
    tampered.nonmasq_dst.clear();
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
