//! One family's chains of one table at a time: read them, replace them in one
//! `iptables-restore --noflush` commit when they differ, remove them, compare them.

use std::hash::{DefaultHasher, Hash, Hasher};

use masq_decision::FamilyPolicy;

use super::backend::Tool;
use super::save::{self, NatTable};
use super::{egress, render, Family, IptFamily, Iptables};
use crate::names::IPT_EGRESS_CHAIN;
use crate::{Desired, Error};

impl Iptables {
    pub(super) fn read_nat(&self, family: Family) -> Result<NatTable, Error> {
        self.read_table(family, "nat")
    }

    pub(super) fn read_table(&self, family: Family, table: &str) -> Result<NatTable, Error> {
        // No `-t nat`: naming a table makes both backends create it, and a read must not write.
        let program = self.backend.program(family, Tool::Save);
        Ok(NatTable::parse_table(
            &self.runner.run_ok(&program, &[], None)?,
            table,
        ))
    }

    /// Makes one family's egress chain (`mangle`) and its jump match `rules`; empty `rules`
    /// remove them. Returns (changed, drift repaired).
    pub(super) fn sync_egress(
        &mut self,
        family: Family,
        rules: Vec<String>,
    ) -> Result<(bool, bool), Error> {
        let table = match self.read_table(family, "mangle") {
            Ok(table) => table,
            Err(e) if family == Family::V6 && rules.is_empty() => {
                tracing::debug!(error = %e, "ip6tables unreadable, nothing to remove");
                return Ok((false, false));
            }
            Err(e) => return Err(e),
        };
        let installed = table.rules(IPT_EGRESS_CHAIN);
        let jumps = table.jumps_to("PREROUTING", IPT_EGRESS_CHAIN);
        let wrote = self.last_egress.insert(family, fingerprint(&rules));
        if rules.is_empty() {
            if installed.is_none() && jumps.is_empty() {
                return Ok((false, false));
            }
            self.restore(
                family,
                &render::removal_payload("mangle", IPT_EGRESS_CHAIN, &jumps, installed.is_some()),
            )?;
            tracing::info!(family = family.command(), "egress chain removed");
            return Ok((true, false));
        }
        let jump = egress::jump_rule();
        let keep = jumps.iter().position(|j| *j == jump);
        let in_sync = installed == Some(rules.as_slice()) && jumps.len() == 1 && keep.is_some();
        if in_sync {
            return Ok((false, false));
        }
        let drift = wrote == Some(fingerprint(&rules));
        let mut fixes: Vec<String> = jumps
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != keep)
            .map(|(_, j)| j.replacen("-A ", "-D ", 1))
            .collect();
        if keep.is_none() {
            // First in PREROUTING: a rule before it that accepts established traffic (Calico's
            // does) would keep replies and later packets from getting their mark back.
            fixes.push(jump.replacen("-A PREROUTING ", "-I PREROUTING 1 ", 1));
        }
        self.restore(
            family,
            &render::restore_payload("mangle", IPT_EGRESS_CHAIN, &rules, &fixes),
        )?;
        tracing::info!(
            family = family.command(),
            rules = rules.len(),
            drift,
            "egress chain replaced"
        );
        Ok((true, drift))
    }

    pub(super) fn restore(&self, family: Family, payload: &str) -> Result<(), Error> {
        let program = self.backend.program(family, Tool::Restore);
        let wait = self.runner.wait_arg();
        self.runner
            .run_ok(&program, &["--noflush", &wait], Some(payload))
            .map(drop)
    }

    /// `iptables -t nat -C POSTROUTING <jump>`: the kernel's own comparison, used before adding a
    /// jump the saved text did not show, so a differently printed jump is never duplicated.
    pub(super) fn jump_exists(&self, family: Family, chain: &str) -> Result<bool, Error> {
        let jump = render::jump_rule(chain);
        let spec = jump.strip_prefix("-A POSTROUTING ").unwrap_or(&jump);
        let mut args = vec!["-t", "nat", "-C", "POSTROUTING"];
        let words = save::rule_words(spec);
        args.extend(words.iter().map(String::as_str));
        let wait = self.runner.wait_arg();
        args.push(&wait);
        let program = self.backend.program(family, Tool::Main);
        let finished = self.runner.run(&program, &args, None)?;
        Ok(finished.code == 0)
    }

    /// Makes one family's chain and jump match `rules`. Returns (changed, drift repaired).
    pub(super) fn sync_family(
        &mut self,
        family: Family,
        chain: &str,
        rules: impl FnOnce() -> Vec<String>,
    ) -> Result<(bool, bool), Error> {
        let table = self.read_nat(family)?;
        // Rendered once `iptables-save`'s text is gone: both are ~10 MB at 61,278 CIDRs.
        let rules = rules();
        let installed = table.rules(chain);
        let jump = render::jump_rule(chain);
        let mut jumps = render::upstream_jumps(&table, chain);
        let mut jump_count = jumps.len();
        if jump_count == 0 && installed.is_some() && self.jump_exists(family, chain)? {
            tracing::warn!(
                chain,
                "POSTROUTING jump present but printed differently; keeping it"
            );
            jump_count = 1;
        }
        let in_sync = installed == Some(rules.as_slice()) && jump_count == 1;
        let drift = !in_sync
            && self
                .last_written
                .get(&family)
                .is_some_and(|last| installed.map(fingerprint) != Some(*last) || jump_count != 1);
        if !in_sync {
            let mut fixes = Vec::new();
            if jump_count == 0 {
                fixes.push(jump.clone());
            }
            // Duplicates (two agents once raced, or upstream's jump next to masq's): keep the
            // first, whichever wrote it, so traffic sees no change in order.
            if jumps.len() > 1 {
                fixes.extend(jumps.drain(1..).map(|j| j.replacen("-A ", "-D ", 1)));
            }
            self.restore(
                family,
                &render::restore_payload("nat", chain, &rules, &fixes),
            )?;
            tracing::info!(
                family = family.command(),
                chain,
                rules = rules.len(),
                drift,
                "chain replaced"
            );
        }
        self.last_written.insert(family, fingerprint(&rules));
        Ok((!in_sync, drift))
    }

    /// Removes `chain` and every POSTROUTING jump to it from one family; absent is success.
    pub(super) fn remove_family(&mut self, family: Family, chain: &str) -> Result<bool, Error> {
        self.last_written.remove(&family);
        let table = match self.read_nat(family) {
            Ok(table) => table,
            // A kernel or image without IPv6 nat has no IPv6 chain to remove.
            Err(e) if family == Family::V6 => {
                tracing::debug!(error = %e, "ip6tables unreadable, nothing to remove");
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let jumps = table.jumps_to("POSTROUTING", chain);
        let exists = table.rules(chain).is_some();
        if jumps.is_empty() && !exists {
            return Ok(false);
        }
        self.restore(
            family,
            &render::removal_payload("nat", chain, &jumps, exists),
        )?;
        tracing::info!(family = family.command(), chain, "chain removed");
        Ok(true)
    }

    pub(super) fn family_matches(
        &self,
        desired: &Desired,
        policy: &FamilyPolicy,
    ) -> Result<bool, Error> {
        let family = policy.family;
        let chain = &desired.node.iptables_chain;
        let table = self.read_nat(family)?;
        let rules = render::chain_rules(desired, policy, &self.options);
        let nat_ok = table.rules(chain) == Some(rules.as_slice())
            && render::upstream_jumps(&table, chain).len() == 1;
        let mangle = self.read_table(family, "mangle")?;
        let egress = egress::chain_rules(desired, policy);
        let jumps = mangle.jumps_to("PREROUTING", IPT_EGRESS_CHAIN);
        let egress_ok = if egress.is_empty() {
            mangle.rules(IPT_EGRESS_CHAIN).is_none() && jumps.is_empty()
        } else {
            mangle.rules(IPT_EGRESS_CHAIN) == Some(egress.as_slice())
                && jumps == [egress::jump_rule()]
        };
        Ok(nat_ok && egress_ok)
    }
}

/// What a chain last written is remembered by: only to tell drift (someone else changed the
/// chain) from a config change, never to decide whether to write. The rules themselves took
/// 18 MiB with 61,278 CIDRs (nat and mangle chains); a 64-bit hash can only be wrong about the
/// drift flag, once in 2^64.
pub(super) fn fingerprint(rules: &[String]) -> u64 {
    let mut hasher = DefaultHasher::new();
    rules.hash(&mut hasher);
    hasher.finish()
}
