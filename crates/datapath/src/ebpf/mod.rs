//! The eBPF datapath: tc programs (`bpf/masq.bpf.c`) doing SNAT on egress and reverse SNAT on
//! ingress with masq's own NAT table, loaded with aya and attached with TCX (clsact fallback).
//!
//! Everything lives under one pin directory (default [`crate::names::BPF_PIN_DIR`]): the maps in
//! `maps-v2/` (the version changes with any map layout change, since aya reuses a pinned map
//! without checking it; loading unpins the maps of other versions) and the links in `links/`. A
//! restarted agent reopens the maps, NAT entries included, and swaps its programs into the
//! pinned links in place, so live connections never notice.
//!
//! Besides [`Datapath`], [`Ebpf`] offers what `masq nat list`, `masq status` and the metrics need:
//! [`Ebpf::nat_entries`], [`Ebpf::counters`], [`Ebpf::pressure`] and the garbage collector
//! [`Ebpf::gc`]. [`load_unpinned`] gives tests and benchmarks a private instance.

pub mod attach;
mod batch;
pub mod bpffs;
pub mod clock;
#[cfg(feature = "test-programs")]
pub mod cni_like;
pub mod hooks;
pub mod kfunc;
pub mod maps;
pub mod nat;
mod tc_dump;
pub mod types;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use aya::programs::SchedClassifier;
use aya::EbpfLoader;

pub use attach::{AttachMode, Direction};
pub use clock::KernelClock;
pub use hooks::{HookOrder, HookedProgram};
pub use kfunc::KernCtx;
pub use maps::{Contents, Maps, DEFAULT_PORT_RANGE};
pub use nat::{GcReport, NatDirection, NatListEntry, Pressure};
pub use types::Reason;

use crate::egress::{self, IpRules};
use crate::{names, Datapath, Desired, Error, Kind, NodeSettings, PortRange, SyncReport};

/// The compiled programs, built from `bpf/` by `build.rs`; loaded through [`kfunc::object`].
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/masq.bpf.o"));

/// The egress (SNAT) program.
pub const EGRESS_PROGRAM: &str = "masq_egress";
/// The ingress (reverse SNAT) program.
pub const INGRESS_PROGRAM: &str = "masq_ingress";
/// The steering program of the secondary interfaces (VPC-native nodes): SNAT to the egress
/// interface's address and a redirect there.
pub const STEER_PROGRAM: &str = "masq_steer";
/// Subdirectory of the pin directory holding the maps; bump with any map layout change.
pub const MAPS_SUBDIR: &str = "maps-v2";
/// What every version of [`MAPS_SUBDIR`] starts with.
const MAPS_SUBDIR_PREFIX: &str = "maps-v";

/// Wraps any error displayable as one line into [`Error::Kernel`], naming what was done.
pub(crate) fn kernel_err<E: std::fmt::Display>(what: impl Into<String>) -> impl FnOnce(E) -> Error {
    let what = what.into();
    move |e| Error::Kernel {
        what,
        source: std::io::Error::other(e.to_string()),
    }
}

/// Loads the object through `loader` (which sets up the maps) and then its programs, with the
/// kernel-context calls resolved as `kern_ctx` says. A verifier that refuses the programs with
/// the kfunc (a kernel whose rules for it differ from the ones masq was tested on) gets them
/// once more with the checksum helpers only: slower by a helper call, never unavailable.
/// Returns the instance and how its kernel-context calls were resolved.
fn load_object(
    kern_ctx: KernCtx,
    mut loader: impl FnMut(&[u8]) -> Result<aya::Ebpf, aya::EbpfError>,
) -> Result<(aya::Ebpf, KernCtx), Error> {
    let mut attempt = |kern_ctx| -> Result<aya::Ebpf, Error> {
        let mut bpf = loader(kfunc::object(kern_ctx).bytes())
            .map_err(kernel_err("loading the masq eBPF object"))?;
        load_programs(&mut bpf)?;
        Ok(bpf)
    };
    match attempt(kern_ctx) {
        Err(e) if kern_ctx != KernCtx::Absent => {
            tracing::warn!(
                error = %e,
                "the programs were refused with bpf_cast_to_kern_ctx; loading them with the checksum helpers"
            );
            Ok((attempt(KernCtx::Absent)?, KernCtx::Absent))
        }
        loaded => Ok((loaded?, kern_ctx)),
    }
}

