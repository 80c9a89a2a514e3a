//! What the node contributes, learnt from netlink: the egress interfaces (those of the default
//! routes in the main table, unless `--interfaces` names them) with their addresses, and every
//! local address. Link, address and route changes are watched so the datapath follows them.
//!
//! An interface's addresses are those a masqueraded packet may leave with, the primary of each
//! family first (what the datapaths take as the SNAT address): IPv4's primaries before its
//! secondaries; IPv6's global addresses in the kernel's order, leaving out the link-local
//! ones and those the kernel flags tentative (duplicate address detection not done), failed,
//! deprecated (preferred lifetime over) or temporary (privacy addresses). Those flags change
//! (DAD completes, a lifetime runs out): the kernel announces each change and the agent reads
//! the addresses again. Every address, usable or not, is a local address.

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use masq_datapath::Interface;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::route::{RouteAttribute, RouteHeader};
use rtnetlink::{Handle, MulticastGroup, RouteMessageBuilder};
use tokio::sync::mpsc;

/// The node as netlink shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// The interfaces masqueraded traffic leaves through.
    pub egress: Vec<Interface>,
    /// Every address of the node (destinations that stay local).
    pub local_addrs: Vec<IpAddr>,
}

/// Reads links, addresses and default routes. `wanted` is `--interfaces` when given.
pub async fn discover(wanted: Option<&[String]>, ipv6: bool) -> Result<NodeFacts> {
    let (conn, handle, _) = rtnetlink::new_connection().context("opening a netlink socket")?;
    let task = tokio::spawn(conn);
    let facts = discover_with(&handle, wanted, ipv6).await;
    task.abort();
    facts
}

async fn discover_with(
    handle: &Handle,
    wanted: Option<&[String]>,
    ipv6: bool,
) -> Result<NodeFacts> {
    let mut names = BTreeMap::new();
    let mut links = handle.link().get().execute();
    while let Some(link) = links.try_next().await.context("listing links")? {
        for attr in &link.attributes {
            if let LinkAttribute::IfName(name) = attr {
                names.insert(link.header.index, name.clone());
            }
        }
    }

    // Every address, each with what the kernel says of it, in the kernel's order.
    let mut listed: BTreeMap<u32, Vec<AddrFacts>> = BTreeMap::new();
    let mut stream = handle.address().get().execute();
    while let Some(msg) = stream.try_next().await.context("listing addresses")? {
        if let Some(facts) = AddrFacts::of(&msg) {
            listed.entry(msg.header.index).or_default().push(facts);
        }
    }
    let local_addrs = listed.values().flatten().map(|f| f.addr).collect();
    let addrs: BTreeMap<u32, Vec<IpAddr>> = listed
        .into_iter()
        .map(|(index, list)| (index, snat_candidates(list)))
        .collect();

    let mut egress_indexes = Vec::new();
    let mut families = vec![RouteMessageBuilder::<std::net::Ipv4Addr>::new().build()];
    if ipv6 {
        families.push(RouteMessageBuilder::<std::net::Ipv6Addr>::new().build());
    }
    for request in families {
        let mut routes = handle.route().get(request).execute();
        while let Some(route) = routes.try_next().await.context("listing routes")? {
            if route.header.destination_prefix_length != 0 || !in_main_table(&route) {
                continue;
            }
            for attr in &route.attributes {
                let oif = match attr {
                    RouteAttribute::Oif(index) => vec![*index],
                    RouteAttribute::MultiPath(hops) => {
                        hops.iter().map(|h| h.interface_index).collect()
                    }
                    _ => continue,
                };
                for index in oif {
                    if !egress_indexes.contains(&index) {
                        egress_indexes.push(index);
                    }
                }
            }
        }
    }

    let egress = match wanted {
        Some(wanted) => wanted
            .iter()
            .map(|name| {
                let index = names
                    .iter()
                    .find(|(_, n)| *n == name)
                    .map(|(i, _)| *i)
                    .with_context(|| format!("--interfaces: no interface named {name}"))?;
                Ok(interface(index, &names, &addrs))
            })
            .collect::<Result<Vec<_>>>()?,
        None => egress_indexes
            .into_iter()
            .map(|i| interface(i, &names, &addrs))
            .collect(),
    };
    Ok(NodeFacts {
        egress,
        local_addrs,
    })
}

/// One address as netlink lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AddrFacts {
    addr: IpAddr,
    /// IPv4: a secondary address of its subnet.
    secondary: bool,
    /// May a masqueraded packet leave with it (see the module documentation)?
    snat_usable: bool,
}

