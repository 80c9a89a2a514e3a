//! Kernel tests of the iptables datapath, each inside its own network namespace, on both backends
//! (iptables-nft, iptables-legacy). What the kernel holds is read
//! back with `iptables-save` and compared with `render`'s rules line by line.

mod ipt_support;

use std::time::{Duration, Instant};

use ipt_support::{config, desired, nets, RFC1918};
use masq_datapath::ipt::{Backend, Family, IptFamily, Iptables, LockRetry};
use masq_datapath::{Datapath, Desired, PortRange};
use masq_testbed::Netns;

const CHAIN: &str = "IP-MASQ-AGENT";
const JUMP: &str = "-A POSTROUTING -m comment --comment \"ip-masq-agent: ensure nat POSTROUTING \
                    directs all non-LOCAL destination traffic to our custom IP-MASQ-AGENT chain\" \
                    -m addrtype ! --dst-type LOCAL -j IP-MASQ-AGENT";

/// Both backends (Debian's iptables package ships both); a test fails where one is missing.
fn backends() -> Vec<Backend> {
    masq_testbed::require(&["iptables-nft-restore", "iptables-legacy-restore"]);
    vec![Backend::Nft, Backend::Legacy]
}

fn program(backend: Backend, family: Family, tool: &str) -> String {
    format!("{}-{backend}{tool}", family.command())
}

/// The nat table as `iptables-save` prints it inside `ns`.
fn saved(ns: &Netns, backend: Backend, family: Family) -> String {
    ns.exec(&program(backend, family, "-save"), &[]).unwrap()
}

/// The `-A CHAIN` lines of `chain`, `None` when it is not declared.
fn chain_lines(save: &str, chain: &str) -> Option<Vec<String>> {
    let declared = save.lines().any(|l| l.starts_with(&format!(":{chain} ")));
    declared.then(|| {
        save.lines()
            .filter(|l| l.starts_with(&format!("-A {chain} ")))
            .map(str::to_string)
            .collect()
    })
}

fn jump_count(save: &str, jump: &str) -> usize {
    save.lines().filter(|l| *l == jump).count()
}

/// POSTROUTING rules jumping to `chain`, whatever their comment.
fn jumps_to(save: &str, chain: &str) -> usize {
    save.lines()
        .filter(|l| l.starts_with("-A POSTROUTING ") && l.ends_with(&format!(" -j {chain}")))
        .count()
}

/// Runs `f` with a fresh datapath inside a fresh namespace, once per backend.
fn each_backend(role: &str, f: impl Fn(&Netns, Backend)) {
    for backend in backends() {
        let ns = Netns::new(&format!("{role}-{backend}")).unwrap();
        f(&ns, backend);
    }
}

fn sync(ns: &Netns, datapath: &mut Iptables, d: &Desired) -> masq_datapath::SyncReport {
    ns.enter(|| datapath.sync(d)).unwrap().unwrap()
}

