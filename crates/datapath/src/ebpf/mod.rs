//! The eBPF datapath: tc programs (`bpf/masq.bpf.c`) doing SNAT on egress and reverse SNAT on
//! ingress with masq's own NAT table, loaded with aya and attached with TCX (clsact fallback).
//!
//! Everything lives under one pin directory (default [`crate::names::BPF_PIN_DIR`]): the maps in
//! `maps-v3/` (the version changes with any map layout change, since aya reuses a pinned map
//! without checking it) and the links in `links/`. A restarted agent reopens the maps, NAT
//! entries included, and swaps its programs into the pinned links in place, so live
//! connections never notice. New maps (another layout version, another `--nat-table-size`)
//! get the old flow table copied in ([`carry`]).
//!
//! Besides [`Datapath`], [`Ebpf`] offers what `masq nat list`, `masq status` and the metrics need:
//! [`Ebpf::nat_entries`], [`Ebpf::counters`], [`Ebpf::pressure`] and the garbage collector
//! [`Ebpf::gc`]. [`load_unpinned`] gives tests and benchmarks a private instance.

pub mod attach;
mod batch;
pub mod bpffs;
pub mod carry;
pub mod clock;
#[cfg(feature = "test-programs")]
pub mod cni_like;
pub mod contents;
pub mod family;
pub mod gc;
pub mod hooks;
pub mod kfunc;
mod load;
pub mod maps;
pub mod maps6;
pub mod nat;
pub mod policy;
pub mod snat_pools;
mod support;
mod tc_dump;
mod tries;
pub mod types;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use aya::programs::SchedClassifier;
use aya::EbpfLoader;

pub use attach::{AttachMode, Direction};
pub use clock::KernelClock;
pub use contents::{port_table, Contents, DEFAULT_PORT_RANGES};
pub use family::Flow;
pub use gc::schedule::GcSchedule;
pub use gc::{FlowKind, FlowState, GcReport, GcTotals, NatTimeouts};
pub use hooks::{HookOrder, HookedProgram};
pub use kfunc::KernCtx;
pub use load::{
    load_unpinned, load_unpinned_flavor, load_unpinned_with, Flavor, PortSearch, BOUNDED_OBJECT,
    OBJECT,
};
pub use maps::{Maps, DEFAULT_NAT_CAPACITY};
pub use nat::{NatDirection, NatListEntry, Pressure};
pub use types::Reason;

use load::{flavor_findings, load_object};

use crate::{names, Datapath, Desired, Error, Kind, PortRange, SyncReport};

/// The egress (SNAT) program.
pub const EGRESS_PROGRAM: &str = "masq_egress";
/// The ingress (reverse SNAT) program.
pub const INGRESS_PROGRAM: &str = "masq_ingress";
/// The steering program of the secondary interfaces (VPC-native nodes): SNAT to the egress
/// interface's address and a redirect there.
pub const STEER_PROGRAM: &str = "masq_steer";
/// Subdirectory of the pin directory holding the maps; bump with any map layout change.
pub const MAPS_SUBDIR: &str = "maps-v3";
/// What every version of [`MAPS_SUBDIR`] starts with.
pub(crate) const MAPS_SUBDIR_PREFIX: &str = "maps-v";

/// The flow table's size and lifetimes (`--nat-table-size`, `--nat-timeout-*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatSettings {
    /// Entries each half of the table holds: the most concurrent flows (kept and inbound
    /// flows count too).
    pub table_size: u32,
    /// Idle lifetimes by state.
    pub timeouts: NatTimeouts,
}

impl Default for NatSettings {
    fn default() -> Self {
        NatSettings {
            table_size: DEFAULT_NAT_CAPACITY,
            timeouts: NatTimeouts::default(),
        }
    }
}

/// Wraps any error displayable as one line into [`Error::Kernel`], naming what was done.
pub(crate) fn kernel_err<E: std::fmt::Display>(what: impl Into<String>) -> impl FnOnce(E) -> Error {
    let what = what.into();
    move |e| Error::Kernel {
        what,
        source: std::io::Error::other(e.to_string()),
    }
}

