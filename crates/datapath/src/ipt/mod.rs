//! The iptables datapath: a drop-in for kubernetes-sigs/ip-masq-agent.
//!
//! masq owns one chain in the `nat` table (`IP-MASQ-AGENT` unless `--masq-chain` says otherwise)
//! and one jump to it from `POSTROUTING`, with upstream's rule layout and comments, so a node can
//! switch from upstream to masq (and back) without a gap:
//!
//! - [`render`] builds the rules as text, in the form `iptables-save` prints them;
//! - [`Iptables::sync`] reads the table, and when it differs replaces the chain with one
//!   `iptables-restore --noflush` commit (declaring the chain flushes it in the same transaction
//!   as the new rules, so there is no moment without them), fixing the jump in that same commit;
//! - [`backend`] picks iptables-nft or iptables-legacy the way kube's iptables-wrapper does;
//! - [`exec`] waits out the xtables lock with bounded, growing pauses.
//!
//! Nothing outside the chain and its jumps is ever written. See `docs/iptables.md`.

pub mod backend;
pub mod egress;
pub mod exec;
mod leftover;
pub mod render;
pub mod save;

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;

pub use backend::Backend;
pub use exec::{is_lock_contention, LockRetry};
pub use leftover::Leftover;
pub use render::{parse_port_ranges, Family, RenderOptions};

use crate::egress::{desired_rules, IpRules, PolicyRule};
use crate::names::IPT_EGRESS_CHAIN;
use crate::{Datapath, Desired, Error, Kind, PortRange, SyncReport};
use backend::{Evidence, Tool};
use exec::Runner;
use save::NatTable;

/// The iptables datapath. Keeps what it last wrote, per family, to tell drift from config changes.
#[derive(Debug)]
pub struct Iptables {
    backend: Backend,
    chain: String,
    options: RenderOptions,
    runner: Runner,
    /// The chain last written per family, as a [`fingerprint`].
    last_written: BTreeMap<Family, u64>,
    /// The egress chain last written per family (empty: removed), as a [`fingerprint`].
    last_egress: BTreeMap<Family, u64>,
    ip_rules: IpRules,
    last_policy_rules: Option<Vec<PolicyRule>>,
}

impl Iptables {
    /// The datapath on `backend`, assuming a modern iptables (`--random-fully` supported).
    pub fn new(backend: Backend) -> Iptables {
        Iptables {
            backend,
            chain: crate::names::IPT_CHAIN.to_string(),
            options: RenderOptions::default(),
            runner: Runner::default(),
            last_written: BTreeMap::new(),
            last_egress: BTreeMap::new(),
            ip_rules: IpRules::new(),
            last_policy_rules: None,
        }
    }

    /// Detects the host's backend (see [`backend`]) and whether its iptables knows
    /// `--random-fully`. Only reads: `*-save` without `-t`, which creates no table.
    pub fn detect() -> Result<Iptables, Error> {
        let runner = Runner::default();
        let read_all = |backend: Backend| {
            Family::ALL
                .iter()
                .filter_map(|f| runner.run(&backend.program(*f, Tool::Save), &[], None).ok())
                .filter(|finished| finished.code == 0)
                .map(|finished| finished.stdout)
                .collect::<String>()
        };
        let version = |program: &str| {
            runner
                .run_ok(program, &["--version"], None)
                .ok()
                .map(|v| v.trim().to_string())
        };
        let evidence = Evidence {
            nft_save: read_all(Backend::Nft),
            legacy_save: read_all(Backend::Legacy),
            default_version: version("iptables"),
        };
        let backend = backend::choose(&evidence);
        let chosen_version =
            version(&backend.program(Family::V4, Tool::Main)).ok_or_else(|| {
                Error::Unsupported(format!(
                    "{} does not run: install iptables (nft and legacy)",
                    backend.program(Family::V4, Tool::Main)
                ))
            })?;
        tracing::info!(%backend, version = %chosen_version, "iptables backend detected");
        Ok(Iptables::new(backend)
            .with_random_fully(backend::supports_random_fully(&chosen_version)))
    }

    /// The chain `cleanup` removes before any `sync` named one (`--masq-chain`).
    pub fn with_chain(mut self, chain: &str) -> Iptables {
        self.chain = chain.to_string();
        self
    }

    /// Sets whether translation rules carry `--random-fully`.
    pub fn with_random_fully(mut self, random_fully: bool) -> Iptables {
        self.options.random_fully = random_fully;
        self
    }

    /// Upstream's `--to-ports` list (e.g. `1024-29999,32768-65535`): replaces `node.port_range`.
    pub fn with_port_ranges(mut self, ranges: Vec<PortRange>) -> Iptables {
        self.options.port_ranges = Some(ranges);
        self
    }