fn assert_installed(ns: &Netns, backend: Backend, datapath: &Iptables, d: &Desired) {
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

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn installs_what_render_prints_adopts_and_follows_changes() {
    each_backend("install", |ns, backend| {
        let first = desired(masq_config::Config::default());
        let mut datapath = Iptables::new(backend);
        let report = sync(ns, &mut datapath, &first);
        assert!(report.changed && !report.drift_repaired, "{report:?}");
        // The exemptions, link-local, and per protocol (tcp, udp, sctp) one rule for each of
        // the two default port ranges, then the catch-all.
        assert_eq!(
            report.installed_entries,
            masq_config::RESERVED_CIDRS.len() + 3 + 6
        );
        assert_installed(ns, backend, &datapath, &first);
        assert_eq!(jump_count(&saved(ns, backend, Family::V4), JUMP), 1);

        let again = sync(ns, &mut datapath, &first);
        assert!(!again.changed && !again.drift_repaired, "{again:?}");

        // A restarted agent adopts what the previous run wrote: nothing to write.
        let mut restarted = Iptables::new(backend);
        let adopted = sync(ns, &mut restarted, &first);
        assert!(!adopted.changed && !adopted.drift_repaired, "{adopted:?}");

        let mut second = config(&RFC1918);
        second.masq_link_local = true;
        let second = desired(second);
        assert!(!ns.enter(|| restarted.matches(&second)).unwrap().unwrap());
        let changed = sync(ns, &mut restarted, &second);
        assert!(changed.changed && !changed.drift_repaired, "{changed:?}");
        assert_installed(ns, backend, &restarted, &second);
    });
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn drift_is_detected_and_repaired() {
    each_backend("drift", |ns, backend| {
        let d = desired(config(&RFC1918));
        let mut datapath = Iptables::new(backend);
        sync(ns, &mut datapath, &d);
        let iptables = program(backend, Family::V4, "");
        let intact = |datapath: &Iptables| ns.enter(|| datapath.intact()).unwrap().unwrap();
        assert!(intact(&datapath));

        // The chain flushed: left to the resync's full comparison (intact() looks at the jump).
        ns.exec(&iptables, &["-t", "nat", "-F", CHAIN]).unwrap();
        assert!(!ns.enter(|| datapath.matches(&d)).unwrap().unwrap());
        let report = sync(ns, &mut datapath, &d);
        assert!(report.changed && report.drift_repaired, "{report:?}");
        assert_installed(ns, backend, &datapath, &d);

        // The jump deleted, as a flush of the nat table does: intact() sees it.
        ns.exec(&iptables, &["-t", "nat", "-D", "POSTROUTING", "1"])
            .unwrap();
        assert!(
            !intact(&datapath),
            "{backend:?}: the missing jump went unseen"
        );
        assert!(!ns.enter(|| datapath.matches(&d)).unwrap().unwrap());
        let report = sync(ns, &mut datapath, &d);
        assert!(report.drift_repaired, "{report:?}");
        assert_installed(ns, backend, &datapath, &d);
        assert!(intact(&datapath));

        // A second copy of the jump (say, two agents once raced): back to exactly one.
        let copy = format!(
            "*nat\n{}\nCOMMIT\n",
            JUMP.replacen("-A POSTROUTING", "-I POSTROUTING 1", 1)
        );
        restore(ns, backend, Family::V4, &copy);
        assert_eq!(jump_count(&saved(ns, backend, Family::V4), JUMP), 2);
        let report = sync(ns, &mut datapath, &d);
        assert!(report.drift_repaired, "{report:?}");
        assert_installed(ns, backend, &datapath, &d);
    });
}

fn restore(ns: &Netns, backend: Backend, family: Family, payload: &str) {
    use std::io::Write;
    let mut child = ns
        .command(&program(backend, family, "-restore"))
        .arg("--noflush")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(payload.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "restore failed: {payload}");
}

/// Exactly what kubernetes-sigs/ip-masq-agent (v2.10+, default flags) does on a node: its own
/// argument order, the jump ensured with `-C` then `-A`, then the chain restored. Its jump comment
/// carries literal quote characters (`"\"ip-masq-agent: …\""`); some older releases had none.
fn install_like_upstream(ns: &Netns, backend: Backend, chain: &str, quoted_jump: bool) {
    let iptables = program(backend, Family::V4, "");
    ns.exec(&iptables, &["-t", "nat", "-N", chain]).unwrap();
    let mut comment = format!(
        "ip-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic to our \
         custom {chain} chain"
    );
    if quoted_jump {
        comment = format!("\"{comment}\"");
    }
    ns.exec(
        &iptables,
        &[
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-m",
            "comment",
            "--comment",
            &comment,
            "-m",
            "addrtype",
            "!",
            "--dst-type",
            "LOCAL",
            "-j",
            chain,
        ],
    )
    .unwrap();
    let non_masq =
        "-m comment --comment \"ip-masq-agent: local traffic is not subject to MASQUERADE\"";
    let mut payload = format!("*nat\n:{chain} - [0:0]\n");
    for cidr in ["169.254.0.0/16"].iter().chain(RFC1918.iter()) {
        payload.push_str(&format!("-A {chain} {non_masq} -d {cidr} -j RETURN\n"));
    }
    // Upstream run with `--to-ports 1024-29999,32768-65535`, the ports masq hands out by
    // default (every unprivileged one but the NodePort range): its per-protocol split.
    let masq = "-m comment --comment \"ip-masq-agent: outbound traffic is subject to MASQUERADE \
                (must be last in chain)\"";
    for protocol in ["tcp", "udp", "sctp"] {
        payload.push_str(&format!(
            "-A {chain} -p {protocol} {masq} -m statistic --mode random --probability \
             0.46929256292 -j MASQUERADE --to-ports 1024-29999 --random-fully\n\
             -A {chain} -p {protocol} {masq} -j MASQUERADE --to-ports 32768-65535 --random-fully\n"
        ));
    }
    payload.push_str(&format!(
        "-A {chain} {masq} -j MASQUERADE --random-fully\nCOMMIT\n"
    ));
    restore(ns, backend, Family::V4, &payload);
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn takes_over_a_chain_written_by_upstream() {
    for quoted_jump in [true, false] {
        each_backend("migrate", |ns, backend| {
            migrate_from_upstream(ns, backend, quoted_jump)
        });
    }
}

fn migrate_from_upstream(ns: &Netns, backend: Backend, quoted_jump: bool) {
    install_like_upstream(ns, backend, CHAIN, quoted_jump);
    let upstream_jump = saved(ns, backend, Family::V4)
        .lines()
        .find(|l| l.starts_with("-A POSTROUTING "))
        .unwrap()
        .to_string();

    // Same config as upstream's default (and its port list): identical rules, adopted without
    // a write.
    let same = desired(config(&RFC1918));
    let mut datapath = Iptables::new(backend);
    assert!(ns.enter(|| datapath.matches(&same)).unwrap().unwrap());
    let report = sync(ns, &mut datapath, &same);
    assert!(!report.changed, "{report:?}");

    // masq's own default: the chain is replaced in place, the jump stays single.
    let reserved = desired(masq_config::Config::default());
    let report = sync(ns, &mut datapath, &reserved);
    assert!(report.changed && !report.drift_repaired, "{report:?}");
    assert_installed(ns, backend, &datapath, &reserved);
    let save = saved(ns, backend, Family::V4);
    assert_eq!(
        save.lines()
            .filter(|l| l.contains("-j MASQUERADE") && !l.contains("--to-ports"))
            .count(),
        1
    );
    // Upstream's own jump was kept as it was, so switching back to upstream adds nothing.
    assert_eq!(jump_count(&save, &upstream_jump), 1, "{save}");

    // masq's jump next to upstream's (say, an older masq ran): one of them goes.
    if quoted_jump {
        restore(ns, backend, Family::V4, &format!("*nat\n{JUMP}\nCOMMIT\n"));
        assert_eq!(jumps_to(&saved(ns, backend, Family::V4), CHAIN), 2);
        let report = sync(ns, &mut datapath, &reserved);
        assert!(report.drift_repaired, "{report:?}");
        assert_installed(ns, backend, &datapath, &reserved);
        assert_eq!(
            jump_count(&saved(ns, backend, Family::V4), &upstream_jump),
            1
        );
    }
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn reports_and_keeps_a_chain_left_under_another_name() {
    each_backend("leftover", |ns, backend| {
        install_like_upstream(ns, backend, "IP-MASQ", true);
        // What kube-up's node scripts wrote before ip-masq-agent existed, no longer referenced.
        let iptables = program(backend, Family::V4, "");
        ns.exec(&iptables, &["-t", "nat", "-N", "OLD-MASQ"])
            .unwrap();
        let kube_up_rule = [
            "-t",
            "nat",
            "-A",
            "OLD-MASQ",
            "-d",
            "10.0.0.0/8",
            "-m",
            "comment",
            "--comment",
            "ip-masq: local traffic is not subject to MASQUERADE",
            "-j",
            "RETURN",
        ];
        ns.exec(&iptables, &kube_up_rule).unwrap();
        let d = desired(config(&RFC1918));
        let mut datapath = Iptables::new(backend);
        sync(ns, &mut datapath, &d);
        let leftovers = ns.enter(|| datapath.leftovers(CHAIN)).unwrap().unwrap();
        let mut here: Vec<_> = leftovers.iter().filter(|l| l.backend == backend).collect();
        here.sort_by(|a, b| a.chain.cmp(&b.chain));
        assert_eq!(here.len(), 2, "{leftovers:?}");
        assert_eq!(here[0].chain, "IP-MASQ");
        assert_eq!(here[0].family, "iptables");
        // Link-local, the 3 RFC 1918 ranges, 3 protocols × 2 port ranges, the catch-all.
        assert_eq!(here[0].rules, 11);
        assert!(here[0].referenced);
        assert_eq!(here[1].chain, "OLD-MASQ");
        assert!(!here[1].referenced);

        ns.enter(|| datapath.cleanup()).unwrap().unwrap();
        let save = saved(ns, backend, Family::V4);
        assert_eq!(chain_lines(&save, CHAIN), None, "{save}");
        assert_eq!(chain_lines(&save, "IP-MASQ").map(|r| r.len()), Some(11));
    });
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn ipv6_rules_follow_the_flag_and_cleanup_removes_everything() {
    each_backend("ipv6", |ns, backend| {
        let mut cfg = config(&["10.0.0.0/8", "fd00::/8"]);
        cfg.non_masquerade_src_cidrs = nets(&["fd10::/64"]);
        let mut d = desired(cfg);
        d.node.enable_ipv6 = true;
        let mut datapath = Iptables::new(backend);
        sync(ns, &mut datapath, &d);
        assert_installed(ns, backend, &datapath, &d);
        assert!(saved(ns, backend, Family::V6).contains("-d fe80::/10"));

        d.node.enable_ipv6 = false;
        d.config.non_masquerade_cidrs = nets(&["10.0.0.0/8"]);
        d.config.non_masquerade_src_cidrs.clear();
        let report = sync(ns, &mut datapath, &d);
        assert!(report.changed, "{report:?}");
        assert_installed(ns, backend, &datapath, &d);

        d.node.enable_ipv6 = true;
        sync(ns, &mut datapath, &d);
        ns.enter(|| datapath.cleanup()).unwrap().unwrap();
        for family in Family::ALL {
            let save = saved(ns, backend, family);
            assert!(!save.contains(CHAIN), "{backend} {family:?}: {save}");
        }
        // Absent is success.
        ns.enter(|| datapath.cleanup()).unwrap().unwrap();
    });
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn every_rule_kind_reads_back_as_rendered() {
    each_backend("kinds", |ns, backend| {
        let mut cfg = config(&["10.0.0.0/8", "fd00::/8"]);
        cfg.masq_link_local = true;
        cfg.non_masquerade_src_cidrs = nets(&["10.10.0.0/16"]);
        cfg.masquerade_cidrs = nets(&["10.5.0.0/16", "fd00:5::/32"]);
        cfg.non_masquerade_cidrs
            .push("10.5.3.0/24".parse().unwrap());
        let mut d = desired(cfg);
        d.node.enable_ipv6 = true;
        d.node.iptables_chain = "MASQ-TEST".to_string();
        d.node.pod_cidrs = nets(&["10.244.0.0/16", "fd20::/64"]);
        d.node.snat_ips = vec!["192.0.2.10".parse().unwrap()];
        d.node.native_routing_cidr = Some("10.96.0.0/12".parse().unwrap());
        let ranges = vec![
            PortRange {
                first: 1024,
                last: 29999,
            },
            PortRange {
                first: 30500,
                last: 30500,
            },
            PortRange {
                first: 32768,
                last: 65535,
            },
        ];
        d.node.port_ranges = ranges;
        let mut datapath = Iptables::new(backend);
        sync(ns, &mut datapath, &d);
        assert_installed(ns, backend, &datapath, &d);
        let save = saved(ns, backend, Family::V4);
        assert!(save.contains("--probability"), "{save}");
        assert!(save.contains("--to-source 192.0.2.10:1024-29999"), "{save}");
        // A one-port range reads back as the bare port.
        assert!(save.contains("--to-source 192.0.2.10:30500 "), "{save}");
        assert!(
            save.contains("-s 10.244.0.0/16 -d 10.5.0.0/16 -p tcp"),
            "{save}"
        );
    });
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn refuses_a_chain_name_iptables_cannot_hold() {
    masq_testbed::require(&[]);
    let ns = Netns::new("badchain").unwrap();
    let mut d = desired(config(&RFC1918));
    d.node.iptables_chain = "A-CHAIN-NAME-LONGER-THAN-28-BYTES".to_string();
    let mut datapath = Iptables::new(backends()[0]);
    let err = ns.enter(|| datapath.sync(&d)).unwrap().unwrap_err();
    assert!(err.to_string().contains("A-CHAIN-NAME-LONGER"), "{err}");
    assert!(err.to_string().contains("28"), "{err}");
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn detects_the_backend_that_holds_the_rules() {
    each_backend("detect", |ns, backend| {
        let iptables = program(backend, Family::V4, "");
        ns.exec(&iptables, &["-t", "nat", "-N", "SOMEONE-ELSE"])
            .unwrap();
        ns.exec(
            &iptables,
            &["-t", "nat", "-A", "SOMEONE-ELSE", "-j", "RETURN"],
        )
        .unwrap();
        let detected = ns.enter(Iptables::detect).unwrap().unwrap();
        assert_eq!(detected.backend(), backend);
    });
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn waits_out_the_xtables_lock_then_reports_it() {
    // iptables-legacy holds the xtables lock.
    backends();
    let ns = Netns::new("lock").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lock_path = dir.path().join("xtables.lock");
    let d = desired(config(&RFC1918));
    let hold = |duration: Duration| {
        let file = std::fs::File::create(&lock_path).unwrap();
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).unwrap();
        std::thread::spawn(move || {
            std::thread::sleep(duration);
            drop(lock);
        })
    };

    // Held for about two seconds: a run blocks one second, then pauses, and gets through.
    let holder = hold(Duration::from_millis(2200));
    let patient = LockRetry {
        attempts: 6,
        wait_secs: 1,
        first_pause: Duration::from_millis(200),
    };
    let mut datapath = Iptables::new(Backend::Legacy)
        .with_lock_file(lock_path.clone())
        .with_lock_retry(patient);
    let started = Instant::now();
    let report = sync(&ns, &mut datapath, &d);
    assert!(report.changed);
    assert!(started.elapsed() >= Duration::from_secs(2), "lock ignored");
    holder.join().unwrap();

    // Held longer than the retries last: an error naming the lock, and no exit.
    let holder = hold(Duration::from_secs(4));
    let impatient = LockRetry {
        attempts: 2,
        wait_secs: 1,
        first_pause: Duration::from_millis(100),
    };
    let mut datapath = Iptables::new(Backend::Legacy)
        .with_lock_file(lock_path.clone())
        .with_lock_retry(impatient);
    let mut other = d.clone();
    other.config.masq_link_local = true;
    let err = ns.enter(|| datapath.sync(&other)).unwrap().unwrap_err();
    assert!(err.to_string().contains("xtables lock"), "{err}");
    assert!(err.to_string().contains("2 attempts"), "{err}");
    holder.join().unwrap();
}

/// pod (10.244.1.2) — node (10.244.1.1 | 198.51.100.1) — external (198.51.100.2), the datapath
/// synced in the node namespace. Returns the address the external side saw for a TCP connection
/// from the pod.
fn peer_seen_from_pod(backend: Backend, d: &Desired) -> std::net::SocketAddr {
    use std::net::{SocketAddr, TcpListener, TcpStream};

    let pod = Netns::new(&format!("pod-{backend}")).unwrap();
    let node = Netns::new(&format!("node-{backend}")).unwrap();
    let ext = Netns::new(&format!("ext-{backend}")).unwrap();
    masq_testbed::veth(&pod, "eth0", &node, "pod0").unwrap();
    masq_testbed::veth(&node, "eth1", &ext, "eth0").unwrap();
    pod.ip(&["addr", "add", "10.244.1.2/24", "dev", "eth0"])
        .unwrap();
    pod.ip(&["route", "add", "default", "via", "10.244.1.1"])
        .unwrap();
    node.ip(&["addr", "add", "10.244.1.1/24", "dev", "pod0"])
        .unwrap();
    node.ip(&["addr", "add", "198.51.100.1/24", "dev", "eth1"])
        .unwrap();
    node.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"])
        .unwrap();
    ext.ip(&["addr", "add", "198.51.100.2/24", "dev", "eth0"])
        .unwrap();
    // The way back to the pod exists, so only the datapath decides what the far side sees.
    ext.ip(&["route", "add", "10.244.0.0/16", "via", "198.51.100.1"])
        .unwrap();

    let mut datapath = Iptables::new(backend);
    sync(&node, &mut datapath, d);

    let listener = ext
        .enter(|| TcpListener::bind("198.51.100.2:8080"))
        .unwrap()
        .unwrap();
    let target: SocketAddr = "198.51.100.2:8080".parse().unwrap();
    let stream = pod
        .enter(|| TcpStream::connect_timeout(&target, Duration::from_secs(3)))
        .unwrap()
        .expect("pod reaches the external host");
    // The handshake is done, so the connection already waits in the backlog.
    let (_accepted, peer) = listener.accept().unwrap();
    drop(stream);
    peer
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn pod_traffic_leaves_with_the_node_address_unless_exempt() {
    for backend in backends() {
        // TEST-NET-2 is in the default exemptions; list the CIDRs so it is masqueraded.
        let mut masqueraded = desired(config(&["10.0.0.0/8"]));
        masqueraded.node.port_ranges = vec![PortRange {
            first: 40000,
            last: 40099,
        }];
        let peer = peer_seen_from_pod(backend, &masqueraded);
        assert_eq!(peer.ip().to_string(), "198.51.100.1", "{backend}");
        assert!((40000..=40099).contains(&peer.port()), "{backend}: {peer}");

        let exempt = desired(config(&["10.0.0.0/8", "198.51.100.0/24"]));
        let peer = peer_seen_from_pod(backend, &exempt);
        assert_eq!(peer.ip().to_string(), "10.244.1.2", "{backend}");

        // With --pod-cidr, a source outside the pod CIDRs is not a pod and keeps its address.
        let mut other_pods = desired(config(&["10.0.0.0/8"]));
        other_pods.node.pod_cidrs = nets(&["10.245.0.0/16"]);
        let peer = peer_seen_from_pod(backend, &other_pods);
        assert_eq!(peer.ip().to_string(), "10.244.1.2", "{backend}");
        other_pods.node.pod_cidrs = nets(&["10.244.0.0/16"]);
        let peer = peer_seen_from_pod(backend, &other_pods);
        assert_eq!(peer.ip().to_string(), "198.51.100.1", "{backend}");
    }
}
