//! What `nft` 1.0 does slowly on a large interval set, done over nfnetlink directly: reading
//! the ruleset generation, adding or deleting a few set elements, and outlining masq's table
//! (its chains, rule counts and sets, without a single element).
//!
//! `nft` fetches every element of every interval set in the table before it edits any element
//! (to merge and split intervals), and the kernel dumps an rbtree set by walking it from the
//! start for each message: with 100,000 CIDRs that fetch alone costs hundreds of milliseconds,
//! for a change of one CIDR. The generation is a counter the kernel bumps on every committed
//! transaction in the namespace: while it has not moved, nobody changed masq's table, and the
//! table need not be read back. An element batch carries the generation it was planned
//! against, so the kernel refuses it (`ERESTART`) if anything was committed in between.
//!
//! Elements are sent the way `nft` encodes a prefix in an interval set: the first address,
//! and the first address after the prefix flagged as an interval end (none when the prefix
//! reaches the top of the address space).
//!
//! Here are the operations; `codec` holds the wire format, `socket` the transport.

mod codec;
mod socket;

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use ipnet::IpNet;

use crate::names::NFT_TABLE;
use codec::{
    attr, c_string, interval_elements, message, string_attr, NFNL_BATCH_GENID,
    NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END, NFNL_SUBSYS_NFTABLES, NFPROTO_INET, NFTA_CHAIN_NAME,
    NFTA_RULE_CHAIN, NFTA_SET_ELEM_LIST_ELEMENTS, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_TABLE,
    NFTA_SET_FLAGS, NFTA_SET_NAME, NFT_MSG_DELSETELEM, NFT_MSG_GETCHAIN, NFT_MSG_GETGEN,
    NFT_MSG_GETRULE, NFT_MSG_GETSET, NFT_MSG_NEWCHAIN, NFT_MSG_NEWRULE, NFT_MSG_NEWSET,
    NFT_MSG_NEWSETELEM, NFT_SET_ANONYMOUS, NLMSG_HDRLEN,
};
use socket::Socket;

/// Prefixes per message: an attribute's length is 16 bits, and an IPv6 prefix takes up to
/// 72 bytes (two elements).
const PREFIXES_PER_MESSAGE: usize = 512;

/// Elements to take out of and put into one set of masq's table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetEdit {
    /// The set's name.
    pub set: String,
    /// Prefixes to delete (each exactly as installed).
    pub delete: Vec<IpNet>,
    /// Prefixes to add (none overlapping what stays).
    pub add: Vec<IpNet>,
}

/// masq's table in outline: each chain with its number of rules, and the named sets. Empty when
/// the table does not exist.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outline {
    /// Chain name → rules in it.
    pub chains: BTreeMap<String, usize>,
    /// Named sets (the anonymous ones rules carry inline are left out).
    pub sets: BTreeSet<String>,
}

/// Outlines masq's table in the calling thread's network namespace: three small dumps, no set
/// element read, whatever the sets hold.
pub fn outline() -> io::Result<Outline> {
    let socket = Socket::open()?;
    let mut outline = Outline::default();
    for chain in socket.dump_table_objects(NFT_MSG_GETCHAIN, NFT_MSG_NEWCHAIN)? {
        if let Some(name) = string_attr(&chain, NFTA_CHAIN_NAME) {
            outline.chains.entry(name).or_default();
        }
    }
    for rule in socket.dump_table_objects(NFT_MSG_GETRULE, NFT_MSG_NEWRULE)? {
        if let Some(chain) = string_attr(&rule, NFTA_RULE_CHAIN) {
            *outline.chains.entry(chain).or_default() += 1;
        }
    }
    for set in socket.dump_table_objects(NFT_MSG_GETSET, NFT_MSG_NEWSET)? {
        let flags = attr(&set, NFTA_SET_FLAGS)
            .and_then(|v| v.get(..4))
            .map_or(0, |v| u32::from_be_bytes(v.try_into().expect("4 bytes")));
        if flags & NFT_SET_ANONYMOUS != 0 {
            continue;
        }
        if let Some(name) = string_attr(&set, NFTA_SET_NAME) {
            outline.sets.insert(name);
        }
    }
    Ok(outline)
}

/// The current ruleset generation of the calling thread's network namespace.
pub fn generation() -> io::Result<u32> {
    let socket = Socket::open()?;
    socket.send(&message(
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN,
        libc::NLM_F_REQUEST as u16,
        0,
        |_| {},
    ))?;
    socket.receive_generation()
}

