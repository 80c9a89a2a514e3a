//! Counterfactuals: changes made in the node namespace that break exactly the property a
//! scenario checks, the way a datapath that got the case wrong would. Every scenario runs its
//! check once as it is (it must pass) and once per sabotage (it must fail): a check that
//! passes with the property broken proves nothing.
//!
//! Most are a table `ip masqt-sabotage` (`ip6` for an IPv6 scenario) of one chain: stateless rewrites after NAT (priority
//! 300, what a per-packet translation does to a reply) or NAT rules that run before masq's and
//! kube-proxy's (srcnat - 10, which takes the flow's binding first). They act in netfilter, so
//! they reach a packet on every datapath: the eBPF programs run after them on egress. Where a
//! datapath's own later translation would undo such a rule, the sabotage changes masq's config
//! instead ([`Sabotage::config_keeps_the_internet`]), and a kube-proxy chain flushed is the
//! counterfactual of a check that kube-proxy's translation happened.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use anyhow::{bail, Result};
use masq_testbed::addr;
use masq_testbed::kube::{nft_load, Family};
use masq_testbed::topology::{NODE_BRIDGE, NODE_UPLINK};

use super::Addrs;
use crate::harness::{run_ok, Bed};

type Action = Box<dyn Fn(&mut Bed) -> Result<()>>;

const TABLE: &str = "masqt-sabotage";

/// One sabotage: what it does, how to do it, and how to undo it.
pub struct Sabotage {
    /// What it breaks, for messages.
    pub what: String,
    apply: Action,
    undo: Option<Action>,
}

impl Sabotage {
    /// A removable table `<family> masqt-sabotage` with one chain (`hook` line, then `rule`).
    fn nft(what: String, family: Family, hook: &'static str, rule: String) -> Sabotage {
        let nft = family.nft();
        let table = format!(
            "table {nft} {TABLE} {{\n\tchain sabotage {{\n\t\t{hook}\n\t\t{rule}\n\t}}\n}}\n"
        );
        Sabotage {
            what,
            apply: Box::new(move |bed| nft_load(&bed.topology.node, &table)),
            undo: Some(Box::new(move |bed| {
                run_ok(&bed.topology.node, "nft", &["delete", "table", nft, TABLE])
            })),
        }
    }

    /// The pod's packets leave the node with the node's address, whatever their flow: what a
    /// per-packet SNAT without flow direction does to the pod's replies.
    pub fn pod_replies_from_node(pod: Ipv4Addr) -> Sabotage {
        Sabotage::nft(
            format!("{pod}'s packets leaving with the node's address"),
            Family::V4,
            "type filter hook postrouting priority 300; policy accept;",
            format!(
                "oifname \"{NODE_UPLINK}\" ip saddr {pod} ip saddr set {}",
                addr::NODE
            ),
        )
    }

    /// What the node sends from `port` over `protocol` (and `family`) leaves from
    /// `port + 1000`: a reply translated a second time.
    pub fn node_replies_from_another_port(family: Family, protocol: &str, port: u16) -> Sabotage {
        let (nft, node) = (family.nft(), Addrs::of(family).node);
        Sabotage::nft(
            format!(
                "the node's {nft} {protocol} packets from port {port} rewritten to {}",
                port + 1000
            ),
            family,
            "type filter hook postrouting priority 300; policy accept;",
            format!(
                "oifname \"{NODE_UPLINK}\" {nft} saddr {node} {protocol} sport {port} {protocol} sport set {}",
                port + 1000
            ),
        )
    }

    /// New flows of `family` routed to the pods are masqueraded to the node's bridge address:
    /// the pod no longer sees who called it.
    pub fn masquerade_towards_pods(family: Family) -> Sabotage {
        Sabotage::nft(
            format!("{} flows towards the pods masqueraded", family.nft()),
            family,
            "type nat hook postrouting priority srcnat - 10; policy accept;",
            format!("oifname \"{NODE_BRIDGE}\" masquerade"),
        )
    }

    /// The agent's config goes from `good` to `bad`, which keeps the internet host's range:
    /// applied once a pod's fresh connection to the internet host keeps its source, undone
    /// once it is masqueraded again. Whatever the datapath, masq then keeps a flow that
    /// `good` masquerades.
    pub fn config_keeps_the_internet(good: &'static str, bad: &'static str) -> Sabotage {
        let wait = |bed: &Bed, source: Ipv4Addr| {
            bed.wait_for_source(addr::INTERNET, source, Duration::from_secs(3))
                .map(drop)
        };
        Sabotage {
            what: format!("the config {bad:?}"),
            apply: Box::new(move |bed| {
                bed.config.update(bad)?;
                wait(bed, addr::POD)
            }),
            undo: Some(Box::new(move |bed| {
                bed.config.update(good)?;
                wait(bed, addr::NODE)
            })),
        }
    }

    /// `pod`'s flows from `port` leave from the node's address (of `pod`'s family) and that
    /// same port: what keeping a pod's source port does when the node uses the port too.
    pub fn pod_keeps_its_port(pod: IpAddr, protocol: &str, port: u16) -> Sabotage {
        let family = Family::of(pod);
        let to = std::net::SocketAddr::new(Addrs::of(family).node, port);
        Sabotage::nft(
            format!("{pod}'s {protocol} flows from port {port} keeping the port"),
            family,
            "type nat hook postrouting priority srcnat - 10; policy accept;",
            format!(
                "{} saddr {pod} {protocol} sport {port} snat to {to}",
                family.nft()
            ),
        )
    }

    /// Runs `program args` in the node namespace, not undone: for the last sabotage of a
    /// scenario (e.g. a kube-proxy chain flushed).
    pub fn final_command(what: &str, program: &str, args: &[&str]) -> Sabotage {
        let (program, args) = (
            program.to_string(),
            args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        );
        Sabotage {
            what: what.to_string(),
            apply: Box::new(move |bed| {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                run_ok(&bed.topology.node, &program, &args)
            }),
            undo: None,
        }
    }
}

/// Runs `check` under each sabotage in turn (undoing each one before the next); each must make
/// it fail. The errors are printed: they are what the check reports when a datapath gets the
/// case wrong.
pub fn each_caught(
    bed: &mut Bed,
    sabotages: &[Sabotage],
    check: impl Fn(&Bed) -> Result<()>,
) -> Result<()> {
    for (i, sabotage) in sabotages.iter().enumerate() {
        if sabotage.undo.is_none() && i + 1 != sabotages.len() {
            bail!("{} cannot be undone: it must come last", sabotage.what);
        }
        (sabotage.apply)(bed)?;
        let result = check(bed);
        if let Some(undo) = &sabotage.undo {
            undo(bed)?;
        }
        match result {
            Ok(()) => bail!(
                "the check still passed with {}: it cannot tell the broken case",
                sabotage.what
            ),
            Err(e) => eprintln!("counterfactual, {}: caught: {e:#}", sabotage.what),
        }
    }
    Ok(())
}
