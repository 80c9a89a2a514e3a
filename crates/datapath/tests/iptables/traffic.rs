//! Real traffic through the rules: a pod's TCP connection seen from the far side, with the
//! node's address and a port of the range, or its own address when exempt or not a pod.

use std::time::Duration;

use masq_datapath::ipt::{Backend, Iptables};
use masq_datapath::{Desired, PortRange};
use masq_testbed::Netns;

use crate::ipt_support::{config, desired, nets};
use crate::nat_table::*;

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
