//! The ports the node receives on, which no datapath hands out as a translated source port
//! (cilium/cilium #34041: a translated port equal to a hostPort sent a reply to the wrong pod).
//!
//! Two sources, both read again every few seconds by the agent:
//! - **listening sockets** of the node's network namespace (the agent runs with
//!   `hostNetwork`), over netlink `sock_diag`: TCP sockets in LISTEN and unconnected UDP sockets,
//!   IPv4 and IPv6, unless bound to a loopback address (nothing from outside reaches those).
//!   This covers node services, hostNetwork pods, and kube-proxy's NodePort sockets where it
//!   opens them.
//! - **hostPorts** as the CNI portmap plugin writes them: no socket exists for those, only a
//!   DNAT rule. Its iptables mode jumps from `CNI-HOSTPORT-DNAT` with `--dports` lists (read with
//!   `iptables -t nat -S CNI-HOSTPORT-DNAT`, both backends, both families); its nftables mode
//!   keeps one rule per port in the `hostports` and `hostip_hostports` chains of table
//!   `cni_hostport` (read with `nft -j list table`). The DNAT rules are what actually sends an
//!   inbound packet to a pod, so they are the hazard itself, whatever wrote the pod spec.
//!
//! A source that cannot be read (a missing program, a backend never loaded) adds nothing; the
//! kernel is never asked to load a module for it.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use netlink_sys::{Socket, SocketAddr};
use serde_json::Value;

/// What the node receives on, by source.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReservedPorts {
    /// Ports of listening TCP and unconnected UDP sockets not bound to loopback.
    pub listening: BTreeSet<u16>,
    /// hostPorts of the portmap plugin's DNAT rules.
    pub host_ports: BTreeSet<u16>,
}

impl ReservedPorts {
    /// Both sources together.
    pub fn all(&self) -> BTreeSet<u16> {
        self.listening.union(&self.host_ports).copied().collect()
    }
}

/// Reads both sources now (blocking: a netlink dump and a few short helper programs).
pub fn read() -> ReservedPorts {
    let listening = listening_ports().unwrap_or_else(|e| {
        tracing::warn!("reading the node's listening sockets (sock_diag): {e}");
        BTreeSet::new()
    });
    ReservedPorts {
        listening,
        host_ports: host_ports(),
    }
}

/// Local ports of the listening TCP sockets and unconnected UDP sockets of this network
/// namespace, loopback-bound ones left out.
pub fn listening_ports() -> std::io::Result<BTreeSet<u16>> {
    let mut ports = BTreeSet::new();
    for family in [AF_INET, AF_INET6] {
        for (protocol, states) in [
            (IPPROTO_TCP, StateFlags::LISTEN),
            // A UDP socket that never connected reports TCP_CLOSE: it takes datagrams from
            // anyone, as a listener does.
            (IPPROTO_UDP, StateFlags::CLOSE),
        ] {
            for (addr, port) in dump(family, protocol, states)? {
                if port != 0 && !addr.is_loopback() {
                    ports.insert(port);
                }
            }
        }
    }
    Ok(ports)
}

/// One `SOCK_DIAG_BY_FAMILY` dump: the local address and port of every socket in `states`.
fn dump(family: u8, protocol: u8, states: StateFlags) -> std::io::Result<Vec<(IpAddr, u16)>> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let socket_id = match family {
        AF_INET => SocketId::new_v4(),
        _ => SocketId::new_v6(),
    };
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol,
            extensions: ExtensionFlags::empty(),
            states,
            socket_id,
        })
        .into(),
    );
    request.finalize();
    let mut buf = vec![0; request.buffer_len()];
    request.serialize(&mut buf);
    socket.send(&buf, 0)?;

    let mut found = Vec::new();
    // Bounded: a dump ends with NLMSG_DONE; a node has far fewer sockets than this allows.
    for _ in 0..100_000 {
        let (data, _) = socket.recv_from_full()?;
        let mut offset = 0;
        while offset < data.len() {
            let message = <NetlinkMessage<SockDiagMessage>>::deserialize(&data[offset..])
                .map_err(|e| std::io::Error::other(format!("sock_diag: {e}")))?;
            let length = message.header.length as usize;
            match message.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                    let id = &response.header.socket_id;
                    found.push((id.source_address, id.source_port));
                }
                NetlinkPayload::Done(_) => return Ok(found),
                NetlinkPayload::Error(e) => {
                    return Err(std::io::Error::other(format!("sock_diag: {e:?}")))
                }
                _ => {}
            }
            if length == 0 {
                break;
            }
            offset += length;
        }
    }
    Err(std::io::Error::other("sock_diag: the dump did not end"))
}

/// The portmap plugin's hostPorts, from every place its two modes write them.
pub fn host_ports() -> BTreeSet<u16> {
    let mut ports = BTreeSet::new();
    for (program, tables_file) in [
        ("iptables-nft", None),
        ("ip6tables-nft", None),
        ("iptables-legacy", Some("/proc/net/ip_tables_names")),
        ("ip6tables-legacy", Some("/proc/net/ip6_tables_names")),
    ] {
        // A legacy nat table that was never loaded stays unloaded: listing it would load it.
        if let Some(file) = tables_file {
            let loaded = std::fs::read_to_string(file)
                .is_ok_and(|names| names.lines().any(|name| name == "nat"));
            if !loaded {
                continue;
            }
        }
        if let Some(text) = output(
            program,
            &["-w", "5", "-t", "nat", "-S", "CNI-HOSTPORT-DNAT"],
        ) {
            ports.extend(iptables_host_ports(&text));
        }
    }
    for family in ["ip", "ip6"] {
        if let Some(text) = output("nft", &["-j", "list", "table", family, "cni_hostport"]) {
            ports.extend(nft_host_ports(&text));
        }
    }
    ports
}