impl AddrFacts {
    fn of(msg: &AddressMessage) -> Option<AddrFacts> {
        let attr = |local: bool| {
            msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) if local => Some(*ip),
                AddressAttribute::Address(ip) if !local => Some(*ip),
                _ => None,
            })
        };
        let addr = attr(true).or_else(|| attr(false))?;
        // The header holds the first 8 flag bits; IFA_FLAGS, when present, all of them.
        let extended = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Flags(flags) => Some(*flags),
            _ => None,
        });
        let flags = extended
            .unwrap_or_else(|| AddressFlags::from_bits_retain(u32::from(msg.header.flags.bits())));
        let snat_usable = match addr {
            IpAddr::V4(_) => true,
            IpAddr::V6(v6) => {
                // IFA_F_TEMPORARY is IFA_F_SECONDARY's bit.
                let unusable = AddressFlags::Tentative
                    | AddressFlags::Dadfailed
                    | AddressFlags::Deprecated
                    | AddressFlags::Secondary;
                msg.header.scope == AddressScope::Universe
                    && !flags.intersects(unusable)
                    && masq_datapath::ebpf::maps6::usable_snat6(&v6)
            }
        };
        Some(AddrFacts {
            addr,
            secondary: addr.is_ipv4() && msg.header.flags.contains(AddressHeaderFlags::Secondary),
            snat_usable,
        })
    }
}

/// An interface's addresses fit to be SNAT sources, the primary of each family first: IPv4
/// primaries before secondaries, IPv6 usable ones in the kernel's order (the kernel lists the
/// most recent first, as kubelet and Cilium read it).
fn snat_candidates(mut list: Vec<AddrFacts>) -> Vec<IpAddr> {
    list.retain(|f| f.snat_usable);
    list.sort_by_key(|f| f.secondary); // stable
    list.into_iter().map(|f| f.addr).collect()
}

fn in_main_table(route: &rtnetlink::packet_route::route::RouteMessage) -> bool {
    let table = route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(route.header.table as u32);
    table == RouteHeader::RT_TABLE_MAIN as u32
}

fn interface(
    index: u32,
    names: &BTreeMap<u32, String>,
    addrs: &BTreeMap<u32, Vec<IpAddr>>,
) -> Interface {
    Interface {
        name: names
            .get(&index)
            .cloned()
            .unwrap_or_else(|| format!("if{index}")),
        index,
        addrs: addrs.get(&index).cloned().unwrap_or_default(),
    }
}

/// Sends `()` on every link, address or route change. Runs until the receiver is gone.
pub fn watch(changes: mpsc::UnboundedSender<()>) -> Result<()> {
    let (conn, _handle, mut messages) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv6Route,
    ])
    .context("subscribing to netlink link, address and route changes")?;
    tokio::spawn(conn);
    tokio::spawn(async move {
        while messages.next().await.is_some() {
            if changes.send(()).is_err() {
                break;
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(addr: &str, secondary: bool, snat_usable: bool) -> AddrFacts {
        AddrFacts {
            addr: addr.parse().unwrap(),
            secondary,
            snat_usable,
        }
    }

    #[test]
    fn snat_candidates_keep_the_usable_ones_primaries_first() {
        let list = vec![
            facts("fe80::1", false, false),
            facts("10.0.0.9", true, true),
            facts("2001:db8::9", false, false), // tentative, deprecated or temporary
            facts("10.0.0.1", false, true),
            facts("2001:db8::1", false, true),
            facts("2001:db8::2", false, true),
        ];
        let got: Vec<String> = snat_candidates(list)
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(got, ["10.0.0.1", "2001:db8::1", "2001:db8::2", "10.0.0.9"]);
    }

    /// The flags of real netlink messages: each unusable kind of IPv6 address is refused.
    #[test]
    fn ipv6_address_flags_decide_usability() {
        let message = |addr: &str, scope: AddressScope, flags: AddressFlags| {
            let mut msg = AddressMessage::default();
            msg.header.scope = scope;
            msg.attributes
                .push(AddressAttribute::Address(addr.parse().unwrap()));
            msg.attributes.push(AddressAttribute::Flags(flags));
            AddrFacts::of(&msg).unwrap().snat_usable
        };
        let global = AddressScope::Universe;
        assert!(message("2001:db8::1", global, AddressFlags::Permanent));
        assert!(message(
            "fd00::1",
            global,
            AddressFlags::Permanent | AddressFlags::Nodad
        ));
        for flag in [
            AddressFlags::Tentative,
            AddressFlags::Deprecated,
            AddressFlags::Secondary,
            AddressFlags::Dadfailed,
        ] {
            assert!(!message("2001:db8::1", global, flag), "{flag:?}");
        }
        assert!(!message(
            "fe80::1",
            AddressScope::Link,
            AddressFlags::Permanent
        ));
        assert!(
            message("10.0.0.1", global, AddressFlags::Secondary),
            "IPv4 secondaries stay"
        );
    }
}