/// The programs and maps of this process, once loaded.
struct Loaded {
    bpf: aya::Ebpf,
    maps: Maps,
    /// What this process last wrote, to tell drift from our own changes.
    last_written: Option<Contents>,
    /// Hooks this process has put its programs on; later syncs only check they are still there
    /// (re-adopting the pin every resync would leak an fd each time).
    hooked: BTreeSet<(String, Direction)>,
    /// The build that loaded.
    flavor: Flavor,
    /// The flow table of the maps these replace, copied again once the programs hold the hooks.
    carry: Option<carry::OldTable>,
}

/// The eBPF datapath. See the module documentation.
pub struct Ebpf {
    pin_dir: PathBuf,
    mode: AttachMode,
    loaded: Option<Loaded>,
    /// The flow table's size and lifetimes, from the last sync (the defaults before one).
    nat: NatSettings,
    /// `--enable-ipv6` at the last sync: the IPv6 flow table gets its size only then.
    ipv6: bool,
    /// Where this process mounted the bpffs, when the pin directory had none.
    mounted_bpffs: Option<PathBuf>,
    /// When housekeeping runs a GC pass.
    gc_schedule: GcSchedule,
}

impl Default for Ebpf {
    fn default() -> Self {
        Ebpf::new(PathBuf::from(names::BPF_PIN_DIR))
    }
}

impl Ebpf {
    /// A datapath pinning under `pin_dir`. Nothing is loaded before the first `sync`.
    pub fn new(pin_dir: PathBuf) -> Ebpf {
        Ebpf {
            pin_dir,
            mode: AttachMode::Auto,
            loaded: None,
            nat: NatSettings::default(),
            ipv6: false,
            mounted_bpffs: None,
            gc_schedule: GcSchedule::default(),
        }
    }

    /// Chooses how programs are attached (default: TCX, clsact where TCX is missing).
    pub fn with_attach_mode(mut self, mode: AttachMode) -> Ebpf {
        self.mode = mode;
        self
    }

    /// Can this datapath run here? Loads the programs once (the verifier's verdict) without
    /// attaching or pinning anything, then makes sure the pin directory is on a bpf filesystem,
    /// mounting one where it is not ([`bpffs`]). For `--datapath auto`.
    pub fn probe(&mut self) -> Result<(), Error> {
        // The verifier's verdict only: the smallest flow tables (they are preallocated).
        load_object(KernCtx::detect(), |object| {
            let mut loader = EbpfLoader::new();
            for half in maps::name::NAT_HALVES {
                loader.map_max_entries(half, 1);
            }
            loader.load(object)
        })?;
        self.ensure_bpffs()
    }

    fn ensure_bpffs(&mut self) -> Result<(), Error> {
        if let Some(mounted) = bpffs::ensure(&self.pin_dir)? {
            self.mounted_bpffs = Some(mounted);
        }
        Ok(())
    }

