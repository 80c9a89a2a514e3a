//! The clsact filters of one hook, read with an `RTM_GETTFILTER` dump over netlink (aya cannot
//! list them, and the datapath runs no `tc` to discover anything).
//!
//! The kernel dumps a hook's filters in the order it runs them: by priority, lower first
//! (`tcf_chain_tp_find` keeps the chain's classifiers sorted), and within one priority newest
//! first (`cls_bpf_change` adds a new filter at the head of its list with `list_add_rcu`; a
//! replaced one keeps its place with `list_replace_rcu`). So the order of the result is the order
//! packets meet the filters.

use std::io;

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::tc::{
    TcAttribute, TcBpfFlags, TcFilterBpfOption, TcHandle, TcHeader, TcMessage, TcOption,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// `ETH_P_ALL`, the protocol of masq's filters (aya attaches with it).
pub const ETH_P_ALL: u16 = 0x0003;
/// The classifier kind of BPF filters.
pub const BPF_KIND: &str = "bpf";

/// One filter on a clsact hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClsactFilter {
    /// The filter priority (`tc filter ... prio`); lower runs first.
    pub priority: u16,
    /// The protocol it matches (host order; [`ETH_P_ALL`] for every frame).
    pub protocol: u16,
    /// The classifier kind (`bpf`, `u32`, `flower`, …; empty when it could not be read).
    pub kind: String,
    /// The filter handle.
    pub handle: u32,
    /// A BPF filter's program name, as given when it was attached.
    pub name: Option<String>,
    /// A BPF filter's program id.
    pub id: Option<u32>,
    /// A BPF filter in direct-action mode (its return value is the verdict).
    pub direct_action: bool,
}

/// The filters of `ifindex`'s clsact `ingress` (or egress) hook, in the order they run. An
/// interface without a clsact qdisc has none. Runs in the caller's network namespace.
pub fn clsact_filters(ifindex: u32, ingress: bool) -> io::Result<Vec<ClsactFilter>> {
    let mut request = TcMessage::with_index(ifindex as i32);
    request.header.parent = TcHandle {
        major: TcHandle::INGRESS.major,
        minor: if ingress {
            TcHandle::MIN_INGRESS
        } else {
            TcHandle::MIN_EGRESS
        },
    };
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = 1;
    let mut message = NetlinkMessage::new(
        header,
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::GetTrafficFilter(request)),
    );
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);

    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    socket.send(&bytes, 0)?;
    let mut filters = Vec::new();
    // Bounded: the kernel ends every dump with NLMSG_DONE or an error.
    for _ in 0..100_000 {
        let (datagram, _) = socket.recv_from_full()?;
        if datagram.is_empty() {
            break;
        }
        if read_datagram(&datagram, &mut filters)? {
            return Ok(filters);
        }
    }
    Err(io::Error::other("the filter dump did not end"))
}

/// Adds the filters in one datagram of the dump to `filters`; true at the end of the dump.
fn read_datagram(datagram: &[u8], filters: &mut Vec<ClsactFilter>) -> io::Result<bool> {
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    const RTM_NEWTFILTER: u16 = 44;
    let mut offset = 0;
    while offset < datagram.len() {
        let buffer = NetlinkBuffer::new_checked(&datagram[offset..]).map_err(io::Error::other)?;
        let length = buffer.length() as usize;
        match buffer.message_type() {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(
                    &datagram[offset..offset + length],
                )
                .map_err(io::Error::other)?;
                if let NetlinkPayload::Error(e) = message.payload {
                    if e.code.is_some() {
                        return Err(e.to_io());
                    }
                }
                return Ok(true);
            }
            RTM_NEWTFILTER => {
                if let Some(filter) = parse_filter(buffer.payload()) {
                    filters.push(filter);
                }
            }
            _ => {}
        }
        // Messages are 4-byte aligned.
        offset += (length + 3) & !3;
        if length == 0 {
            break;
        }
    }
    Ok(false)
}

/// One `RTM_NEWTFILTER` payload as a filter of chain 0 (the one packets enter; filters of other
/// chains run only when an action jumps there). A filter whose attributes this crate cannot
/// decode (an unknown classifier's options) is still listed, from its header, with no kind.
fn parse_filter(payload: &[u8]) -> Option<ClsactFilter> {
    use netlink_packet_core::Parseable;
    let (header, attributes) = match TcMessage::parse(payload) {
        Ok(message) => message.into_parts(),
        Err(_) => (TcHeader::parse(payload).ok()?, Vec::new()),
    };
    // The protocol is the low half of tcm_info, in network order.
    let mut filter = ClsactFilter {
        priority: (header.info >> 16) as u16,
        protocol: u16::from_be(header.info as u16),
        kind: String::new(),
        handle: u32::from(header.handle),
        name: None,
        id: None,
        direct_action: false,
    };
    if filter.handle == 0 {
        // The classifier itself (one per priority), not a filter.
        return None;
    }
    for attribute in attributes {
        match attribute {
            TcAttribute::Chain(chain) if chain != 0 => return None,
            TcAttribute::Kind(kind) => filter.kind = kind,
            TcAttribute::Options(options) => {
                for option in options {
                    match option {
                        TcOption::Bpf(TcFilterBpfOption::ProgName(name)) => {
                            filter.name = Some(name)
                        }
                        TcOption::Bpf(TcFilterBpfOption::ProgId(id)) => filter.id = Some(id),
                        TcOption::Bpf(TcFilterBpfOption::Flags(flags)) => {
                            filter.direct_action = flags.contains(TcBpfFlags::DirectAction)
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(filter)
}
