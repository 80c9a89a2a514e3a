//! What the node contributes, learnt from netlink: the egress interfaces (those of the default
//! routes in the main table, unless `--interfaces` names them) with their addresses, every local
//! address, and the uplinks (the interfaces with a default route in any table, with those
//! tables: a VPC-native node's ENIs and their policy routes; IPv6 ones too with
//! `--enable-ipv6`). Link, address and route changes are watched so the datapath follows them;
//! the datapaths discover nothing themselves.
//!
//! An interface's addresses are those a masqueraded packet may leave with, the primary of each
//! family first (what the datapaths take as the SNAT address): IPv4's primaries before its
//! secondaries; IPv6's global addresses in the kernel's order, leaving out the link-local
//! ones and those the kernel flags tentative (duplicate address detection not done), failed,
//! deprecated (preferred lifetime over) or temporary (privacy addresses). Those flags change
//! (DAD completes, a lifetime runs out): the kernel announces each change and the agent reads
//! the addresses again. Every address, usable or not, is a local address.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use masq_datapath::{Interface, Uplink};
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::route::{RouteAttribute, RouteHeader, RouteMessage, RouteType};
use rtnetlink::{Handle, MulticastGroup, RouteMessageBuilder};
use tokio::sync::mpsc;

/// The node as netlink shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// The interfaces masqueraded traffic leaves through.
    pub egress: Vec<Interface>,
    /// Every address of the node (destinations that stay local).
    pub local_addrs: Vec<IpAddr>,
    /// The interfaces with a default route in any table (IPv6 ones only with `--enable-ipv6`).
    pub uplinks: Vec<Uplink>,
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
    // Interface index → the tables of its default routes.
    let mut uplink_tables: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    let mut families = vec![RouteMessageBuilder::<std::net::Ipv4Addr>::new().build()];
    if ipv6 {
        families.push(RouteMessageBuilder::<std::net::Ipv6Addr>::new().build());
    }
    for request in families {
        // Without strict checking the kernel ignores the request's table: every table comes.
        let mut routes = handle.route().get(request).execute();
        while let Some(route) = routes.try_next().await.context("listing routes")? {
            let Some((table, oifs)) = default_route(&route) else {
                continue;
            };
            for &index in &oifs {
                uplink_tables.entry(index).or_default().insert(table);
            }
            if table == u32::from(RouteHeader::RT_TABLE_MAIN) {
                for index in oifs {
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
    let uplinks = uplink_tables
        .into_iter()
        .map(|(index, tables)| Uplink {
            name: interface(index, &names, &addrs).name,
            tables: tables.into_iter().collect(),
        })
        .collect();
    Ok(NodeFacts {
        egress,
        local_addrs,
        uplinks,
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

/// A unicast default route's table and the interfaces it leaves through (several for a
/// multipath route); `None` for any other route.
fn default_route(route: &RouteMessage) -> Option<(u32, Vec<u32>)> {
    if route.header.destination_prefix_length != 0 || route.header.kind != RouteType::Unicast {
        return None;
    }
    // Tables past 255 come as an attribute (the header then says 252, "compat").
    let mut table = u32::from(route.header.table);
    let mut oifs = Vec::new();
    for attr in &route.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Oif(index) => oifs.push(*index),
            RouteAttribute::MultiPath(hops) => oifs.extend(hops.iter().map(|h| h.interface_index)),
            _ => {}
        }
    }
    Some((table, oifs))
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
    use masq_testbed::Netns;

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

    /// A node with a default route through eth0 in `main`, eth1 in table 2, eth2 in tables 3
    /// and 1000 (past 255: an attribute, not the header), an unreachable default in table 4
    /// and eth3 with no IPv4 default route, only an IPv6 one in table 7.
    fn vpc_like_node() -> Netns {
        let ns = Netns::new("uplinks").unwrap();
        for (i, name) in ["eth0", "eth1", "eth2", "eth3"].iter().enumerate() {
            // A veth pair inside the namespace (no dummy module on every kernel).
            let peer = format!("{name}p");
            ns.ip(&["link", "add", name, "type", "veth", "peer", "name", &peer])
                .unwrap();
            ns.ip(&["link", "set", name, "up"]).unwrap();
            ns.ip(&["link", "set", &peer, "up"]).unwrap();
            let addr = format!("10.0.{i}.10/24");
            ns.ip(&["addr", "add", &addr, "dev", name]).unwrap();
        }
        for route in [
            "default dev eth0",
            "default dev eth1 table 2",
            "default dev eth2 table 3",
            "default dev eth2 table 1000",
            "unreachable default table 4",
            "198.51.100.0/24 dev eth3",
        ] {
            let mut args = vec!["route", "add"];
            args.extend(route.split(' '));
            ns.ip(&args).unwrap();
        }
        ns.ip(&["-6", "route", "add", "default", "dev", "eth3", "table", "7"])
            .unwrap();
        ns
    }

    fn discover_in(ns: &Netns, wanted: Option<&[String]>) -> NodeFacts {
        discover_family_in(ns, wanted, false)
    }

    fn discover_family_in(ns: &Netns, wanted: Option<&[String]>, ipv6: bool) -> NodeFacts {
        ns.enter(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(discover(wanted, ipv6))
        })
        .unwrap()
        .unwrap()
    }

    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn uplinks_are_the_default_routes_of_every_table() {
        masq_testbed::require(&[]);
        let ns = vpc_like_node();
        let facts = discover_in(&ns, None);
        let names = |list: &[Interface]| list.iter().map(|i| i.name.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(&facts.egress),
            ["eth0"],
            "the main table's default route"
        );
        assert_eq!(facts.egress[0].addrs[0], IpAddr::from([10, 0, 0, 10]));
        let uplinks: Vec<(String, Vec<u32>)> = facts
            .uplinks
            .iter()
            .map(|u| (u.name.clone(), u.tables.clone()))
            .collect();
        assert_eq!(
            uplinks,
            [
                ("eth0".to_string(), vec![254]),
                ("eth1".to_string(), vec![2]),
                ("eth2".to_string(), vec![3, 1000]),
            ]
        );
        assert!(facts.local_addrs.contains(&IpAddr::from([10, 0, 3, 10])));

        // --interfaces names the egress interfaces; the uplinks stay what the routes say.
        let listed = discover_in(&ns, Some(&["eth3".to_string()]));
        assert_eq!(names(&listed.egress), ["eth3"]);
        assert_eq!(listed.uplinks, facts.uplinks);

        // With IPv6, its default routes make uplinks too.
        let dual = discover_family_in(&ns, None, true);
        let eth3 = dual.uplinks.iter().find(|u| u.name == "eth3");
        assert_eq!(eth3.map(|u| u.tables.clone()), Some(vec![7]), "{dual:?}");

        // A route change is a fact change (the watch then reconciles).
        ns.ip(&["route", "del", "default", "dev", "eth1", "table", "2"])
            .unwrap();
        let after = discover_in(&ns, None);
        assert!(after.uplinks.iter().all(|u| u.name != "eth1"), "{after:?}");
    }
}
