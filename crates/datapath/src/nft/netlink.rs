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

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use ipnet::IpNet;

use crate::names::NFT_TABLE;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_BATCH_GENID: u16 = 1;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_GETSET: u16 = 10;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
const NFTA_GEN_ID: u16 = 1;
/// The table attribute is the first of chains, rules and sets alike.
const NFTA_TABLE_OF_OBJECT: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFT_SET_ANONYMOUS: u32 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_DATA_VALUE: u16 = 1;
const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
const NLA_F_NESTED: u16 = 1 << 15;
const NFPROTO_INET: u8 = 1;
const NLMSG_HDRLEN: usize = 16;
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

/// The start of `net`, and the address after it as an interval end.
fn interval_elements(m: &mut Builder, net: &IpNet) {
    let (start, end): (Vec<u8>, Option<Vec<u8>>) = match net {
        IpNet::V4(n) => {
            let after = u32::from(n.broadcast()).checked_add(1);
            (
                n.network().octets().to_vec(),
                after.map(|a| a.to_be_bytes().to_vec()),
            )
        }
        IpNet::V6(n) => {
            let after = u128::from(n.broadcast()).checked_add(1);
            (
                n.network().octets().to_vec(),
                after.map(|a| a.to_be_bytes().to_vec()),
            )
        }
    };
    let element = |m: &mut Builder, key: &[u8], flags: u32| {
        m.nest(NFTA_LIST_ELEM, |m| {
            m.nest(NFTA_SET_ELEM_KEY, |m| m.attr(NFTA_DATA_VALUE, key));
            if flags != 0 {
                m.attr(NFTA_SET_ELEM_FLAGS, &flags.to_be_bytes());
            }
        });
    };
    element(m, &start, 0);
    if let Some(end) = end {
        element(m, &end, NFT_SET_ELEM_INTERVAL_END);
    }
}

fn c_string(text: &str) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    bytes.push(0);
    bytes
}

/// A netlink message: header, nfgenmsg, attributes.
fn message(kind: u16, flags: u16, family: u8, body: impl FnOnce(&mut Builder)) -> Vec<u8> {
    let mut m = Builder(Vec::with_capacity(256));
    m.0.extend_from_slice(&[0; NLMSG_HDRLEN]);
    // nfgenmsg: family, version 0, res_id 0.
    m.0.extend_from_slice(&[family, 0, 0, 0]);
    body(&mut m);
    let mut bytes = m.0;
    let len = u32::try_from(bytes.len()).expect("messages are small");
    bytes[0..4].copy_from_slice(&len.to_ne_bytes());
    bytes[4..6].copy_from_slice(&kind.to_ne_bytes());
    bytes[6..8].copy_from_slice(&flags.to_ne_bytes());
    // Sequence number and port id stay 0: replies are matched by order, not number.
    bytes
}

struct Builder(Vec<u8>);

