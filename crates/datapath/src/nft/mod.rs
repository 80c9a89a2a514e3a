//! The nftables datapath: one table, `inet masq`, owned by masq and by nothing else.
//!
//! The table holds interval sets of addresses (`nonmasq-dst-v4`, `nonmasq-src-v4`, `pod-v4`,
//! and their `-v6` twins with IPv6) and one base chain, `postrouting` (nat, priority srcnat),
//! whose rules follow docs/decision.md in order and end in `masquerade fully-random`. Every rule
//! counts packets and carries the decision step it implements as its comment.
//!
//! [`Nftables::sync`] reads the table, computes one batch that turns it into the desired state
//! (set elements added and removed in place, the chain refilled only when its rules differ) and
//! hands it to `nft -j -f -`, which commits it as one kernel transaction. It never flushes the
//! table, so a restarted agent adopts what it finds; it never names another table.
//!
//! Large sets: reading a table of 100,000 prefixes back costs hundreds of milliseconds, and so
//! does any `nft` command that edits elements of it (nft fetches the whole set first). So the
//! backend remembers the ruleset generation at which the kernel held exactly what it last
//! wrote, and reads the table again only when the generation has moved (anyone's commit, in
//! any table); and a change of set elements alone goes to the kernel as one element batch over
//! netlink, bound to that generation (see `netlink`). Both are shortcuts to the same
//! transaction: whenever one does not apply, the table is read and `nft` does the work.
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

mod build;
mod json;
mod live;
mod model;
mod netlink;
mod plan;
mod render;

use std::io::Write;
use std::process::{Command, Stdio};

use nftables::batch::Batch;
use nftables::helper::{self, NftablesError};
use nftables::schema::NfListObject;

pub use live::RuleCounter;
pub use model::{
    reason, Cond, Family, NftFamily, RuleSpec, Ruleset, SetSpec, Verdict, CHAIN, MARK_CHAIN,
    MARK_PRIORITY, SRCNAT_PRIORITY,
};

use crate::names::NFT_TABLE;
use crate::{Datapath, Desired, Error, Kind, SyncReport};
use live::{Live, Shape};
use plan::Change;

/// An error of masq's own nfnetlink calls on its table: "`doing` table inet masq: …".
fn netlink_err(doing: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::Command {
        program: "netlink".into(),
        message: format!("{doing} table inet {NFT_TABLE}: {e}"),
    }
}

/// What [`netlink::outline`] shows of a table holding `shape`.
fn outline_of(shape: &Shape) -> netlink::Outline {
    netlink::Outline {
        chains: shape
            .chains
            .iter()
            .map(|(name, chain)| (name.clone(), chain.rules.len()))
            .collect(),
        sets: shape.sets.keys().cloned().collect(),
    }
}