    /// The pin directory.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    fn maps_dir(&self) -> PathBuf {
        self.pin_dir.join(MAPS_SUBDIR)
    }

    fn load(&mut self) -> Result<&mut Loaded, Error> {
        if self.loaded.is_none() {
            let maps_dir = self.maps_dir();
            let capacity = carry::Capacities::new(self.nat.table_size, self.ipv6);
            self.ensure_bpffs()?;
            let old = carry::stage(&self.pin_dir, capacity)?;
            std::fs::create_dir_all(&maps_dir)
                .map_err(kernel_err(format!("creating {}", maps_dir.display())))?;
            let paths: Vec<(&str, PathBuf)> = maps::name::ALL
                .iter()
                .map(|name| (*name, maps_dir.join(name)))
                .collect();
            let (mut bpf, flavor) = load_object(KernCtx::detect(), |object| {
                let mut loader = EbpfLoader::new();
                for (name, path) in &paths {
                    // Opens the pin when it exists (adoption), creates and pins the map otherwise.
                    loader.map_pin_path(name, path.as_path());
                }
                loader
                    .map_max_entries(maps::name::NAT_EGRESS, capacity.ipv4)
                    .map_max_entries(maps::name::NAT_INGRESS, capacity.ipv4)
                    .map_max_entries(maps::name::NAT6_EGRESS, capacity.ipv6)
                    .map_max_entries(maps::name::NAT6_INGRESS, capacity.ipv6);
                loader.load(object)
            })?;
            let retired = carry::unpin_retired(&maps_dir);
            if !retired.is_empty() {
                tracing::info!(?retired, "unpinned maps this version no longer has");
            }
            let mut maps = Maps::take_from(&mut bpf)?;
            if let Some(old) = &old {
                let report = old.copy_into(&mut maps)?;
                tracing::info!(
                    copied = report.copied,
                    dropped = report.dropped,
                    "carried the flow table over into new maps"
                );
            }
            self.loaded = Some(Loaded {
                bpf,
                maps,
                last_written: None,
                hooked: BTreeSet::new(),
                flavor,
                carry: old,
            });
        }
        Ok(self.loaded.as_mut().expect("loaded just above"))
    }

    /// Runs `f` on this process's maps, or on the pinned ones when nothing is loaded here
    /// (`masq nat list` and `masq status` run beside the agent).
    fn with_maps<R>(&self, f: impl FnOnce(&Maps) -> Result<R, Error>) -> Result<R, Error> {
        match &self.loaded {
            Some(loaded) => f(&loaded.maps),
            None => f(&Maps::open_pinned(&self.maps_dir())?),
        }
    }

    /// Every NAT entry, both halves (`masq nat list`).
    pub fn nat_entries(&self) -> Result<Vec<NatListEntry>, Error> {
        let clock = KernelClock::get()?;
        self.with_maps(|maps| nat::list(maps, &clock))
    }

    /// Packets per reason since the maps were created (metrics, `masq status`).
    pub fn counters(&self) -> Result<BTreeMap<Reason, u64>, Error> {
        self.with_maps(nat::counters)
    }

    /// NAT table fill and the busiest port pool (metrics).
    pub fn pressure(&self) -> Result<Pressure, Error> {
        self.with_maps(nat::pressure)
    }

    /// One garbage-collection pass over the NAT table; run it periodically (every few seconds).
    pub fn gc(&mut self) -> Result<GcReport, Error> {
        let clock = KernelClock::get()?;
        let now = clock.now();
        let timeouts = self.nat.timeouts;
        let report = match &mut self.loaded {
            Some(loaded) => gc::gc(&mut loaded.maps, &clock, now, &timeouts),
            None => gc::gc(
                &mut Maps::open_pinned(&self.maps_dir())?,
                &clock,
                now,
                &timeouts,
            ),
        }?;
        gc::GcTotals::add(&report);
        Ok(report)
    }

    /// What runs on each tc hook masq is on, in the kernel's order (`masq status`).
    fn hook_orders(&self) -> Vec<HookOrder> {
        self.loaded
            .as_ref()
            .map(|loaded| hooks::orders(&loaded.hooked))
            .unwrap_or_default()
    }
}

impl Datapath for Ebpf {
    fn kind(&self) -> Kind {
        Kind::Ebpf
    }

    /// A GC pass when its schedule says one is due (`gc::schedule`: every tick while passes
    /// are cheap or the table is short of room).
    fn housekeeping(&mut self) -> Result<Option<String>, Error> {
        let began = Instant::now();
        let signals = self.with_maps(gc::schedule::Signals::read).ok();
        let Some(due) = self.gc_schedule.due(began, signals, self.nat.table_size) else {
            GcTotals::defer();
            return Ok(None);
        };
        let report = self.gc()?;
        self.gc_schedule.passed(began, &report, signals);
        Ok((report.removed() + report.restored() > 0)
            .then(|| format!("{} [{}]", report.summary(), due.label())))
    }

    fn findings(&self, _desired: &Desired) -> Vec<String> {
        let checksums = self
            .loaded
            .as_ref()
            .map(|loaded| flavor_findings(loaded.flavor))
            .unwrap_or_default();
        let mount = self.mounted_bpffs.as_deref().map(bpffs::mounted_note);
        let order = self
            .hook_orders()
            .iter()
            .filter_map(HookOrder::warning)
            .collect::<Vec<_>>();
        checksums.into_iter().chain(mount).chain(order).collect()
    }

    fn hook_order(&self) -> Vec<HookOrder> {
        self.hook_orders()
    }

    fn intact(&self) -> Result<bool, Error> {
        // A TCX query per hook (and a filter dump on the clsact fallback).
        Ok(self.loaded.as_ref().is_none_or(|loaded| {
            loaded
                .hooked
                .iter()
                .all(|(iface, dir)| attach::is_attached(iface, *dir))
        }))
    }

    fn render(&self, desired: &Desired) -> String {
        let mut out = Contents::for_desired(desired).render();
        let _ = writeln!(
            out,
            "# attachments (pinned under {})",
            self.pin_dir.display()
        );
        out.push_str(&hooks::render(&desired.node));
        out
    }