/// Applies `edits` as one transaction, deletions first, provided the ruleset is still at
/// `generation`; returns the generation after the commit.
pub fn edit_elements(generation: u32, edits: &[SetEdit]) -> io::Result<u32> {
    let mut batch = message(NFNL_MSG_BATCH_BEGIN, libc::NLM_F_REQUEST as u16, 0, |m| {
        m.attr(NFNL_BATCH_GENID, &generation.to_be_bytes());
    });
    // The batch header's res_id names the subsystem, in network order.
    batch[NLMSG_HDRLEN + 2..NLMSG_HDRLEN + 4].copy_from_slice(&NFNL_SUBSYS_NFTABLES.to_be_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_CREATE) as u16;
    for (kind, pick) in [
        (
            NFT_MSG_DELSETELEM,
            (|e: &SetEdit| &e.delete) as fn(&SetEdit) -> &Vec<IpNet>,
        ),
        (NFT_MSG_NEWSETELEM, |e: &SetEdit| &e.add),
    ] {
        for edit in edits {
            for chunk in pick(edit).chunks(PREFIXES_PER_MESSAGE) {
                let kind = (NFNL_SUBSYS_NFTABLES << 8) | kind;
                batch.extend(message(kind, flags, NFPROTO_INET, |m| {
                    m.attr(NFTA_SET_ELEM_LIST_TABLE, &c_string(NFT_TABLE));
                    m.attr(NFTA_SET_ELEM_LIST_SET, &c_string(&edit.set));
                    m.nest(NFTA_SET_ELEM_LIST_ELEMENTS, |m| {
                        for net in chunk {
                            interval_elements(m, net);
                        }
                    });
                }));
            }
        }
    }
    let mut end = message(NFNL_MSG_BATCH_END, libc::NLM_F_REQUEST as u16, 0, |_| {});
    end[NLMSG_HDRLEN + 2..NLMSG_HDRLEN + 4].copy_from_slice(&NFNL_SUBSYS_NFTABLES.to_be_bytes());
    batch.extend(end);

    let socket = Socket::open()?;
    socket.reserve_send_buffer(batch.len())?;
    // The kernel processes the batch inside this call and queues any error before returning;
    // asking for the generation afterwards both flushes those errors to us and tells whether
    // the transaction was committed.
    socket.send(&batch)?;
    socket.send(&message(
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN,
        libc::NLM_F_REQUEST as u16,
        0,
        |_| {},
    ))?;
    let now = socket.receive_generation()?;
    if now != generation.wrapping_add(1) {
        return Err(io::Error::other(format!(
            "ruleset generation {now} after the element batch, expected {}",
            generation.wrapping_add(1)
        )));
    }
    Ok(now)
}

#[cfg(test)]
mod kernel_tests {
    use super::*;

    /// A namespace holding masq's table with an empty interval set `s`.
    fn table_with_a_set(role: &str) -> masq_testbed::Netns {
        masq_testbed::require(&["nft"]);
        let ns = masq_testbed::Netns::new(role).unwrap();
        let set = "{ type ipv4_addr; flags interval; }";
        ns.exec("nft", &["add", "table", "inet", NFT_TABLE])
            .unwrap();
        ns.exec("nft", &["add", "set", "inet", NFT_TABLE, "s", set])
            .unwrap();
        ns
    }

    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn a_batch_planned_at_an_older_generation_is_refused() {
        let ns = table_with_a_set("nlgen");
        let nft = |args: &[&str]| ns.exec("nft", args).unwrap();
        let edit = |add: &str| SetEdit {
            set: "s".into(),
            delete: Vec::new(),
            add: vec![add.parse().unwrap()],
        };
        let first = ns.enter(generation).unwrap().unwrap();
        nft(&["add", "table", "inet", "someone-else"]);
        let refused = ns
            .enter(|| edit_elements(first, &[edit("10.0.0.0/8")]))
            .unwrap()
            .unwrap_err();
        assert_eq!(refused.raw_os_error(), Some(libc::ERESTART), "{refused}");

        let now = ns.enter(generation).unwrap().unwrap();
        assert_eq!(now, first.wrapping_add(1), "one commit, one generation");
        let after = ns
            .enter(|| edit_elements(now, &[edit("10.0.0.0/8")]))
            .unwrap()
            .unwrap();
        assert_eq!(after, now.wrapping_add(1));
        let listing = nft(&["list", "set", "inet", NFT_TABLE, "s"]);
        assert!(listing.contains("10.0.0.0/8"), "{listing}");
    }

    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn the_outline_counts_chains_rules_and_named_sets_of_masqs_table_only() {
        let ns = table_with_a_set("nlout");
        let nft = |args: &[&str]| ns.exec("nft", args).unwrap();
        let outline_now = || ns.enter(outline).unwrap().unwrap();
        nft(&["add", "element", "inet", NFT_TABLE, "s", "{ 10.0.0.0/8 }"]);
        nft(&[
            "add",
            "chain",
            "inet",
            NFT_TABLE,
            "post",
            "{ type nat hook postrouting priority 100; }",
        ]);
        // The second rule carries an anonymous set, as masq's masquerade rules do.
        for rule in ["ip daddr @s return", "meta l4proto { tcp, udp } return"] {
            nft(&["add", "rule", "inet", NFT_TABLE, "post", rule]);
        }
        nft(&["add", "chain", "inet", NFT_TABLE, "empty"]);
        // Someone else's table with a chain and a set of the same names.
        nft(&["add", "table", "inet", "other"]);
        nft(&["add", "chain", "inet", "other", "post"]);
        nft(&["add", "set", "inet", "other", "s", "{ type ipv4_addr; }"]);

        let outline = outline_now();
        assert_eq!(
            outline.chains,
            BTreeMap::from([("empty".to_string(), 0), ("post".to_string(), 2)])
        );
        assert_eq!(outline.sets, BTreeSet::from(["s".to_string()]));

        nft(&["flush", "chain", "inet", NFT_TABLE, "post"]);
        assert_eq!(outline_now().chains["post"], 0);
        nft(&["delete", "table", "inet", NFT_TABLE]);
        assert_eq!(outline_now(), Outline::default());
    }
}
