//! The SNAT pool and port flags (`--snat-ip`, `--port-range`, `--nodeport-range`), checked
//! before anything runs: each problem is one line naming the flag and the value. Whether each
//! `--snat-ip` is an address of the node is checked by the agent at start, where the node's
//! addresses are known.

use std::net::IpAddr;

use masq_datapath::{pool, ports, NodeSettings, PortRange};

use crate::settings::ip_flag;

/// `--snat-ip`, in order: addresses, all of one family, none twice, at most
/// [`pool::MAX_ADDRESSES`].
pub fn snat_ips(texts: &[String], enable_ipv6: bool) -> Result<Vec<IpAddr>, Vec<String>> {
    let mut problems = Vec::new();
    let mut pool: Vec<IpAddr> = Vec::new();
    for text in texts {
        match ip_flag("--snat-ip", text, enable_ipv6) {
            Ok(addr) if pool.contains(&addr) => {
                problems.push(format!("--snat-ip: {text:?} is given twice"))
            }
            Ok(addr) if addr.is_unspecified() || addr.is_multicast() || addr.is_loopback() => {
                problems.push(format!(
                    "--snat-ip: {text:?} cannot be a source address (unspecified, loopback or multicast)"
                ))
            }
            Ok(addr) => match pool.first() {
                Some(first) if first.is_ipv4() != addr.is_ipv4() => problems.push(format!(
                    "--snat-ip: {text:?} is not of the same family as {first}; a pool holds one \
                     family (the other one keeps the egress interface's address)"
                )),
                _ => pool.push(addr),
            },
            Err(problem) => problems.push(problem),
        }
    }
    if pool.len() > pool::MAX_ADDRESSES {
        problems.push(format!(
            "--snat-ip: {} addresses given, at most {} make a pool",
            pool.len(),
            pool::MAX_ADDRESSES
        ));
    }
    match problems.is_empty() {
        true => Ok(pool),
        false => Err(problems),
    }
}

/// `--port-range` (also spelled `--to-ports`): a list of disjoint ranges.
pub fn port_ranges(text: &str) -> Result<Vec<PortRange>, String> {
    ports::parse_list(text).map_err(|why| format!("--port-range: {why}"))
}

/// `--nodeport-range`: one range, `FIRST-LAST`.
pub fn nodeport_range(text: &str) -> Result<PortRange, String> {
    match ports::parse_list(text) {
        Ok(list) if list.len() == 1 => Ok(list[0]),
        Ok(_) => Err(format!(
            "--nodeport-range: {text:?} is not one range FIRST-LAST (e.g. 30000-32767)"
        )),
        Err(why) => Err(format!("--nodeport-range: {why}")),
    }
}

/// What the flags allow but an operator probably did not mean.
pub fn warnings(node: &NodeSettings) -> Vec<String> {
    let nodeports = node.nodeport_range;
    node.port_ranges
        .iter()
        .filter(|range| range.overlaps(&nodeports))
        .map(|range| {
            format!(
                "--port-range: {range} includes ports of the NodePort range {nodeports} \
                 (--nodeport-range): translated flows may take them, and a reply may then meet \
                 a NodePort rule"
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_pool_keeps_the_order_given() {
        let pool = snat_ips(&texts(&["192.0.2.2", "192.0.2.1"]), false).unwrap();
        assert_eq!(
            pool,
            [IpAddr::from([192, 0, 2, 2]), IpAddr::from([192, 0, 2, 1])]
        );
        assert!(snat_ips(&[], false).unwrap().is_empty());
        let v6 = snat_ips(&texts(&["2001:db8::1", "2001:db8::2"]), true).unwrap();
        assert_eq!(v6.len(), 2);
    }

    #[test]
    fn every_bad_address_is_one_line_naming_the_flag_and_value() {
        let problems = snat_ips(
            &texts(&[
                "192.0.2.1",
                "2001:db8::1",
                "192.0.2.1",
                "nope",
                "0.0.0.0",
                "fd00::1",
            ]),
            true,
        )
        .unwrap_err();
        let expected = [
            "--snat-ip: \"2001:db8::1\" is not of the same family as 192.0.2.1",
            "--snat-ip: \"192.0.2.1\" is given twice",
            "--snat-ip: \"nope\" is not an IP address",
            "--snat-ip: \"0.0.0.0\" cannot be a source address",
            "--snat-ip: \"fd00::1\" is not of the same family as 192.0.2.1",
        ];
        assert_eq!(problems.len(), expected.len(), "{problems:?}");
        for (problem, start) in problems.iter().zip(expected) {
            assert!(problem.starts_with(start), "{problem:?} vs {start:?}");
            assert!(!problem.contains('\n'));
        }
        let v6_off = snat_ips(&texts(&["2001:db8::1"]), false).unwrap_err();
        assert!(v6_off[0].contains("--enable-ipv6"), "{v6_off:?}");
        let many: Vec<String> = (1..=33).map(|i| format!("192.0.2.{i}")).collect();
        let too_many = snat_ips(&many, false).unwrap_err();
        assert_eq!(
            too_many,
            ["--snat-ip: 33 addresses given, at most 32 make a pool"]
        );
    }

    #[test]
    fn port_flags() {
        let pr = |first, last| PortRange { first, last };
        assert_eq!(
            port_ranges("1024-29999,32768-65535").unwrap(),
            [pr(1024, 29999), pr(32768, 65535)]
        );
        assert_eq!(
            port_ranges("1-10,5-20").unwrap_err(),
            "--port-range: \"1-10,5-20\": \"5-20\" overlaps 1-10"
        );
        assert_eq!(
            port_ranges("2000-1000").unwrap_err(),
            "--port-range: \"2000-1000\": \"2000-1000\" is empty (it ends before it starts)"
        );
        assert_eq!(nodeport_range("30000-32767").unwrap(), pr(30000, 32767));
        assert!(nodeport_range("1-2,3-4")
            .unwrap_err()
            .contains("is not one range"));
        assert!(nodeport_range("x")
            .unwrap_err()
            .starts_with("--nodeport-range: \"x\""));
    }

    #[test]
    fn a_port_range_over_the_nodeport_range_is_a_warning() {
        let mut node = NodeSettings::default();
        assert!(warnings(&node).is_empty());
        node.port_ranges = port_ranges("1024-29999,32768-65535").unwrap();
        assert!(warnings(&node).is_empty());
        node.port_ranges = port_ranges("1024-65535").unwrap();
        let found = warnings(&node);
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with(
            "--port-range: 1024-65535 includes ports of the NodePort range 30000-32767"
        ));
    }
}
