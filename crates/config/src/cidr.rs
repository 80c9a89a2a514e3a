//! CIDR strings as the upstream agents read them (Go's `net.ParseCIDR`), with messages that say
//! how to fix them: the aligned form for host bits, a prefix length for a bare address.

use std::net::IpAddr;

use ipnet::IpNet;

/// Why a string is not an acceptable CIDR. `Display` names the value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// Not ADDRESS/LENGTH at all.
    #[error("{value:?} is not a CIDR ({why})")]
    Malformed {
        /// The value as written.
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// An address without `/length`.
    #[error("{value:?} is an address, not a CIDR; add a prefix length, e.g. {value}/{full_len}")]
    BareAddress {
        /// The value as written.
        value: String,
        /// 32 or 128.
        full_len: u8,
    },
    /// Bits set after the prefix length.
    #[error("{value:?} has host bits set; did you mean {aligned}?")]
    HostBits {
        /// The value as written.
        value: String,
        /// The same prefix with the host bits cleared.
        aligned: IpNet,
    },
}

/// Parses `ADDRESS/LENGTH`, rejecting host bits and bare addresses.
///
/// ```
/// assert_eq!(masq_config::parse_cidr("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
/// let err = masq_config::parse_cidr("10.0.0.1/8").unwrap_err();
/// assert!(err.to_string().contains("10.0.0.0/8"));
/// ```
pub fn parse_cidr(text: &str) -> Result<IpNet, CidrError> {
    let malformed = |why: String| CidrError::Malformed {
        value: text.to_string(),
        why,
    };
    let Some((addr_text, len_text)) = text.split_once('/') else {
        return match text.parse::<IpAddr>() {
            Ok(addr) => Err(CidrError::BareAddress {
                value: text.to_string(),
                full_len: full_len(addr),
            }),
            Err(_) => Err(malformed(
                "expected ADDRESS/LENGTH, e.g. 10.0.0.0/8".to_string(),
            )),
        };
    };
    let addr: IpAddr = addr_text
        .parse()
        .map_err(|_| malformed(format!("{addr_text:?} is not an IP address")))?;
    let len: u8 = len_text
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| len_text.parse().ok())
        .flatten()
        .ok_or_else(|| malformed(format!("prefix length {len_text:?} is not a number")))?;
    let net = IpNet::new(addr, len).map_err(|_| {
        malformed(format!(
            "prefix length {len} is over {} for this address",
            full_len(addr)
        ))
    })?;
    if net.addr() != net.network() {
        return Err(CidrError::HostBits {
            value: text.to_string(),
            aligned: net.trunc(),
        });
    }
    Ok(net)
}

fn full_len(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_aligned_v4_and_v6() {
        assert_eq!(parse_cidr("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_cidr("1.2.3.4/32").unwrap().to_string(), "1.2.3.4/32");
        assert_eq!(parse_cidr("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
        assert_eq!(parse_cidr("fd00::/8").unwrap().to_string(), "fd00::/8");
    }

    #[test]
    fn host_bits_name_the_aligned_form() {
        let err = parse_cidr("10.0.0.1/8").unwrap_err();
        assert_eq!(
            err,
            CidrError::HostBits {
                value: "10.0.0.1/8".into(),
                aligned: "10.0.0.0/8".parse().unwrap()
            }
        );
        assert!(err.to_string().contains("did you mean 10.0.0.0/8"));
        let v6 = parse_cidr("fd00::1/8").unwrap_err();
        assert!(v6.to_string().contains("fd00::/8"), "{v6}");
    }

    #[test]
    fn bare_address_asks_for_a_length() {
        let err = parse_cidr("10.1.2.3").unwrap_err();
        assert!(matches!(err, CidrError::BareAddress { full_len: 32, .. }));
        assert!(err.to_string().contains("10.1.2.3/32"), "{err}");
        assert!(matches!(
            parse_cidr("::1").unwrap_err(),
            CidrError::BareAddress { full_len: 128, .. }
        ));
    }

    #[test]
    fn malformed_values_are_named() {
        for bad in [
            "10.256.0.0/16",
            "abcdefg",
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/x",
            " 10.0.0.0/8",
            "",
            "fd00::/129",
        ] {
            let err = parse_cidr(bad).unwrap_err();
            assert!(
                matches!(err, CidrError::Malformed { .. }),
                "{bad:?}: {err:?}"
            );
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }
}
