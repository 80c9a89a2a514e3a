//! The nftables datapath: one table, `inet masq`, owned by masq and by nothing else.
//!
//! The table holds interval sets of addresses (`nonmasq-dst-v4`, `nonmasq-src-v4`, `pod-v4`,
//! and their `-v6` twins with IPv6) and one base chain, `postrouting` (nat, priority srcnat),
//! whose rules follow SPEC section 3 in order and end in `masquerade fully-random`. Every rule
//! counts packets and carries the decision step it implements as its comment.
//!
//! [`Nftables::sync`] reads the table, computes one batch that turns it into the desired state
//! (set elements added and removed in place, the chain refilled only when its rules differ) and
//! hands it to `nft -j -f -`, which commits it as one kernel transaction. It never flushes the
//! table, so a restarted agent adopts what it finds; it never names another table.
//!
//! ```no_run
//! use masq_datapath::{nft::Nftables, Datapath, Desired, Error};
//!
//! fn apply(desired: &Desired) -> Result<(), Error> {
//!     let mut nft = Nftables::new();
//!     print!("{}", nft.render(desired)); // what `masq render` shows
//!     let report = nft.sync(desired)?; // one atomic transaction
//!     assert!(nft.matches(desired)?);
//!     println!("changed: {}, drift repaired: {}", report.changed, report.drift_repaired);
//!     Ok(())
//! }
//! ```

mod json;
mod live;
mod model;
mod plan;
mod render;

use std::io::Write;
use std::process::{Command, Stdio};

use nftables::batch::Batch;
use nftables::helper::{self, NftablesError};
use nftables::schema::NfListObject;

pub use live::RuleCounter;
pub use model::{
    reason, Cond, Family, RuleSpec, Ruleset, SetSpec, Verdict, CHAIN, MARK_CHAIN, MARK_PRIORITY,
    SRCNAT_PRIORITY,
};

use crate::egress::{self, IpRules};
use crate::names::NFT_TABLE;
use crate::{Datapath, Desired, Error, Kind, SyncReport};
use live::{Live, Shape};

/// The nftables backend. Keeps what it last wrote, to tell drift from adoption.
#[derive(Debug)]
pub struct Nftables {
    program: String,
    last_written: Option<Shape>,
    rules: IpRules,
    last_rules: Option<Vec<egress::PolicyRule>>,
    /// The kernel lists back what this process writes (checked once: a full read of a large set
    /// costs hundreds of milliseconds, and the answer does not change within a process).
    listing_verified: bool,
}

impl Default for Nftables {
    fn default() -> Self {
        Nftables::new()
    }
}

impl Nftables {
    /// A backend that runs `nft` from `PATH`.
    pub fn new() -> Nftables {
        Nftables::with_program("nft")
    }

    /// A backend that runs the given `nft` binary.
    pub fn with_program(program: impl Into<String>) -> Nftables {
        Nftables {
            program: program.into(),
            last_written: None,
            rules: IpRules::new(),
            last_rules: None,
            listing_verified: false,
        }
    }

    /// Checks that `nft` runs and the kernel accepts masq's table and nat chain, without
    /// changing anything (`nft --check`). For `--datapath auto`.
    pub fn probe(&self) -> Result<(), Error> {
        let ruleset = Ruleset {
            sets: Vec::new(),
            rules: Vec::new(),
            mark_rules: Vec::new(),
        };
        let batch = plan::plan(&ruleset, None).expect("an empty state always needs a table");
        self.apply(batch, &["--check"])
            .map_err(|e| self.error(e, "checking the table"))
    }

    /// The rules of the installed chain with their counters, in order (for `masq status`);
    /// empty when the table is absent.
    pub fn counters(&self) -> Result<Vec<RuleCounter>, Error> {
        Ok(self.read()?.map(|live| live.counters).unwrap_or_default())
    }

    /// The transaction `sync` would send right now, as the JSON given to `nft -j -f -`
    /// (None when the kernel already matches). For debugging and logs.
    pub fn pending_batch(&self, desired: &Desired) -> Result<Option<String>, Error> {
        let installed = self.read()?;
        let batch = plan::plan(
            &Ruleset::build(desired),
            installed.as_ref().map(|l| &l.shape),
        );
        Ok(batch.map(|b| serde_json::to_string(&b.to_nftables()).expect("batches serialize")))
    }

    /// The table as `nft` lists it, or None when it does not exist.
    fn read(&self) -> Result<Option<Live>, Error> {
        let args = ["list", "table", "inet", NFT_TABLE];
        match helper::get_current_ruleset_raw(Some(&self.program), args) {
            Ok(text) => Live::parse(&text)
                .map(Some)
                .map_err(|message| Error::Command {
                    program: self.program.clone(),
                    message: format!("reading table inet {NFT_TABLE}: {message}"),
                }),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(self.error(e, "listing table")),
        }
    }