/// Standard output of a helper that succeeded; None when it is missing or failed (a chain or
/// table that does not exist).
fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The destination ports of `iptables -S CNI-HOSTPORT-DNAT`: `--dports`/`--destination-ports`
/// lists (`8443,9000:9001`) of the multiport jumps, and any single `--dport`.
pub fn iptables_host_ports(text: &str) -> BTreeSet<u16> {
    let mut ports = BTreeSet::new();
    for line in text.lines().filter(|l| l.starts_with("-A ")) {
        let words = masq_datapath::ipt::save::rule_words(line);
        for pair in words.windows(2) {
            if matches!(
                pair[0].as_str(),
                "--dports" | "--destination-ports" | "--dport" | "--destination-port"
            ) {
                for item in pair[1].split(',') {
                    ports.extend(port_span(item, ':'));
                }
            }
        }
    }
    ports
}

/// The destination ports of the DNAT rules in `nft -j list table ip cni_hostport`.
pub fn nft_host_ports(text: &str) -> BTreeSet<u16> {
    let mut ports = BTreeSet::new();
    let Ok(doc) = serde_json::from_str::<Value>(text) else {
        return ports;
    };
    let objects = doc["nftables"].as_array().cloned().unwrap_or_default();
    for rule in objects.iter().filter_map(|o| o.get("rule")) {
        let exprs = rule["expr"].as_array().cloned().unwrap_or_default();
        if !exprs.iter().any(|e| e.get("dnat").is_some()) {
            continue;
        }
        for m in exprs.iter().filter_map(|e| e.get("match")) {
            if m["left"]["payload"]["field"] == "dport" {
                collect_nft_ports(&m["right"], &mut ports);
            }
        }
    }
    ports
}

fn collect_nft_ports(value: &Value, ports: &mut BTreeSet<u16>) {
    match value {
        Value::Number(n) => ports.extend(n.as_u64().and_then(|p| u16::try_from(p).ok())),
        Value::Object(map) => {
            if let Some(Value::Array(range)) = map.get("range") {
                if let (Some(a), Some(b)) = (range.first(), range.get(1)) {
                    ports.extend(port_span(&format!("{a}-{b}"), '-'));
                }
            } else if let Some(Value::Array(items)) = map.get("set") {
                for item in items {
                    collect_nft_ports(item, ports);
                }
            }
        }
        _ => {}
    }
}

/// `N` or `A<sep>B` as ports; nothing when it does not parse.
fn port_span(item: &str, separator: char) -> Vec<u16> {
    let parse = |s: &str| s.trim().parse::<u16>().ok();
    match item.split_once(separator) {
        Some((a, b)) => match (parse(a), parse(b)) {
            (Some(a), Some(b)) if a <= b => (a..=b).collect(),
            _ => Vec::new(),
        },
        None => parse(item).into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iptables_multiport_jumps_name_every_host_port() {
        let text = "-N CNI-HOSTPORT-DNAT\n\
            -A CNI-HOSTPORT-DNAT -p tcp -m comment --comment \"dnat name: \\\"cbr0\\\" id: \\\"abc\\\"\" -m multiport --dports 8443,9000:9002 -j CNI-DN-1\n\
            -A CNI-HOSTPORT-DNAT -p udp -m comment --comment \"dnat name: \\\"cbr0\\\" id: \\\"abc\\\"\" -m multiport --destination-ports 53 -j CNI-DN-1\n\
            -A CNI-HOSTPORT-DNAT -p tcp -m tcp --dport 7000 -j CNI-DN-2\n";
        assert_eq!(
            iptables_host_ports(text),
            BTreeSet::from([53, 7000, 8443, 9000, 9001, 9002])
        );
        assert!(iptables_host_ports("-N CNI-HOSTPORT-DNAT\n").is_empty());
    }

    #[test]
    fn nft_dnat_rules_name_every_host_port() {
        let text = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
 {"table": {"family": "ip", "name": "cni_hostport", "handle": 3}},
 {"rule": {"family": "ip", "table": "cni_hostport", "chain": "hostports", "handle": 7, "comment": "abc",
   "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 8443}},
            {"dnat": {"addr": "10.244.1.2", "port": 8080}}]}},
 {"rule": {"family": "ip", "table": "cni_hostport", "chain": "hostip_hostports", "handle": 8, "comment": "abc",
   "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "172.30.0.1"}},
            {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": {"set": [53, {"range": [9000, 9001]}]}}},
            {"dnat": {"addr": "10.244.1.2", "port": 53}}]}},
 {"rule": {"family": "ip", "table": "cni_hostport", "chain": "masquerading", "handle": 9,
   "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 1234}},
            {"masquerade": null}]}}]}"#;
        assert_eq!(nft_host_ports(text), BTreeSet::from([53, 8443, 9000, 9001]));
        assert!(nft_host_ports("not json").is_empty());
    }

    #[test]
    fn a_socket_this_process_listens_on_is_found_and_a_loopback_one_is_not() {
        // The test's own network namespace: whatever else listens there, these two are known.
        let open = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let udp = std::net::UdpSocket::bind("[::]:0").unwrap();
        let local = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ports = listening_ports().unwrap();
        assert!(ports.contains(&open.local_addr().unwrap().port()));
        assert!(ports.contains(&udp.local_addr().unwrap().port()));
        assert!(!ports.contains(&local.local_addr().unwrap().port()));
    }
}
