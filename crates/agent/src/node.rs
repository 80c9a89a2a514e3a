//! What the node contributes, learnt from netlink: the egress interfaces (those of the default
//! routes in the main table, unless `--interfaces` names them) with their addresses, and every
//! local address. Link, address and route changes are watched so the datapath follows them.

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use masq_datapath::Interface;
use rtnetlink::packet_route::address::{AddressAttribute, AddressHeaderFlags};
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

    // The kernel lists primary addresses before secondary ones; keep that order.
    let mut addrs: BTreeMap<u32, Vec<(bool, IpAddr)>> = BTreeMap::new();
    let mut stream = handle.address().get().execute();
    while let Some(msg) = stream.try_next().await.context("listing addresses")? {
        let secondary = msg.header.flags.contains(AddressHeaderFlags::Secondary);
        let addr = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        });
        let addr = addr.or_else(|| {
            msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            })
        });
        if let Some(addr) = addr {
            addrs
                .entry(msg.header.index)
                .or_default()
                .push((secondary, addr));
        }
    }
    let addrs: BTreeMap<u32, Vec<IpAddr>> = addrs
        .into_iter()
        .map(|(index, mut list)| {
            list.sort_by_key(|(secondary, _)| *secondary); // stable: primaries first
            (index, list.into_iter().map(|(_, a)| a).collect())
        })
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
    let local_addrs = addrs.values().flatten().copied().collect();
    Ok(NodeFacts {
        egress,
        local_addrs,
    })
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
