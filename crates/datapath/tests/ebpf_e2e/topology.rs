//! The pod / node / external namespaces, the private bpffs and the desired state.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use masq_config::Config;
use masq_datapath::ebpf::Ebpf;
use masq_datapath::{Datapath, Desired, Interface, NodeSettings};
use masq_testbed::{veth, Netns};

pub const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 5);
pub const POD2: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 6);
pub const NODE: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);
pub const INTERNET: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const KEPT: Ipv4Addr = Ipv4Addr::new(10, 9, 9, 9);

pub struct Topology {
    pub pod: Netns,
    pub pod2: Netns,
    pub node: Netns,
    pub external: Netns,
    pub pin_dir: PathBuf,
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

thread_local! {
    /// The private bpffs of the thread running a test body (see [`with_private_bpffs`]).
    static BPFFS: std::cell::RefCell<Option<PathBuf>> = const { std::cell::RefCell::new(None) };
}

/// Runs `body` on a thread with its own mount namespace and a fresh bpffs
/// ([`masq_testbed::PrivateBpffs`]), so pins never touch the host's bpffs; threads it spawns
/// (`Netns::enter`) inherit that namespace, and the bpffs, with every pin and pinned link in it,
/// goes away when the thread ends.
pub fn with_private_bpffs<R: Send>(body: impl FnOnce() -> R + Send) -> R {
    masq_testbed::require(&[]);
    std::thread::scope(|s| {
        s.spawn(|| {
            let bpffs = masq_testbed::PrivateBpffs::mount().unwrap();
            BPFFS.with(|path| *path.borrow_mut() = Some(bpffs.path().to_path_buf()));
            body()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The mount point of this test's private bpffs.
pub fn bpffs() -> PathBuf {
    BPFFS.with(|path| path.borrow().clone().expect("inside with_private_bpffs"))
}

pub fn unique_pin_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    bpffs().join(format!(
        "masq-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

pub fn topology() -> Topology {
    masq_testbed::require(&[]);
    masq_testbed::netns::sweep_stale();
    let pod = Netns::new("pod").unwrap();
    let pod2 = Netns::new("pod2").unwrap();
    let node = Netns::new("node").unwrap();
    let external = Netns::new("ext").unwrap();
    veth(&pod, "eth0", &node, "vpod").unwrap();
    veth(&node, "eth0", &external, "eth0").unwrap();
    veth(&pod2, "eth0", &node, "vpod2").unwrap();
    pod2.ip(&["addr", "add", "10.244.2.6/24", "dev", "eth0"])
        .unwrap();
    pod2.ip(&["route", "add", "default", "via", "10.244.2.1"])
        .unwrap();
    node.ip(&["addr", "add", "10.244.2.1/24", "dev", "vpod2"])
        .unwrap();
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
    // Pods send with checksum offload (CHECKSUM_PARTIAL: the transport field holds only the
    // pseudo-header sum, which masq's programs update themselves), and a receiver across veth
    // trusts such a packet unchecked. So the node computes checksums in software when sending:
    // the kernel completes them after masq's rewrite, and every server and pod here checks them.
    for dev in ["eth0", "vpod", "vpod2"] {
        node.exec("ethtool", &["-K", dev, "tx", "off"]).unwrap();
    }
    external
        .ip(&["addr", "add", "172.18.0.1/24", "dev", "eth0"])
        .unwrap();
    external
        .ip(&["addr", "add", "203.0.113.10/32", "dev", "lo"])
        .unwrap();
    external
        .ip(&["addr", "add", "10.9.9.9/32", "dev", "lo"])
        .unwrap();
    Topology {
        pod,
        pod2,
        node,
        external,
        pin_dir: unique_pin_dir(),
    }
}

impl Topology {
    pub fn desired(&self) -> Desired {
        let index = self
            .node
            .enter(|| nix::net::if_::if_nametoindex("eth0").unwrap())
            .unwrap();
        desired_for(index)
    }

    pub fn agent(&self) -> Ebpf {
        Ebpf::new(self.pin_dir.clone())
    }
}

/// The desired state of the node, whose eth0 has `index`.
pub fn desired_for(index: u32) -> Desired {
    // TEST-NET is in the default set: list the kept ranges explicitly.
    let config = Config {
        non_masquerade_cidrs: vec!["10.0.0.0/8".parse().unwrap()],
        ..Config::default()
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
