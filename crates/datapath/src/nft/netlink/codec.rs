//! The nfnetlink wire format masq's requests need: message and attribute building, the
//! encoding of a prefix as interval elements, and reading answers back.

use std::io;

use ipnet::IpNet;

pub(super) const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub(super) const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
pub(super) const NFNL_MSG_BATCH_END: u16 = 0x11;
pub(super) const NFNL_BATCH_GENID: u16 = 1;
pub(super) const NFT_MSG_NEWCHAIN: u16 = 3;
pub(super) const NFT_MSG_GETCHAIN: u16 = 4;
pub(super) const NFT_MSG_NEWRULE: u16 = 6;
pub(super) const NFT_MSG_GETRULE: u16 = 7;
pub(super) const NFT_MSG_NEWSET: u16 = 9;
pub(super) const NFT_MSG_GETSET: u16 = 10;
pub(super) const NFT_MSG_NEWSETELEM: u16 = 12;
pub(super) const NFT_MSG_DELSETELEM: u16 = 14;
pub(super) const NFT_MSG_NEWGEN: u16 = 15;
pub(super) const NFT_MSG_GETGEN: u16 = 16;
pub(super) const NFTA_GEN_ID: u16 = 1;
/// The table attribute is the first of chains, rules and sets alike.
pub(super) const NFTA_TABLE_OF_OBJECT: u16 = 1;
pub(super) const NFTA_CHAIN_NAME: u16 = 3;
pub(super) const NFTA_RULE_CHAIN: u16 = 2;
pub(super) const NFTA_SET_NAME: u16 = 2;
pub(super) const NFTA_SET_FLAGS: u16 = 3;
pub(super) const NFT_SET_ANONYMOUS: u32 = 1;
pub(super) const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub(super) const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub(super) const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
pub(super) const NFTA_LIST_ELEM: u16 = 1;
pub(super) const NFTA_SET_ELEM_KEY: u16 = 1;
pub(super) const NFTA_SET_ELEM_FLAGS: u16 = 3;
pub(super) const NFTA_DATA_VALUE: u16 = 1;
pub(super) const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
pub(super) const NLA_F_NESTED: u16 = 1 << 15;
pub(super) const NFPROTO_INET: u8 = 1;
pub(super) const NLMSG_HDRLEN: usize = 16;

/// The start of `net`, and the address after it as an interval end.
pub(super) fn interval_elements(m: &mut Builder, net: &IpNet) {
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

pub(super) fn c_string(text: &str) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    bytes.push(0);
    bytes
}

/// A netlink message: header, nfgenmsg, attributes.
pub(super) fn message(
    kind: u16,
    flags: u16,
    family: u8,
    body: impl FnOnce(&mut Builder),
) -> Vec<u8> {
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

pub(super) struct Builder(pub(super) Vec<u8>);

impl Builder {
    pub(super) fn attr(&mut self, kind: u16, payload: &[u8]) {
        let len = u16::try_from(4 + payload.len()).expect("attributes are small");
        self.0.extend_from_slice(&len.to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(payload);
        self.pad();
    }

    pub(super) fn nest(&mut self, kind: u16, body: impl FnOnce(&mut Builder)) {
        let start = self.0.len();
        self.0.extend_from_slice(&[0; 2]);
        self.0
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        body(self);
        let len = u16::try_from(self.0.len() - start).expect("nested attributes under 64 KiB");
        self.0[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    pub(super) fn pad(&mut self) {
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
    }
}

/// The netlink messages in one datagram, as (type, payload after the header).
pub(super) fn messages(mut rest: &[u8]) -> io::Result<Vec<(u16, &[u8])>> {
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
pub(super) fn error_code(payload: &[u8]) -> i32 {
    payload.get(0..4).map_or(-libc::EPROTO, |code| {
        i32::from_ne_bytes(code.try_into().expect("4 bytes"))
    })
}

/// The payload of the first attribute of `kind` in `attrs`.
pub(super) fn attr(mut attrs: &[u8], kind: u16) -> Option<&[u8]> {
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
pub(super) fn string_attr(attrs: &[u8], kind: u16) -> Option<String> {
    let bytes = attr(attrs, kind)?;
    let text = bytes.split(|b| *b == 0).next().unwrap_or_default();
    Some(String::from_utf8_lossy(text).into_owned())
}

/// NFTA_GEN_ID from a NEWGEN payload (after its nfgenmsg).
pub(super) fn generation_of(payload: &[u8]) -> Option<u32> {
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
