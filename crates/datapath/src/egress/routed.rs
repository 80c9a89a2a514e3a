//! [`Routed`]: whichever datapath runs, with masq's `ip rule`s kept around it. The rules are the
//! same for every datapath, so they are handled here once rather than in each `sync`.

use super::{desired_rules, render_rules, IpRules, PolicyRule};
use crate::ebpf::HookOrder;
use crate::{Datapath, Desired, Error, Kind, SyncReport};

/// A datapath and masq's policy-routing rules (docs/vpc-native.md). `sync` adds the missing
/// rules before the datapath's own sync (which may start marking), and removes the stale ones
/// after it (when nothing carries their mark any more); `cleanup` removes every rule of masq's
/// protocol after the datapath's objects. Everything else is the datapath's.
#[derive(Debug)]
pub struct Routed<D> {
    inner: D,
    rules: IpRules,
    /// The rules the last sync left, to tell someone's deletion (drift) from a config change.
    last_rules: Option<Vec<PolicyRule>>,
}

impl<D: Datapath> Routed<D> {
    /// `inner` with the rules around it. Nothing is read or written before the first call.
    pub fn new(inner: D) -> Routed<D> {
        Routed {
            inner,
            rules: IpRules,
            last_rules: None,
        }
    }

    /// The datapath inside.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// The datapath inside, mutably (its own settings; a sync should go through the wrapper).
    pub fn inner_mut(&mut self) -> &mut D {
        &mut self.inner
    }
}

impl<D: Datapath> Datapath for Routed<D> {
    fn kind(&self) -> Kind {
        self.inner.kind()
    }

    /// The datapath's ruleset, then the rules as comments.
    fn render(&self, desired: &Desired) -> String {
        let mut text = self.inner.render(desired);
        text.push_str(&render_rules(&desired.node));
        text
    }

    fn sync(&mut self, desired: &Desired) -> Result<SyncReport, Error> {
        let wanted = desired_rules(&desired.node);
        // First: until the datapath marks packets, a new rule routes nothing.
        let added = self.rules.add_missing(&wanted)?;
        let mut report = self.inner.sync(desired)?;
        // Last: the datapath no longer marks what a stale rule routes.
        let removed = self.rules.remove_stale(&wanted)?;
        report.changed |= added || removed;
        // A rule this process wrote and still wants was deleted by someone else.
        report.drift_repaired |= added && self.last_rules.as_ref() == Some(&wanted);
        report.installed_entries += wanted.len();
        self.last_rules = Some(wanted);
        Ok(report)
    }

    fn matches(&self, desired: &Desired) -> Result<bool, Error> {
        Ok(self.inner.matches(desired)? && self.rules.matches(&desired_rules(&desired.node))?)
    }

    fn cleanup(&mut self) -> Result<(), Error> {
        self.inner.cleanup()?;
        self.last_rules = None;
        // After the datapath's objects: nothing is marked any more, so the rules route nothing.
        self.rules.remove_stale(&[]).map(drop)
    }

    fn housekeeping(&mut self) -> Result<Option<String>, Error> {
        self.inner.housekeeping()
    }

    fn intact(&self) -> Result<bool, Error> {
        self.inner.intact()
    }

    fn findings(&self, desired: &Desired) -> Vec<String> {
        self.inner.findings(desired)
    }

    fn hook_order(&self) -> Vec<HookOrder> {
        self.inner.hook_order()
    }
}