    /// Sends one batch to `nft -j -f -`. Not the crate's `apply_ruleset`: that one lets nft's
    /// error output go to our stderr, and the message is what tells "not found" from a failure.
    fn apply(&self, batch: Batch<'_>, args: &[&str]) -> Result<(), NftablesError> {
        let payload = serde_json::to_vec(&batch.to_nftables()).expect("batches serialize");
        let failed = |inner| NftablesError::NftExecution {
            program: self.program.clone().into(),
            inner,
        };
        let mut child = Command::new(&self.program)
            .args(args)
            .args(["-j", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(failed)?;
        let written = child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(&payload);
        let output = child.wait_with_output().map_err(failed)?;
        written.map_err(failed)?;
        if output.status.success() {
            return Ok(());
        }
        Err(NftablesError::NftFailed {
            program: self.program.clone().into(),
            hint: "applying the batch".into(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    fn error(&self, error: NftablesError, doing: &str) -> Error {
        match error {
            NftablesError::NftExecution { inner, .. } => Error::Unsupported(format!(
                "cannot run {}: {inner} (is the nftables package installed?)",
                self.program
            )),
            NftablesError::NftFailed { stderr, .. } => Error::Command {
                program: self.program.clone(),
                message: format!("{doing}: {}", first_error_line(&stderr)),
            },
            other => Error::Command {
                program: self.program.clone(),
                message: format!("{doing}: {other}"),
            },
        }
    }
}

impl Datapath for Nftables {
    fn kind(&self) -> Kind {
        Kind::Nftables
    }

    fn render(&self, desired: &Desired) -> String {
        let mut text = render::ruleset_text(&Ruleset::build(desired));
        text.push_str(&egress::render_rules(&desired.node));
        text
    }

    fn sync(&mut self, desired: &Desired) -> Result<SyncReport, Error> {
        let ruleset = Ruleset::build(desired);
        let want = Shape::expected(&ruleset);
        let installed = self.read()?.map(|live| live.shape);
        // Drift is a difference from what this process wrote; what a previous run left is
        // adopted, not repaired.
        let drifted = self
            .last_written
            .as_ref()
            .is_some_and(|written| installed.as_ref() != Some(written));
        let policy_rules = egress::desired_rules(&desired.node);
        let mut report = SyncReport {
            installed_entries: want.entries() + policy_rules.len(),
            ..SyncReport::default()
        };
        // The rule first: until the batch marks packets it routes nothing.
        let added = self.rules.add_missing(&policy_rules)?;
        // A rule this process wrote and still wants was removed by someone else.
        report.drift_repaired = added.changed && self.last_rules.as_ref() == Some(&policy_rules);
        report.changed |= added.changed;
        if let Some(batch) = plan::plan(&ruleset, installed.as_ref()) {
            self.apply(batch, &[])
                .map_err(|e| self.error(e, "applying the batch"))?;
            report.changed = true;
            report.drift_repaired |= drifted;
            // A kernel or nft that lists rules differently from how they were written would
            // make every sync rewrite the chain: harmless (atomic) but worth a word in the log.
            if !self.listing_verified {
                let now = self.read()?.map(|live| live.shape);
                self.listing_verified = now.as_ref() == Some(&want);
                if !self.listing_verified {
                    tracing::warn!(
                        table = NFT_TABLE,
                        "installed nftables table differs from the one just written; \
                         the next sync will rewrite it"
                    );
                }
            }
        }
        self.last_written = Some(want);
        // Stale rules last: nothing carries their mark any more.
        report.changed |= self.rules.remove_stale(&policy_rules)?.changed;
        self.last_rules = Some(policy_rules);
        Ok(report)
    }

    fn matches(&self, desired: &Desired) -> Result<bool, Error> {
        let want = Shape::expected(&Ruleset::build(desired));
        let table_ok = self.read()?.is_some_and(|live| live.shape == want);
        Ok(table_ok && self.rules.matches(&egress::desired_rules(&desired.node))?)
    }

    fn cleanup(&mut self) -> Result<(), Error> {
        let mut batch = Batch::new();
        batch.delete(NfListObject::Table(json::table()));
        self.last_written = None;
        self.last_rules = None;
        match self.apply(batch, &[]) {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(self.error(e, "deleting the table")),
        }
        // After the table: the marks are gone, so the rules route nothing.
        self.rules.remove_stale(&[]).map(drop)
    }
}

/// `nft` answers ENOENT for a table that does not exist.
fn is_not_found(error: &NftablesError) -> bool {
    matches!(error, NftablesError::NftFailed { stderr, .. } if stderr.contains("No such file or directory"))
}

fn first_error_line(stderr: &str) -> String {
    let stderr = stderr.trim();
    stderr
        .lines()
        .find(|line| line.starts_with("Error"))
        .unwrap_or(stderr)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_nft_binary_is_unsupported_not_a_panic() {
        let mut nft = Nftables::with_program("/nonexistent/nft");
        let error = nft.cleanup().unwrap_err();
        assert!(matches!(error, Error::Unsupported(_)), "{error}");
        assert!(error.to_string().contains("/nonexistent/nft"), "{error}");
        assert!(matches!(nft.probe(), Err(Error::Unsupported(_))));
    }
}