/// What `masq status` says when the programs update transport checksums through the helpers.
fn checksum_finding(kern_ctx: KernCtx) -> Option<String> {
    (kern_ctx == KernCtx::Absent).then(|| {
        "the eBPF programs update TCP/UDP checksums through the kernel helpers (no usable \
         bpf_cast_to_kern_ctx on this kernel, 6.2+ with BTF): about 28 ns more per translated packet"
            .to_string()
    })
}

fn load_programs(bpf: &mut aya::Ebpf) -> Result<(), Error> {
    for name in [EGRESS_PROGRAM, INGRESS_PROGRAM, STEER_PROGRAM] {
        let prog: &mut SchedClassifier = bpf
            .program_mut(name)
            .ok_or_else(|| Error::Unsupported(format!("program {name} missing from the object")))?
            .try_into()
            .map_err(kernel_err(format!("program {name} is not a classifier")))?;
        prog.load()
            .map_err(kernel_err(format!("loading program {name} (verifier)")))?;
    }
    Ok(())
}

/// A private instance with unpinned maps and loaded (unattached) programs: for `test_run` in
/// tests and benchmarks. Nothing of it outlives the returned value.
pub fn load_unpinned() -> Result<aya::Ebpf, Error> {
    load_unpinned_with(KernCtx::detect())
}

/// [`load_unpinned`] with the kernel-context calls resolved as given (tests of both ways).
pub fn load_unpinned_with(kern_ctx: KernCtx) -> Result<aya::Ebpf, Error> {
    load_object(kern_ctx, |object| EbpfLoader::new().load(object)).map(|(bpf, _)| bpf)
}

/// Unpins the maps of other layout versions (an upgrade across a layout change starts a new NAT
/// table: docs/ebpf.md). Safe before the old programs leave their hooks: they hold their maps,
/// which the kernel frees with the last of them.
fn retire_other_map_versions(pin_dir: &Path) -> Result<(), Error> {
    let Ok(entries) = std::fs::read_dir(pin_dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(MAPS_SUBDIR_PREFIX) && name != MAPS_SUBDIR {
            std::fs::remove_dir_all(entry.path())
                .map_err(kernel_err(format!("removing {}", entry.path().display())))?;
            tracing::info!(dir = %entry.path().display(), "removed the maps of another layout version");
        }
    }
    Ok(())
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
    /// How the programs' kernel-context calls were resolved.
    kern_ctx: KernCtx,
}