    fn sync(&mut self, desired: &Desired) -> Result<SyncReport, Error> {
        Ebpf::check_supported(desired)?;
        self.nat = desired.node.nat;
        self.ipv6 = desired.node.enable_ipv6;
        let pin_dir = self.pin_dir.clone();
        let mode = self.mode;
        let want = Contents::for_desired(desired);
        let hooks = hooks::wanted(&desired.node);
        let loaded = self.load()?;
        let have = loaded.maps.read()?;
        let drift_maps = loaded.last_written.as_ref().is_some_and(|w| *w != have);
        let writes = loaded.maps.apply_over(&have, &want)?;
        drop(have);
        let installed_entries = want.len();
        loaded.last_written = Some(want);

        let mut relinked = false;
        let mut repaired = false;
        for (iface, dir) in &hooks {
            let hook = (iface.clone(), *dir);
            if loaded.hooked.contains(&hook) {
                if attach::is_attached(iface, *dir) {
                    continue;
                }
                // Someone detached it, or the interface was recreated.
                repaired = true;
            }
            let prog: &mut SchedClassifier = loaded
                .bpf
                .program_mut(dir.program())
                .ok_or_else(|| Error::Unsupported(format!("program {} missing", dir.program())))?
                .try_into()
                .map_err(kernel_err("program type"))?;
            relinked |= attach::ensure(prog, &pin_dir, iface, *dir, mode)?;
            loaded.hooked.insert(hook);
        }
        // Hooks no longer wanted (an interface that stopped being an uplink) lose masq's programs.
        let keep: BTreeSet<(String, Direction)> = hooks.into_iter().collect();
        let removed = attach::detach_unwanted(&pin_dir, &keep, &loaded.hooked)?;
        for hook in &removed {
            loaded.hooked.remove(hook);
        }
        relinked |= !removed.is_empty();
        // The old programs are off every hook now: what they created meanwhile comes over too.
        if let Some(old) = loaded.carry.take() {
            let report = old.copy_into(&mut loaded.maps)?;
            tracing::info!(copied = report.copied, "carried the last flows over");
            old.retire()?;
        }
        Ok(SyncReport {
            changed: writes > 0 || relinked,
            drift_repaired: drift_maps || repaired,
            installed_entries,
        })
    }

    fn matches(&self, desired: &Desired) -> Result<bool, Error> {
        if self.loaded.is_none() && !self.maps_dir().join(maps::name::CONFIG).exists() {
            return Ok(false); // nothing installed
        }
        let want = Contents::for_desired(desired);
        let have = self.with_maps(|maps| maps.read())?;
        if have != want {
            return Ok(false);
        }
        Ok(hooks::wanted(&desired.node)
            .iter()
            .all(|(iface, dir)| attach::is_attached(iface, *dir)))
    }

    fn cleanup(&mut self) -> Result<(), Error> {
        self.loaded = None;
        attach::detach_all(&self.pin_dir)?;
        match std::fs::remove_dir_all(&self.pin_dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Kernel {
                what: format!("removing {}", self.pin_dir.display()),
                source: e,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_says_which_build_runs_when_it_is_not_the_best() {
        let best = Flavor {
            kern_ctx: KernCtx::Kfunc(42),
            port_search: PortSearch::Complete,
        };
        assert!(flavor_findings(best).is_empty());
        let helpers = flavor_findings(Flavor {
            kern_ctx: KernCtx::Absent,
            ..best
        });
        assert!(
            helpers.len() == 1 && helpers[0].contains("helpers"),
            "{helpers:?}"
        );
        let bounded = flavor_findings(Flavor {
            kern_ctx: KernCtx::Absent,
            port_search: PortSearch::Bounded,
        });
        assert_eq!(bounded.len(), 2);
        assert!(bounded.iter().all(|f| !f.contains('\n')));
    }

    /// The kfunc refused by the verifier (BTF id 1 is no function): the instance loaded says
    /// the helpers are in use.
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn a_refused_kfunc_is_reported_as_the_helper_path() {
        masq_testbed::require(&[]);
        let (_, used) =
            load_object(KernCtx::Kfunc(1), |object| EbpfLoader::new().load(object)).unwrap();
        assert_eq!(used.kern_ctx, KernCtx::Absent);
        assert_eq!(used.port_search, PortSearch::Complete);
    }
}
