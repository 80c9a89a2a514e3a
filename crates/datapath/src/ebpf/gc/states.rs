//! What the GC knows of a flow: its state (and so its lifetime) and its kind.

use std::time::Duration;

use crate::ebpf::types::{
    NAT_F_CLOSING, NAT_F_INBOUND, NAT_F_PASS, NAT_F_REPLIED, PROTO_TCP, PROTO_UDP,
};

/// How long an idle flow is kept, by state (the table in [`super`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatTimeouts {
    /// TCP without a reply seen (conntrack's SYN_SENT is 120 s, Cilium's SYN timeout 60 s).
    pub tcp_syn: Duration,
    /// TCP with replies seen.
    pub tcp_established: Duration,
    /// TCP after a FIN or RST.
    pub tcp_closing: Duration,
    /// UDP without a reply seen.
    pub udp: Duration,
    /// UDP with replies seen.
    pub udp_replied: Duration,
    /// ICMP echo.
    pub icmp: Duration,
}

impl Default for NatTimeouts {
    fn default() -> Self {
        NatTimeouts {
            tcp_syn: Duration::from_secs(60),
            tcp_established: Duration::from_secs(6 * 3600),
            tcp_closing: Duration::from_secs(10),
            udp: Duration::from_secs(30),
            udp_replied: Duration::from_secs(120),
            icmp: Duration::from_secs(30),
        }
    }
}

/// The state of a flow, from its protocol and its halves' flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FlowState {
    /// TCP, no reply seen.
    TcpSynSent,
    /// TCP, replied.
    TcpEstablished,
    /// TCP, FIN or RST seen.
    TcpClosing,
    /// UDP, no reply seen.
    UdpUnreplied,
    /// UDP, replied.
    UdpReplied,
    /// ICMP echo.
    Icmp,
}

impl FlowState {
    /// Every state.
    pub const ALL: [FlowState; 6] = [
        FlowState::TcpSynSent,
        FlowState::TcpEstablished,
        FlowState::TcpClosing,
        FlowState::UdpUnreplied,
        FlowState::UdpReplied,
        FlowState::Icmp,
    ];
    pub(super) const COUNT: usize = FlowState::ALL.len();

    /// The state of a flow of `proto` whose halves carry `flags` (ORed).
    pub fn of(proto: u8, flags: u8) -> FlowState {
        let replied = flags & NAT_F_REPLIED != 0;
        match proto {
            PROTO_TCP if flags & NAT_F_CLOSING != 0 => FlowState::TcpClosing,
            PROTO_TCP if replied => FlowState::TcpEstablished,
            PROTO_TCP => FlowState::TcpSynSent,
            PROTO_UDP if replied => FlowState::UdpReplied,
            PROTO_UDP => FlowState::UdpUnreplied,
            _ => FlowState::Icmp,
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            FlowState::TcpSynSent => "tcp-syn-sent",
            FlowState::TcpEstablished => "tcp-established",
            FlowState::TcpClosing => "tcp-closing",
            FlowState::UdpUnreplied => "udp-unreplied",
            FlowState::UdpReplied => "udp-replied",
            FlowState::Icmp => "icmp",
        }
    }

    /// How long a flow in this state may stay idle.
    pub fn timeout(self, t: &NatTimeouts) -> Duration {
        match self {
            FlowState::TcpSynSent => t.tcp_syn,
            FlowState::TcpEstablished => t.tcp_established,
            FlowState::TcpClosing => t.tcp_closing,
            FlowState::UdpUnreplied => t.udp,
            FlowState::UdpReplied => t.udp_replied,
            FlowState::Icmp => t.icmp,
        }
    }
}

/// What a flow-table entry is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FlowKind {
    /// A masqueraded flow (a pair of halves).
    Translated,
    /// A pod's flow to a kept destination, left untranslated.
    Kept,
    /// A flow that began outside, towards a pod, left untranslated.
    Inbound,
    /// A port of the node's own flow, reserved against pod translations.
    Host,
}

impl FlowKind {
    /// Every kind.
    pub const ALL: [FlowKind; 4] = [
        FlowKind::Translated,
        FlowKind::Kept,
        FlowKind::Inbound,
        FlowKind::Host,
    ];
    pub(super) const COUNT: usize = FlowKind::ALL.len();

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            FlowKind::Translated => "translated",
            FlowKind::Kept => "kept",
            FlowKind::Inbound => "inbound",
            FlowKind::Host => "host",
        }
    }

    pub(super) fn of_forward(flags: u8) -> FlowKind {
        match (flags & NAT_F_PASS != 0, flags & NAT_F_INBOUND != 0) {
            (false, _) => FlowKind::Translated,
            (true, false) => FlowKind::Kept,
            (true, true) => FlowKind::Inbound,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::types::PROTO_ICMP;

    #[test]
    fn states_follow_the_flags() {
        let t = NatTimeouts::default();
        let cases = [
            (PROTO_TCP, 0, FlowState::TcpSynSent, 60),
            (
                PROTO_TCP,
                NAT_F_REPLIED,
                FlowState::TcpEstablished,
                6 * 3600,
            ),
            (
                PROTO_TCP,
                NAT_F_REPLIED | NAT_F_CLOSING,
                FlowState::TcpClosing,
                10,
            ),
            (PROTO_UDP, 0, FlowState::UdpUnreplied, 30),
            (PROTO_UDP, NAT_F_REPLIED, FlowState::UdpReplied, 120),
            (PROTO_ICMP, NAT_F_REPLIED, FlowState::Icmp, 30),
        ];
        for (proto, flags, state, secs) in cases {
            assert_eq!(FlowState::of(proto, flags), state);
            assert_eq!(state.timeout(&t), Duration::from_secs(secs));
        }
    }
}
