//! masq's `ip rule`s in the caller's network namespace, read and edited over rtnetlink
//! (`RTM_GETRULE`, `RTM_NEWRULE`, `RTM_DELRULE`): what `ip rule show|add|del` does, without
//! the program.
//!
//! Each call opens its own netlink socket on the calling thread, so it acts in that thread's
//! network namespace (tests enter a namespace on a thread of their own), and drives rtnetlink on
//! a private single-threaded runtime: the datapath calls are blocking, the agent makes them on a
//! blocking thread.

use futures::TryStreamExt;
use netlink_packet_route::route::RouteProtocol;
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleFlags, RuleMessage};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, IpVersion};

use super::PolicyRule;
use crate::names::RULE_PROTOCOL;
use crate::Error;

/// One rule of the kernel's list that is masq's.
#[derive(Debug)]
struct Found {
    /// The rule in masq's terms; `None` for a rule of masq's protocol in another shape (a mask
    /// other than the mark, another selector or action), which no config wants.
    rule: Option<PolicyRule>,
    /// As the kernel listed it: deleting exactly this message deletes exactly that rule.
    message: RuleMessage,
}

/// masq's rules, over netlink in the caller's namespace. Holds no state: every call reads the
/// kernel's list afresh.
#[derive(Clone, Copy, Debug, Default)]
pub struct IpRules;

impl IpRules {
    /// Adds the rules of `wanted` that are missing. Returns whether something was added.
    pub fn add_missing(&self, wanted: &[PolicyRule]) -> Result<bool, Error> {
        if wanted.is_empty() {
            return Ok(false);
        }
        on_netlink("adding masq's ip rules", async |handle| {
            let mut added = false;
            for ipv6 in [false, true] {
                let of_family: Vec<PolicyRule> =
                    wanted.iter().copied().filter(|r| r.ipv6 == ipv6).collect();
                if of_family.is_empty() {
                    continue;
                }
                let installed = installed(&handle, ipv6, &of_family).await?;
                for rule in of_family
                    .iter()
                    .filter(|r| !installed.iter().any(|f| f.rule == Some(**r)))
                {
                    add(&handle, rule).await?;
                    tracing::info!(rule = %rule.text(), "egress routing rule added");
                    added = true;
                }
            }
            Ok(added)
        })
    }

