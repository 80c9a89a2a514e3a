//! Collapsing a CIDR list into the fewest equivalent CIDRs, for interval sets and tries that
//! reject overlapping elements.

use ipnet::IpNet;

/// The smallest list of CIDRs covering exactly the same addresses as `cidrs`: duplicates and
/// CIDRs inside others dropped, adjacent ones joined. IPv4 first, then IPv6, each sorted.
///
/// ```
/// use ipnet::IpNet;
/// let cidrs: Vec<IpNet> = ["10.0.0.0/9", "10.128.0.0/9", "10.1.0.0/16", "192.168.0.0/16"]
///     .iter().map(|c| c.parse().unwrap()).collect();
/// let merged: Vec<String> = masq_decision::merge_cidrs(&cidrs).iter().map(|c| c.to_string()).collect();
/// assert_eq!(merged, ["10.0.0.0/8", "192.168.0.0/16"]);
/// ```
pub fn merge_cidrs(cidrs: &[IpNet]) -> Vec<IpNet> {
    IpNet::aggregate(&cidrs.to_vec())
}