impl Builder {
    fn attr(&mut self, kind: u16, payload: &[u8]) {
        let len = u16::try_from(4 + payload.len()).expect("attributes are small");
        self.0.extend_from_slice(&len.to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(payload);
        self.pad();
    }

    fn nest(&mut self, kind: u16, body: impl FnOnce(&mut Builder)) {
        let start = self.0.len();
        self.0.extend_from_slice(&[0; 2]);
        self.0
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        body(self);
        let len = u16::try_from(self.0.len() - start).expect("nested attributes under 64 KiB");
        self.0[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn pad(&mut self) {
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
    }
}

struct Socket(OwnedFd);

impl Socket {
    fn open() -> io::Result<Socket> {
        // SAFETY: plain socket(2); the descriptor is owned from here on.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let socket = Socket(unsafe { OwnedFd::from_raw_fd(fd) });
        // Bounded waits: a kernel that never answers is an error, not a hang.
        let timeout = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        socket.set_option(libc::SO_RCVTIMEO, &timeout)?;
        Ok(socket)
    }

    fn set_option<T>(&self, option: libc::c_int, value: &T) -> io::Result<()> {
        // SAFETY: value points to a live T of the given size.
        let rc = unsafe {
            libc::setsockopt(
                self.0.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (value as *const T).cast(),
                libc::socklen_t::try_from(std::mem::size_of::<T>()).expect("small"),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// A batch goes to the kernel in one datagram, which must fit the send buffer.
    fn reserve_send_buffer(&self, len: usize) -> io::Result<()> {
        const DEFAULT_ENOUGH: usize = 128 * 1024;
        if len < DEFAULT_ENOUGH {
            return Ok(());
        }
        let size = libc::c_int::try_from(len * 2).map_err(io::Error::other)?;
        self.set_option(libc::SO_SNDBUFFORCE, &size)
    }

    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        // SAFETY: an all-zero sockaddr_nl addresses the kernel.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: bytes and kernel outlive the call.
        let sent = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_nl>()).expect("small"),
            )
        };
        match usize::try_from(sent) {
            Ok(n) if n == bytes.len() => Ok(()),
            Ok(n) => Err(io::Error::other(format!(
                "sent {n} of {} bytes",
                bytes.len()
            ))),
            Err(_) => Err(io::Error::last_os_error()),
        }
    }

    /// One datagram from the kernel into `buffer`; its length.
    fn receive(&self, buffer: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buffer is writable for its length.
        let received = unsafe {
            libc::recv(
                self.0.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                0,
            )
        };
        usize::try_from(received).map_err(|_| io::Error::last_os_error())
    }

    /// Every object of kind `answer` that a dump request `request` returns for masq's inet
    /// table, as its attributes (after the nfgenmsg). A table that does not exist has none.
    fn dump_table_objects(&self, request: u16, answer: u16) -> io::Result<Vec<Vec<u8>>> {
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
        self.send(&message(
            (NFNL_SUBSYS_NFTABLES << 8) | request,
            flags,
            NFPROTO_INET,
            |m| m.attr(NFTA_TABLE_OF_OBJECT, &c_string(NFT_TABLE)),
        ))?;
        let mut objects = Vec::new();
        let mut buffer = vec![0u8; 64 * 1024];
        // Bounded: a dump of masq's table is a few datagrams, or the socket times out.
        for _ in 0..4096 {
            let received = self.receive(&mut buffer)?;
            for (kind, payload) in messages(&buffer[..received])? {
                if kind == libc::NLMSG_DONE as u16 {
                    return Ok(objects);
                }
                if kind == libc::NLMSG_ERROR as u16 {
                    match error_code(payload) {
                        0 => {}
                        code if code == -libc::ENOENT => return Ok(Vec::new()),
                        code => return Err(io::Error::from_raw_os_error(-code)),
                    }
                } else if kind == (NFNL_SUBSYS_NFTABLES << 8) | answer {
                    let attrs = payload.get(4..).unwrap_or_default();
                    // Dumps of chains list every table of the family: keep masq's.
                    if string_attr(attrs, NFTA_TABLE_OF_OBJECT).as_deref() == Some(NFT_TABLE) {
                        objects.push(attrs.to_vec());
                    }
                }
            }
        }
        Err(io::Error::other("the dump did not end"))
    }

    /// Reads until the NEWGEN answer; an error the kernel reported first fails the call.
    fn receive_generation(&self) -> io::Result<u32> {
        let mut buffer = vec![0u8; 64 * 1024];
        // Bounded: the answer comes within a few datagrams, or the socket times out.
        for _ in 0..1024 {
            let received = self.receive(&mut buffer)?;
            for (kind, payload) in messages(&buffer[..received])? {
                if kind == libc::NLMSG_ERROR as u16 {
                    let code = error_code(payload);
                    if code != 0 {
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                } else if kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN {
                    return generation_of(payload)
                        .ok_or_else(|| io::Error::other("generation answer without an id"));
                }
            }
        }
        Err(io::Error::other("no generation answer"))
    }
}

/// The netlink messages in one datagram, as (type, payload after the header).
fn messages(mut rest: &[u8]) -> io::Result<Vec<(u16, &[u8])>> {
    let mut out = Vec::new();
    while rest.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes(rest[4..6].try_into().expect("2 bytes"));
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(io::Error::other("truncated netlink message"));
        }
        out.push((kind, &rest[NLMSG_HDRLEN..len]));
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    Ok(out)
}

/// The (negative) error of an NLMSG_ERROR payload; 0 is an acknowledgement.
fn error_code(payload: &[u8]) -> i32 {
    payload.get(0..4).map_or(-libc::EPROTO, |code| {
        i32::from_ne_bytes(code.try_into().expect("4 bytes"))
    })
}

/// The payload of the first attribute of `kind` in `attrs`.
fn attr(mut attrs: &[u8], kind: u16) -> Option<&[u8]> {
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes(attrs[0..2].try_into().ok()?));
        let this = u16::from_ne_bytes(attrs[2..4].try_into().ok()?) & !NLA_F_NESTED;
        if len < 4 || len > attrs.len() {
            return None;
        }
        if this == kind {
            return Some(&attrs[4..len]);
        }
        attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
    }
    None
}

