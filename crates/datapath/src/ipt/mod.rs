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
mod chains;
pub mod egress;
pub mod exec;
mod forced;
mod leftover;
pub mod render;
pub mod save;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use backend::Backend;
pub use exec::{is_lock_contention, LockRetry};
pub use leftover::Leftover;
pub use render::{Family, IptFamily, RenderOptions};

use crate::names::IPT_EGRESS_CHAIN;
use crate::{Datapath, Desired, Error, Kind, SyncReport};
use backend::{Evidence, Tool};
use exec::Runner;

/// The iptables datapath. Keeps what it last wrote, per family, to tell drift from config changes.
#[derive(Debug)]
pub struct Iptables {
    backend: Backend,
    chain: String,
    options: RenderOptions,
    runner: Runner,
    /// The chain last written per family, as a fingerprint (`chains::fingerprint`).
    last_written: BTreeMap<Family, u64>,
    /// The egress chain last written per family (empty: removed), as a fingerprint (`chains::fingerprint`).
    last_egress: BTreeMap<Family, u64>,
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
        render::chain_rules(desired, desired.policy().family(family), &self.options)
    }
}

impl Datapath for Iptables {
    fn kind(&self) -> Kind {
        Kind::Iptables
    }

    fn render(&self, desired: &Desired) -> String {
        let mut text = render::render_text(desired, &self.options);
        let policy = desired.policy();
        for &family in desired.node.families() {
            let rules = egress::chain_rules(desired, policy.family(family));
            if rules.is_empty() {
                continue;
            }
            text.push_str(&format!(
                "\n# {}-restore --noflush (egress routing)\n",
                family.command()
            ));
            text.push_str(&render::restore_payload(
                "mangle",
                IPT_EGRESS_CHAIN,
                &rules,
                &[],
            ));
            text.push_str(&format!(
                "# mangle PREROUTING jump, kept exactly once and first:\n# {}\n",
                egress::jump_rule()
            ));
        }
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
        let policy = desired.policy();
        for family in Family::ALL {
            let wanted = desired.node.families().contains(&family);
            if wanted {
                let mut count = 0;
                let options = self.options.clone();
                let (changed, drift) = self.sync_family(family, &chain, || {
                    let rules = render::chain_rules(desired, policy.family(family), &options);
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
                egress::chain_rules(desired, policy.family(family))
            } else {
                Vec::new()
            };
            report.installed_entries += egress.len() + usize::from(!egress.is_empty());
            let (changed, drift) = self.sync_egress(family, egress)?;
            report.changed |= changed;
            report.drift_repaired |= drift;
        }
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
        let policy = desired.policy();
        for &family in desired.node.families() {
            if !self.family_matches(desired, policy.family(family))? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn cleanup(&mut self) -> Result<(), Error> {
        let chain = self.chain.clone();
        for family in Family::ALL {
            self.remove_family(family, &chain)?;
            self.sync_egress(family, Vec::new())?;
        }
        Ok(())
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