    /// How long to wait for the xtables lock.
    pub fn with_lock_retry(mut self, retry: LockRetry) -> Iptables {
        self.runner.retry = retry;
        self
    }

    /// Uses another xtables lock file (`XTABLES_LOCKFILE`); tests use a private one.
    pub fn with_lock_file(mut self, path: PathBuf) -> Iptables {
        self.runner.lock_file = Some(path);
        self
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The rules of the chain for one family, as `iptables-save` prints them.
    pub fn chain_rules(&self, desired: &Desired, family: Family) -> Vec<String> {
        render::chain_rules(desired, family, &self.options)
    }

    fn read_nat(&self, family: Family) -> Result<NatTable, Error> {
        self.read_table(family, "nat")
    }

    fn read_table(&self, family: Family, table: &str) -> Result<NatTable, Error> {
        // No `-t nat`: naming a table makes both backends create it, and a read must not write.
        let program = self.backend.program(family, Tool::Save);
        Ok(NatTable::parse_table(
            &self.runner.run_ok(&program, &[], None)?,
            table,
        ))
    }

    /// Makes one family's egress chain (`mangle`) and its jump match `rules`; empty `rules`
    /// remove them. Returns (changed, drift repaired).
    fn sync_egress(&mut self, family: Family, rules: Vec<String>) -> Result<(bool, bool), Error> {
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
                &egress::removal_payload(&jumps, installed.is_some()),
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
        self.restore(family, &egress::restore_payload(&rules, &fixes))?;
        tracing::info!(
            family = family.command(),
            rules = rules.len(),
            drift,
            "egress chain replaced"
        );
        Ok((true, drift))
    }

    fn restore(&self, family: Family, payload: &str) -> Result<(), Error> {
        let program = self.backend.program(family, Tool::Restore);
        let wait = self.runner.wait_arg();
        self.runner
            .run_ok(&program, &["--noflush", &wait], Some(payload))
            .map(drop)
    }

    /// `iptables -t nat -C POSTROUTING <jump>`: the kernel's own comparison, used before adding a
    /// jump the saved text did not show, so a differently printed jump is never duplicated.
    fn jump_exists(&self, family: Family, chain: &str) -> Result<bool, Error> {
        let jump = render::jump_rule(chain);
        let spec = jump.strip_prefix("-A POSTROUTING ").unwrap_or(&jump);
        let mut args = vec!["-t", "nat", "-C", "POSTROUTING"];
        let words = split_rule(spec);
        args.extend(words.iter().map(String::as_str));
        let wait = self.runner.wait_arg();
        args.push(&wait);
        let program = self.backend.program(family, Tool::Main);
        let finished = self.runner.run(&program, &args, None)?;
        Ok(finished.code == 0)
    }

    /// Makes one family's chain and jump match `rules`. Returns (changed, drift repaired).
    fn sync_family(
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
            self.restore(family, &render::restore_payload(chain, &rules, &fixes))?;
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
    fn remove_family(&mut self, family: Family, chain: &str) -> Result<bool, Error> {
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
        let mut payload = String::from("*nat\n");
        for jump in &jumps {
            payload.push_str(&jump.replacen("-A ", "-D ", 1));
            payload.push('\n');
        }
        if exists {
            payload.push_str(&format!(":{chain} - [0:0]\n-X {chain}\n"));
        }
        payload.push_str("COMMIT\n");
        self.restore(family, &payload)?;
        tracing::info!(family = family.command(), chain, "chain removed");
        Ok(true)
    }

    fn family_matches(&self, desired: &Desired, family: Family) -> Result<bool, Error> {
        let chain = &desired.node.iptables_chain;
        let table = self.read_nat(family)?;
        let rules = self.chain_rules(desired, family);
        let nat_ok = table.rules(chain) == Some(rules.as_slice())
            && render::upstream_jumps(&table, chain).len() == 1;
        let mangle = self.read_table(family, "mangle")?;
        let egress = egress::chain_rules(desired, family);
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
fn fingerprint(rules: &[String]) -> u64 {
    let mut hasher = DefaultHasher::new();
    rules.hash(&mut hasher);
    hasher.finish()
}

impl Datapath for Iptables {
    fn kind(&self) -> Kind {
        Kind::Iptables
    }

    fn render(&self, desired: &Desired) -> String {
        let mut text = render::render_text(desired, &self.options);
        for family in render::families(desired) {
            let rules = egress::chain_rules(desired, family);
            if rules.is_empty() {
                continue;
            }
            text.push_str(&format!(
                "\n# {}-restore --noflush (egress routing)\n",
                family.command()
            ));
            text.push_str(&egress::restore_payload(&rules, &[]));
            text.push_str(&format!(
                "# mangle PREROUTING jump, kept exactly once and first:\n# {}\n",
                egress::jump_rule()
            ));
        }
        text.push_str(&crate::egress::render_rules(&desired.node));
        text
    }

    fn sync(&mut self, desired: &Desired) -> Result<SyncReport, Error> {
        let chain = desired.node.iptables_chain.clone();
        render::validate_chain_name(&chain).map_err(Error::Unsupported)?;
        if self.chain != chain {
            // What was written under another name says nothing about this chain's drift.
            self.last_written.clear();
            self.chain = chain.clone();
        }
        let mut report = SyncReport::default();
        // The policy rules first: until the egress chain marks packets they route nothing.
        let policy_rules = desired_rules(&desired.node);
        let added = self.ip_rules.add_missing(&policy_rules)?;
        report.changed |= added.changed;
        report.drift_repaired |=
            added.changed && self.last_policy_rules.as_ref() == Some(&policy_rules);
        report.installed_entries += policy_rules.len();
        for family in Family::ALL {
            let wanted = render::families(desired).contains(&family);
            if wanted {
                let mut count = 0;
                let options = self.options.clone();
                let (changed, drift) = self.sync_family(family, &chain, || {
                    let rules = render::chain_rules(desired, family, &options);
                    count = rules.len();
                    rules
                })?;
                report.installed_entries += count + 1;
                report.changed |= changed;
                report.drift_repaired |= drift;
            } else {
                // IPv6 switched off: the chain masq (or upstream) wrote there must go.
                report.changed |= self.remove_family(family, &chain)?;
            }
            let egress = if wanted {
                egress::chain_rules(desired, family)
            } else {
                Vec::new()
            };
            report.installed_entries += egress.len() + usize::from(!egress.is_empty());
            let (changed, drift) = self.sync_egress(family, egress)?;
            report.changed |= changed;
            report.drift_repaired |= drift;
        }
        // Stale rules last: nothing carries their mark any more.
        report.changed |= self.ip_rules.remove_stale(&policy_rules)?.changed;
        self.last_policy_rules = Some(policy_rules);
        Ok(report)
    }

    /// Every family the last sync wrote still jumps from POSTROUTING to masq's chain
    /// (`iptables -S POSTROUTING`: iptables-nft reads that chain alone, iptables-legacy copies
    /// the nat table, ~60 ms at 61,278 rules). A flush of the nat table (a firewall reload,
    /// `iptables -t nat -F`) takes the jump with it. The chain's own rules, and the egress
    /// chain of a VPC-native node, are compared at each resync.
    fn intact(&self) -> Result<bool, Error> {
        let wait = self.runner.wait_arg();
        for family in self.last_written.keys() {
            let program = self.backend.program(*family, Tool::Main);
            let args = ["-t", "nat", "-S", "POSTROUTING", wait.as_str()];
            let listing = self.runner.run_ok(&program, &args, None)?;
            if save::jumps_in_listing(&listing, &self.chain) == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn matches(&self, desired: &Desired) -> Result<bool, Error> {
        for family in render::families(desired) {
            if !self.family_matches(desired, family)? {
                return Ok(false);
            }
        }
        self.ip_rules.matches(&desired_rules(&desired.node))
    }

    fn cleanup(&mut self) -> Result<(), Error> {
        let chain = self.chain.clone();
        for family in Family::ALL {
            self.remove_family(family, &chain)?;
            self.sync_egress(family, Vec::new())?;
        }
        self.last_policy_rules = None;
        // After the chains: nothing is marked any more, so the rules route nothing.
        self.ip_rules.remove_stale(&[]).map(drop)
    }

    fn findings(&self, desired: &Desired) -> Vec<String> {
        match self.leftovers(&desired.node.iptables_chain) {
            Ok(found) => found
                .iter()
                .map(|l| {
                    format!(
                        "{} chain {} ({}, {} rules) carries ip-masq-agent rules but is not masq's{}",
                        l.family,
                        l.chain,
                        l.backend.as_str(),
                        l.rules,
                        if l.referenced { "; POSTROUTING still jumps to it" } else { "" }
                    )
                })
                .collect(),
            Err(e) => vec![format!("could not look for leftover chains: {e}")],
        }
    }
}

/// Splits a rule into arguments, keeping a quoted comment as one argument without its quotes.
fn split_rule(rule: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in rule.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            _ => current.push(c),
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_rule_keeps_comments_whole() {
        assert_eq!(
            split_rule("-m comment --comment \"a b\" -j X"),
            vec!["-m", "comment", "--comment", "a b", "-j", "X"]
        );
    }
}