/// The eBPF datapath. See the module documentation.
pub struct Ebpf {
    pin_dir: PathBuf,
    mode: AttachMode,
    loaded: Option<Loaded>,
    /// masq's `ip rule` for the replies of steered flows (shared with the netfilter datapaths).
    rules: IpRules,
    /// Where this process mounted the bpffs, when the pin directory had none.
    mounted_bpffs: Option<PathBuf>,
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
            rules: IpRules::new(),
            mounted_bpffs: None,
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
        load_unpinned()?;
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
            self.ensure_bpffs()?;
            retire_other_map_versions(&self.pin_dir)?;
            std::fs::create_dir_all(&maps_dir)
                .map_err(kernel_err(format!("creating {}", maps_dir.display())))?;
            let paths: Vec<(&str, PathBuf)> = maps::name::ALL
                .iter()
                .map(|name| (*name, maps_dir.join(name)))
                .collect();
            let (mut bpf, kern_ctx) = load_object(KernCtx::detect(), |object| {
                let mut loader = EbpfLoader::new();
                for (name, path) in &paths {
                    // Opens the pin when it exists (adoption), creates and pins the map otherwise.
                    loader.map_pin_path(name, path.as_path());
                }
                loader.load(object)
            })?;
            let maps = Maps::take_from(&mut bpf)?;
            self.loaded = Some(Loaded {
                bpf,
                maps,
                last_written: None,
                hooked: BTreeSet::new(),
                kern_ctx,
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

    /// NAT table fill and the busiest pool of `range`, the ports handed out when one must
    /// change (metrics).
    pub fn pressure(&self, range: PortRange) -> Result<Pressure, Error> {
        self.with_maps(|maps| nat::pressure(maps, range))
    }

    /// One garbage-collection pass over the NAT table; run it periodically (every few seconds).
    pub fn gc(&mut self) -> Result<GcReport, Error> {
        let clock = KernelClock::get()?;
        let now = clock.now();
        match &mut self.loaded {
            Some(loaded) => nat::gc(&mut loaded.maps, &clock, now),
            None => nat::gc(&mut Maps::open_pinned(&self.maps_dir())?, &clock, now),
        }
    }

    /// Every hook masq's programs belong on ([`hooks::wanted`]).
    fn hooks(&self, node: &NodeSettings) -> Result<Vec<(String, Direction)>, Error> {
        let uplinks = if node.active_egress_routing().is_some() {
            self.rules.default_route_interfaces()?
        } else {
            BTreeSet::new()
        };
        Ok(hooks::wanted(node, &uplinks))
    }

    /// What runs on each tc hook masq is on, in the kernel's order (`masq status`).
    fn hook_orders(&self) -> Vec<HookOrder> {
        self.loaded
            .as_ref()
            .map(|loaded| hooks::orders(&loaded.hooked))
            .unwrap_or_default()
    }

    /// Whether these node settings are within what the programs translate (IPv4 only); known
    /// from the flags alone, so `--datapath auto` can pass eBPF over before starting it.
    pub fn supports(node: &NodeSettings) -> Result<(), Error> {
        if node.enable_ipv6 {
            return Err(Error::Unsupported(
                "the ebpf datapath masquerades IPv4 only; --enable-ipv6 needs nftables or iptables"
                    .to_string(),
            ));
        }
        Ok(())
    }

    fn check_supported(desired: &Desired) -> Result<(), Error> {
        Ebpf::supports(&desired.node)?;
        if desired.node.interfaces.is_empty() {
            return Err(Error::Unsupported(
                "the ebpf datapath needs at least one interface (--interfaces)".to_string(),
            ));
        }
        Ok(())
    }
}

impl Datapath for Ebpf {
    fn kind(&self) -> Kind {
        Kind::Ebpf
    }

    fn housekeeping(&mut self) -> Result<Option<String>, Error> {
        let report = self.gc()?;
        let removed = report.expired_pairs + report.orphans + report.host_reservations;
        Ok((removed > 0).then(|| {
            format!(
                "NAT table GC: {} expired pairs, {} orphaned halves, {} host reservations removed",
                report.expired_pairs, report.orphans, report.host_reservations
            )
        }))
    }

    fn findings(&self, _desired: &Desired) -> Vec<String> {
        let checksums = self
            .loaded
            .as_ref()
            .and_then(|loaded| checksum_finding(loaded.kern_ctx));
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
        out.push_str(&egress::render_rules(&desired.node));
        out
    }

    fn sync(&mut self, desired: &Desired) -> Result<SyncReport, Error> {
        Ebpf::check_supported(desired)?;
        let pin_dir = self.pin_dir.clone();
        let mode = self.mode;
        let want = Contents::for_desired(desired);
        let hooks = self.hooks(&desired.node)?;
        // The rule first: a steered reply is marked as soon as the maps say so.
        let policy_rules = egress::desired_rules(&desired.node);
        let rules_added = self.rules.add_missing(&policy_rules)?.changed;
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
        let rules_removed = self.rules.remove_stale(&policy_rules)?.changed;

        Ok(SyncReport {
            changed: writes > 0 || relinked || rules_added || rules_removed,
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
        let attached = self
            .hooks(&desired.node)?
            .iter()
            .all(|(iface, dir)| attach::is_attached(iface, *dir));
        Ok(attached && self.rules.matches(&egress::desired_rules(&desired.node))?)
    }

    fn cleanup(&mut self) -> Result<(), Error> {
        self.loaded = None;
        attach::detach_all(&self.pin_dir)?;
        // After the programs: nothing marks replies any more.
        self.rules.remove_stale(&[])?;
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
    fn status_says_when_checksums_go_through_the_helpers() {
        assert!(checksum_finding(KernCtx::Kfunc(42)).is_none());
        let finding = checksum_finding(KernCtx::Absent).unwrap();
        assert!(finding.contains("helpers"), "{finding}");
        assert!(!finding.contains('\n'));
    }

    /// The kfunc refused by the verifier (BTF id 1 is no function): the instance loaded says
    /// the helpers are in use.
    #[test]
    fn a_refused_kfunc_is_reported_as_the_helper_path() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipping: loading programs needs root");
            return;
        }
        let (_, used) =
            load_object(KernCtx::Kfunc(1), |object| EbpfLoader::new().load(object)).unwrap();
        assert_eq!(used, KernCtx::Absent);
    }
}