/// The nftables backend. Keeps what it last wrote, to tell drift from adoption.
#[derive(Debug)]
pub struct Nftables {
    program: String,
    last_written: Option<Shape>,
    /// The kernel lists back what this process writes (checked once, when a read first shows
    /// the chains: a full read of a large set costs hundreds of milliseconds, and the answer
    /// does not change within a process).
    listing_verified: bool,
    /// The ruleset generation at which the table was exactly `last_written`: while the kernel
    /// still reports it, nobody has committed anything since, and the table need not be read.
    known_generation: Option<u32>,
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
            listing_verified: false,
            known_generation: None,
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
        let change = plan::plan(&ruleset, &Shape::expected(&ruleset), None)
            .expect("an empty state always needs a table");
        self.apply(change.into_batch(), &["--check"])
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
        let ruleset = Ruleset::build(desired);
        let want = Shape::expected(&ruleset);
        let change = plan::plan(&ruleset, &want, installed.as_ref().map(|l| &l.shape));
        Ok(change.map(|c| {
            serde_json::to_string(&c.into_batch().to_nftables()).expect("batches serialize")
        }))
    }

    /// The table as it is now, and the generation at which that is known to hold (None when
    /// the generation cannot be read or moved during the read). Skips the read when nothing
    /// was committed since this process last wrote or read the table.
    fn installed(&self) -> Result<(Option<Shape>, Option<u32>), Error> {
        let before = netlink::generation().ok();
        if before.is_some() && before == self.known_generation {
            return Ok((self.last_written.clone(), before));
        }
        self.read_since(before)
    }

    /// The table read back, and the generation at which it was read (None when that cannot
    /// be told).
    fn installed_read(&self) -> Result<(Option<Shape>, Option<u32>), Error> {
        self.read_since(netlink::generation().ok())
    }

    /// [`Nftables::installed_read`] with the generation already read just before.
    fn read_since(&self, before: Option<u32>) -> Result<(Option<Shape>, Option<u32>), Error> {
        let shape = self.read()?.map(|live| live.shape);
        let after = netlink::generation().ok();
        Ok((shape, before.filter(|_| before == after)))
    }

    /// Commits `change` (planned against the table as it was at `generation`); returns the
    /// generation just after the commit when it is known to be this one's alone.
    fn commit(&self, change: Change, generation: Option<u32>) -> Result<Option<u32>, Error> {
        if let (Change::Elements(edits), Some(generation)) = (&change, generation) {
            return netlink::edit_elements(generation, edits)
                .map(Some)
                .map_err(netlink_err("editing the sets of"));
        }
        self.apply(change.into_batch(), &[])
            .map_err(|e| self.error(e, "applying the batch"))?;
        let after = netlink::generation().ok();
        Ok(after.filter(|now| generation.map(|g| g.wrapping_add(1)) == Some(*now)))
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
        render::ruleset_text(&Ruleset::build(desired))
    }

    fn sync(&mut self, desired: &Desired) -> Result<SyncReport, Error> {
        let ruleset = Ruleset::build(desired);
        let want = Shape::expected(&ruleset);
        let cached = self.known_generation.is_some();
        let (mut installed, mut generation) = self.installed()?;
        let was_read = !cached || generation != self.known_generation;
        // The shortcut holds for one commit at most: a failure below reads the table again.
        self.known_generation = None;
        // Chains read back equal to the model's prove that nft lists the rules as they are
        // written (set elements always list back as written), without another read.
        if was_read
            && installed
                .as_ref()
                .is_some_and(|have| have.chains == want.chains)
        {
            self.listing_verified = true;
        }
        let mut report = SyncReport {
            installed_entries: want.entries(),
            ..SyncReport::default()
        };
        let mut change = plan::plan(&ruleset, &want, installed.as_ref());
        let mut committed = None;
        if matches!(change, Some(Change::Elements(_))) {
            match self.commit(change.take().expect("just matched"), generation) {
                Ok(after) => committed = Some(after),
                Err(e) => {
                    // Someone committed since the table was read (the kernel refused the
                    // batch), or netlink is unusable: read the table and let nft do it.
                    tracing::debug!(error = %e, "element batch not applied; retrying with nft");
                    let (again, at) = self.installed_read()?;
                    (installed, generation) = (again, at);
                    change = plan::plan(&ruleset, &want, installed.as_ref())
                        .map(|c| Change::Batch(c.into_batch()));
                }
            }
        }
        if let Some(change) = change {
            committed = Some(self.commit(change, generation)?);
        }
        // Drift is a difference from what this process wrote; what a previous run left is
        // adopted, not repaired.
        let drifted = self
            .last_written
            .as_ref()
            .is_some_and(|written| installed.as_ref() != Some(written));
        self.last_written = Some(want);
        match committed {
            Some(after) => {
                report.changed = true;
                report.drift_repaired |= drifted;
                self.known_generation = after;
                // A kernel or nft that lists rules differently from how they were written
                // makes every read see a difference and every sync after it rewrite the
                // chain: harmless (atomic) but worth a word in the log. Checked by reading
                // back, once, and only when a read did see a difference from what this
                // process wrote: that read-back costs hundreds of milliseconds with a large
                // set, and until a read happens the difference (if any) costs nothing. A
                // read showing the model's chains settles it for free (above).
                if drifted && !self.listing_verified {
                    let (now, at) = self.installed_read()?;
                    self.listing_verified = now == self.last_written;
                    self.known_generation = at.filter(|_| self.listing_verified);
                    if !self.listing_verified {
                        tracing::warn!(
                            table = NFT_TABLE,
                            "installed nftables table differs from the one just written; \
                             the next sync will rewrite it"
                        );
                    }
                }
            }
            None => self.known_generation = generation,
        }
        Ok(report)
    }

    /// Nothing committed since this process last wrote or read the table: it is as written.
    /// Otherwise (anyone's commit: kube-proxy's too) the table's outline over netlink, a few
    /// dumps without one set element: a deleted table, chain or rule, or an added one, is found
    /// within seconds. Set elements and rule contents are compared at each resync.
    fn intact(&self) -> Result<bool, Error> {
        let Some(written) = &self.last_written else {
            return Ok(true);
        };
        if self.known_generation.is_some() && netlink::generation().ok() == self.known_generation {
            return Ok(true);
        }
        let outline = netlink::outline().map_err(netlink_err("outlining"))?;
        Ok(outline == outline_of(written))
    }

    /// The table compared with `desired`'s. The agent asks after every sync, so the read is
    /// skipped while nothing was committed since this process wrote or read the table (the
    /// shortcut of `sync`): a large set costs hundreds of milliseconds to read.
    fn matches(&self, desired: &Desired) -> Result<bool, Error> {
        let want = Shape::expected(&Ruleset::build(desired));
        let (installed, _) = self.installed()?;
        Ok(installed.is_some_and(|have| have == want))
    }

    fn cleanup(&mut self) -> Result<(), Error> {
        let mut batch = Batch::new();
        batch.delete(NfListObject::Table(json::table()));
        self.last_written = None;
        self.known_generation = None;
        match self.apply(batch, &[]) {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(self.error(e, "deleting the table")),
        }
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
