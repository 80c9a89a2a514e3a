//! The peers masq is measured against, installed without any agent: kubernetes-sigs/
//! ip-masq-agent's iptables chain and a hand-written minimal nftables masquerade, each in the
//! family of the sample (upstream writes the same chain with ip6tables under `--enable-ipv6`).

use anyhow::{Context, Result};
use masq_testbed::Netns;

use crate::family::Family;

/// The comment upstream puts on every exemption.
const UPSTREAM_RETURN_COMMENT: &str = "ip-masq-agent: local traffic is not subject to MASQUERADE";

/// The `iptables-restore --noflush` payload kubernetes-sigs/ip-masq-agent writes (its
/// `syncMasqRules`: link-local first unless masqLinkLocal, one RETURN per CIDR in config order,
/// MASQUERADE last), in upstream's argument order. Written here rather than by `masq render`
/// so that the peer does not depend on masq's config limits (1 MiB, cidrLimit). For IPv6 it is
/// upstream's `syncMasqRulesIPv6` payload for `ip6tables-restore`: the same chain, with the
/// IPv6 link-local range first.
pub fn upstream_iptables(family: Family, cidr_list: &[String]) -> String {
    let link_local = match family {
        Family::V4 => "169.254.0.0/16",
        Family::V6 => "fe80::/10",
    };
    let mut out = String::with_capacity(cidr_list.len() * 120 + 512);
    out.push_str("*nat\n:IP-MASQ-AGENT - [0:0]\n");
    for cidr in std::iter::once(link_local).chain(cidr_list.iter().map(String::as_str)) {
        out.push_str(&format!(
            "-A IP-MASQ-AGENT -m comment --comment \"{UPSTREAM_RETURN_COMMENT}\" -d {cidr} -j RETURN\n"
        ));
    }
    out.push_str(
        "-A IP-MASQ-AGENT -m comment --comment \"ip-masq-agent: outbound traffic is subject to \
         MASQUERADE (must be last in chain)\" -j MASQUERADE --random-fully\nCOMMIT\n",
    );
    out
}

/// Loads the chain and the jump upstream keeps in nat POSTROUTING into `node`, with iptables or
/// ip6tables.
pub fn install_upstream_iptables(node: &Netns, family: Family, cidr_list: &[String]) -> Result<()> {
    let (iptables, restore) = match family {
        Family::V4 => ("iptables", "iptables-restore"),
        Family::V6 => ("ip6tables", "ip6tables-restore"),
    };
    node.pipe(
        restore,
        &["--noflush"],
        &upstream_iptables(family, cidr_list),
    )
    .with_context(|| format!("{restore} of the ip-masq-agent chain"))?;
    // The jump upstream keeps in nat POSTROUTING.
    node.exec(
        iptables,
        &[
            "-t", "nat", "-A", "POSTROUTING",
            "-m", "comment", "--comment",
            "ip-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic to our custom IP-MASQ-AGENT chain",
            "-m", "addrtype", "!", "--dst-type", "LOCAL",
            "-j", "IP-MASQ-AGENT",
        ],
    )?;
    Ok(())
}

/// The minimal nftables masquerade an operator would write by hand, in an `ip` or `ip6` table.
pub fn plain_nftables(family: Family, cidr_list: &[String], fully_random: bool) -> String {
    let (table, address_type, daddr) = match family {
        Family::V4 => ("ip", "ipv4_addr", "ip daddr"),
        Family::V6 => ("ip6", "ipv6_addr", "ip6 daddr"),
    };
    let elements = if cidr_list.is_empty() {
        String::new()
    } else {
        format!("\t\telements = {{ {} }}\n", cidr_list.join(", "))
    };
    format!(
        "table {table} plain_masq {{\n\
         \tset nonmasq {{\n\t\ttype {address_type}\n\t\tflags interval\n{elements}\t}}\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\t{daddr} @nonmasq return\n\
         \t\toifname \"{uplink}\" masquerade{random}\n\
         \t}}\n}}\n",
        uplink = masq_testbed::topology::NODE_UPLINK,
        random = if fully_random { " fully-random" } else { "" },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_ruleset_lists_the_set_and_masquerades_on_the_uplink() {
        let v4 = Family::V4;
        let text = plain_nftables(v4, &["100.64.0.0/32".into(), "100.64.0.2/32".into()], false);
        assert!(text.contains("elements = { 100.64.0.0/32, 100.64.0.2/32 }"));
        assert!(text.contains("ip daddr @nonmasq return"));
        assert!(text.contains("oifname \"eth0\" masquerade\n"));
        assert!(!plain_nftables(v4, &[], false).contains("elements"));
        assert!(plain_nftables(v4, &[], true).contains("masquerade fully-random\n"));
        let v6 = plain_nftables(Family::V6, &["2001:db8:6440::/128".into()], false);
        assert!(v6.starts_with("table ip6 plain_masq {\n"));
        assert!(v6.contains("type ipv6_addr\n") && v6.contains("ip6 daddr @nonmasq return"));
    }

    #[test]
    fn the_upstream_chain_returns_for_link_local_and_each_cidr_then_masquerades() {
        let text = upstream_iptables(Family::V4, &["10.0.0.0/8".into()]);
        let rules: Vec<&str> = text.lines().filter(|l| l.starts_with("-A")).collect();
        assert_eq!(rules.len(), 3);
        assert!(rules[0].ends_with("-d 169.254.0.0/16 -j RETURN"));
        assert!(rules[1].ends_with("-d 10.0.0.0/8 -j RETURN"));
        assert!(rules[2].contains("(must be last in chain)\" -j MASQUERADE --random-fully"));
        assert!(text.starts_with("*nat\n:IP-MASQ-AGENT - [0:0]\n") && text.ends_with("COMMIT\n"));
        let v6 = upstream_iptables(Family::V6, &["2001:db8:6440::/128".into()]);
        let rules: Vec<&str> = v6.lines().filter(|l| l.starts_with("-A")).collect();
        assert!(rules[0].ends_with("-d fe80::/10 -j RETURN"));
        assert!(rules[1].ends_with("-d 2001:db8:6440::/128 -j RETURN"));
    }
}