/// A NUL-terminated string attribute.
fn string_attr(attrs: &[u8], kind: u16) -> Option<String> {
    let bytes = attr(attrs, kind)?;
    let text = bytes.split(|b| *b == 0).next().unwrap_or_default();
    Some(String::from_utf8_lossy(text).into_owned())
}

/// NFTA_GEN_ID from a NEWGEN payload (after its nfgenmsg).
fn generation_of(payload: &[u8]) -> Option<u32> {
    let id = attr(payload.get(4..)?, NFTA_GEN_ID)?;
    Some(u32::from_be_bytes(id.get(..4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elements(net: &str) -> Vec<u8> {
        let mut m = Builder(Vec::new());
        interval_elements(&mut m, &net.parse().unwrap());
        m.0
    }

    #[test]
    fn a_prefix_is_its_start_and_the_next_address_as_an_end() {
        let bytes = elements("10.0.0.0/8");
        // Two list elements: the first with key 10.0.0.0, the second with 11.0.0.0 and the
        // interval-end flag.
        assert_eq!(bytes.len(), 2 * 16 + 8);
        assert_eq!(&bytes[12..16], &[10, 0, 0, 0]);
        assert_eq!(&bytes[16 + 12..16 + 16], &[11, 0, 0, 0]);
        assert_eq!(&bytes[32 + 4..40], &NFT_SET_ELEM_INTERVAL_END.to_be_bytes());
    }

    #[test]
    fn a_prefix_reaching_the_top_has_no_end() {
        assert_eq!(elements("255.255.255.255/32").len(), 16);
        assert_eq!(elements("0.0.0.0/0").len(), 16);
        assert_eq!(elements("ffff::/16").len(), 4 + 4 + 4 + 16);
    }

    #[test]
    fn the_generation_is_read_from_its_attribute() {
        let mut payload = vec![0, 0, 0, 0];
        payload.extend_from_slice(&[8, 0, 1, 0]);
        payload.extend_from_slice(&7u32.to_be_bytes());
        assert_eq!(generation_of(&payload), Some(7));
        assert_eq!(generation_of(&payload[..8]), None);
    }
}

#[cfg(test)]
mod kernel_tests {
    use super::*;

    /// A namespace holding masq's table with an empty interval set `s`; None (the reason
    /// printed) without nft.
    fn table_with_a_set(role: &str) -> Option<masq_testbed::Netns> {
        if let Some(reason) = masq_testbed::skip_reason(&["nft"]) {
            eprintln!("skipped: {reason}");
            return None;
        }
        let ns = masq_testbed::Netns::new(role).unwrap();
        let set = "{ type ipv4_addr; flags interval; }";
        ns.exec("nft", &["add", "table", "inet", NFT_TABLE])
            .unwrap();
        ns.exec("nft", &["add", "set", "inet", NFT_TABLE, "s", set])
            .unwrap();
        Some(ns)
    }

    #[test]
    fn a_batch_planned_at_an_older_generation_is_refused() {
        let Some(ns) = table_with_a_set("nlgen") else {
            return;
        };
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
    fn the_outline_counts_chains_rules_and_named_sets_of_masqs_table_only() {
        let Some(ns) = table_with_a_set("nlout") else {
            return;
        };
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