    /// Deletes masq's rules that are not in `wanted` (all of them when it is empty). Returns
    /// whether something was deleted.
    pub fn remove_stale(&self, wanted: &[PolicyRule]) -> Result<bool, Error> {
        on_netlink("removing stale ip rules", async |handle| {
            let mut removed = false;
            for ipv6 in [false, true] {
                let found = match installed(&handle, ipv6, wanted).await {
                    Ok(found) => found,
                    // A kernel without IPv6 has no IPv6 rule to remove.
                    Err(e) if ipv6 => {
                        tracing::debug!(error = %e, "IPv6 rules unreadable, nothing to remove");
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                for stale in found
                    .into_iter()
                    .filter(|f| !f.rule.is_some_and(|r| wanted.contains(&r)))
                {
                    let text = describe(&stale);
                    handle.rule().del(stale.message).execute().await?;
                    tracing::info!(rule = %text, "egress routing rule removed");
                    removed = true;
                }
            }
            Ok(removed)
        })
    }

    /// Whether exactly `wanted` is installed: nothing missing, nothing stale (IPv6 rules are
    /// read only when some are wanted).
    pub fn matches(&self, wanted: &[PolicyRule]) -> Result<bool, Error> {
        on_netlink("reading masq's ip rules", async |handle| {
            let mut found = installed(&handle, false, wanted).await?;
            if wanted.iter().any(|r| r.ipv6) {
                found.extend(installed(&handle, true, wanted).await?);
            }
            let Some(mut installed) = found
                .into_iter()
                .map(|f| f.rule)
                .collect::<Option<Vec<PolicyRule>>>()
            else {
                return Ok(false); // a rule of masq's protocol no config wants
            };
            installed.sort();
            installed.dedup();
            let mut wanted = wanted.to_vec();
            wanted.sort();
            Ok(installed == wanted)
        })
    }
}

/// Runs `work` with a fresh rtnetlink connection of the calling thread's namespace.
fn on_netlink<T>(
    what: &str,
    work: impl AsyncFnOnce(Handle) -> Result<T, rtnetlink::Error>,
) -> Result<T, Error> {
    let failed = |e: &dyn std::fmt::Display| Error::Kernel {
        what: what.to_string(),
        source: std::io::Error::other(e.to_string()),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| failed(&e))?;
    runtime.block_on(async {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(|e| failed(&e))?;
        let driver = tokio::spawn(connection);
        let result = work(handle).await.map_err(|e| failed(&e));
        driver.abort();
        result
    })
}

/// masq's rules of one family: those of its protocol, and those with the exact selector of a
/// rule in `wanted` (added by a kernel that dropped the protocol).
async fn installed(
    handle: &Handle,
    ipv6: bool,
    wanted: &[PolicyRule],
) -> Result<Vec<Found>, rtnetlink::Error> {
    let version = if ipv6 { IpVersion::V6 } else { IpVersion::V4 };
    let listed: Vec<RuleMessage> = handle.rule().get(version).execute().try_collect().await?;
    Ok(listed
        .into_iter()
        .filter_map(|message| classify(message, ipv6, wanted))
        .collect())
}

/// One listed rule as masq's, or `None` when it is someone else's.
fn classify(message: RuleMessage, ipv6: bool, wanted: &[PolicyRule]) -> Option<Found> {
    let header = &message.header;
    // Only a lookup with no selector besides the mark: `from all fwmark M/M lookup T`.
    let mut plain = header.action == RuleAction::ToTable
        && header.src_len == 0
        && header.dst_len == 0
        && header.tos == 0
        && !header.flags.contains(RuleFlags::Invert);
    let mut table = u32::from(header.table);
    let (mut priority, mut mark, mut mask, mut protocol) = (0, None, None, None);
    for attribute in &message.attributes {
        match attribute {
            RuleAttribute::Priority(p) => priority = *p,
            RuleAttribute::FwMark(m) => mark = Some(*m),
            RuleAttribute::FwMask(m) => mask = Some(*m),
            // Tables past 255 come as an attribute (the header then says 252, "compat").
            RuleAttribute::Table(t) => table = *t,
            RuleAttribute::Protocol(p) => protocol = Some(u8::from(*p)),
            // The kernel lists these on every rule; all ones means "not set".
            RuleAttribute::SuppressPrefixLen(u32::MAX)
            | RuleAttribute::SuppressIfGroup(u32::MAX) => {}
            _ => plain = false,
        }
    }
    // The kernel's mask defaults to all ones when only a mark is given.
    let rule = mark
        .filter(|&m| plain && m != 0 && mask.unwrap_or(u32::MAX) == m)
        .map(|mark| PolicyRule {
            ipv6,
            priority,
            mark,
            table,
        });
    if protocol == Some(RULE_PROTOCOL) {
        return Some(Found { rule, message });
    }
    rule.filter(|r| wanted.contains(r)).map(|rule| Found {
        rule: Some(rule),
        message,
    })
}

async fn add(handle: &Handle, rule: &PolicyRule) -> Result<(), rtnetlink::Error> {
    let mut request = handle
        .rule()
        .add()
        // rtnetlink leaves the action unset, which the kernel refuses for an IPv4 lookup.
        .action(RuleAction::ToTable)
        .table_id(rule.table)
        .priority(rule.priority)
        .fw_mark(rule.mark);
    let message = request.message_mut();
    message.header.family = if rule.ipv6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    message.attributes.extend([
        RuleAttribute::FwMask(rule.mark),
        RuleAttribute::Protocol(RouteProtocol::from(RULE_PROTOCOL)),
    ]);
    request.execute().await
}

/// A found rule for the log.
fn describe(found: &Found) -> String {
    match found.rule {
        Some(rule) => rule.text(),
        None => format!("{:?}", found.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rule as the kernel lists it: the attributes every rule carries, then `extra`.
    fn listed(action: RuleAction, extra: &[RuleAttribute]) -> RuleMessage {
        let mut message = RuleMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.action = action;
        message.header.table = 254;
        message.attributes = vec![
            RuleAttribute::Table(254),
            RuleAttribute::SuppressPrefixLen(u32::MAX),
        ];
        message.attributes.extend_from_slice(extra);
        message
    }

    fn rule(priority: u32, mark: u32, table: u32) -> PolicyRule {
        PolicyRule {
            ipv6: false,
            priority,
            mark,
            table,
        }
    }

    fn ours(extra: &[RuleAttribute], wanted: &[PolicyRule]) -> Option<Option<PolicyRule>> {
        classify(listed(RuleAction::ToTable, extra), false, wanted).map(|f| f.rule)
    }

    #[test]
    fn recognises_only_masqs_rules() {
        use RuleAttribute::{FwMark, FwMask, Priority, Protocol, Source, Table};
        let proto = Protocol(RouteProtocol::from(RULE_PROTOCOL));
        let wanted = [rule(1000, 0x1000, 7)];
        // By protocol, whatever is wanted.
        assert_eq!(
            ours(
                &[
                    Priority(1000),
                    FwMark(0x1000),
                    FwMask(0x1000),
                    proto.clone()
                ],
                &[]
            ),
            Some(Some(rule(1000, 0x1000, 254)))
        );
        // By exact selector without the protocol (a kernel before 4.17), only when wanted.
        let selector = [Table(7), Priority(1000), FwMark(0x1000), FwMask(0x1000)];
        assert_eq!(ours(&selector, &wanted), Some(Some(wanted[0])));
        assert_eq!(ours(&selector, &[]), None);
        // Someone else's rules: another mark, a mask wider than the mark, a source selector.
        assert_eq!(
            ours(&[Priority(1001), FwMark(0x80), FwMask(0x80)], &wanted),
            None
        );
        let wide = [Table(7), Priority(1000), FwMark(0x1000)];
        assert_eq!(ours(&wide, &wanted), None);
        let from = [
            Table(7),
            Priority(1000),
            FwMark(0x1000),
            FwMask(0x1000),
            Source([10, 0, 1, 20].into()),
        ];
        assert_eq!(ours(&from, &wanted), None);
        // masq's protocol on a rule of another shape: masq's, and stale whatever is wanted.
        assert_eq!(
            ours(
                &[Priority(1000), FwMark(0x1000), FwMask(0xffff), proto],
                &wanted
            ),
            Some(None)
        );
        let blackhole = listed(
            RuleAction::Blackhole,
            &[Priority(1000), FwMark(0x1000), FwMask(0x1000)],
        );
        assert!(classify(blackhole, false, &wanted).is_none());
    }
}
