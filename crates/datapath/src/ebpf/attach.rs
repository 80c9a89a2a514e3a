//! Attaching the programs to interfaces so they outlive the agent, adopting what a previous run
//! left, and removing it all.
//!
//! Position: a TCX chain (and clsact classification) ends at the first program that returns
//! anything but `TC_ACT_UNSPEC`, and a CNI's programs return `TC_ACT_OK` (Cilium's `bpf_host`
//! does). So masq attaches at the head of every hook, on egress (SNAT before a CNI's egress
//! program ends the chain) and on ingress (reverse SNAT before a CNI's ingress program acts on
//! the destination). masq's programs return `TC_ACT_UNSPEC` for what they let through, so the
//! programs behind them still run. masq never detaches or moves a program it does not own.
//!
//! TCX (kernel ≥ 6.6) first, at the head (`LinkOrder::first()`): a TCX link lives only while an
//! fd or a pin holds it, so every link is pinned under `<pin dir>/links/<iface>-<direction>`; a
//! restarted agent reopens that pin and swaps its freshly loaded program in with
//! `attach_to_link` (`BPF_LINK_UPDATE`: the same link at the same position, no packet ever passes
//! without a program). A link gone (interface recreated, detached by someone) is created again
//! at the head. Detach-then-attach is never used: on TCX it let 91% of a flood through
//! untranslated during swaps (EBPF-NOTES).
//!
//! clsact fallback: a netlink filter with handle [`NETLINK_HANDLE`] at the lowest priority masq
//! can use (`hooks::clsact_priority`, normally 1, before every filter of a higher priority). A
//! restarted agent finds it in a filter dump and replaces its program in place (the kernel keeps
//! a replaced filter's position); aya would delete it when the program is dropped, so the link
//! is forgotten on purpose.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, LinkOrder, PinnedLink};
use aya::programs::tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle};
use aya::programs::{SchedClassifier, TcAttachType};

use super::hooks::{self, is_masq_program};
use super::kernel_err;
use crate::Error;

/// Handle of masq's clsact filters (fallback only; "ma").
pub const NETLINK_HANDLE: TcHandle = TcHandle::new(0, 0x6d61);

/// Which hook of an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// SNAT of traffic leaving.
    Egress,
    /// Reverse SNAT of replies arriving.
    Ingress,
    /// On a secondary interface's egress (VPC-native nodes): SNAT of what is masqueraded and a
    /// redirect to the egress interface (`docs/vpc-native.md`).
    Steer,
}

impl Direction {
    /// Both, egress first.
    pub const BOTH: [Direction; 2] = [Direction::Egress, Direction::Ingress];
    /// Every hook masq uses.
    pub const ALL: [Direction; 3] = [Direction::Egress, Direction::Ingress, Direction::Steer];

    /// `egress`, `ingress` or `steer` (also the suffix of the link's pin).
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Egress => "egress",
            Direction::Ingress => "ingress",
            Direction::Steer => "steer",
        }
    }

    /// The program attached on this hook.
    pub fn program(self) -> &'static str {
        match self {
            Direction::Egress => super::EGRESS_PROGRAM,
            Direction::Ingress => super::INGRESS_PROGRAM,
            Direction::Steer => super::STEER_PROGRAM,
        }
    }

    /// The tc hook.
    pub fn tc(self) -> TcAttachType {
        match self {
            Direction::Egress | Direction::Steer => TcAttachType::Egress,
            Direction::Ingress => TcAttachType::Ingress,
        }
    }
}

/// Where the link of `iface`/`dir` is pinned.
pub fn link_pin(pin_dir: &Path, iface: &str, dir: Direction) -> PathBuf {
    pin_dir
        .join("links")
        .join(format!("{iface}-{}", dir.as_str()))
}

/// How programs are attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttachMode {
    /// TCX where the kernel has it (≥ 6.6), clsact otherwise.
    #[default]
    Auto,
    /// clsact filters only (older kernels; also how the fallback is tested).
    Clsact,
}

/// Is one of masq's programs attached to `iface` on `dir` right now (TCX or clsact)?
pub fn is_attached(iface: &str, dir: Direction) -> bool {
    let on_tcx = SchedClassifier::query_tcx(iface, dir.tc())
        .map(|(_, programs)| {
            programs
                .iter()
                .any(|p| p.name_as_str() == Some(dir.program()))
        })
        .unwrap_or(false);
    on_tcx
        || hooks::clsact_filters(iface, dir.tc() == TcAttachType::Ingress)
            .map(|filters| {
                filters
                    .iter()
                    .any(|f| f.name.as_deref() == Some(dir.program()))
            })
            .unwrap_or(false)
}

/// Makes `prog` the program on `iface`/`dir`: swaps it into the pinned link (or the clsact
/// filter) a previous run left, or creates a new one. Returns true when something had to be
/// created.
pub fn ensure(
    prog: &mut SchedClassifier,
    pin_dir: &Path,
    iface: &str,
    dir: Direction,
    mode: AttachMode,
) -> Result<bool, Error> {
    if mode == AttachMode::Clsact {
        return attach_netlink(prog, iface, dir);
    }
    let pin = link_pin(pin_dir, iface, dir);
    if pin.exists() {
        if adopt_tcx(prog, &pin).is_ok() && is_attached(iface, dir) {
            return Ok(false);
        }
        // The link died with its interface or was detached by someone: start over.
        let _ = std::fs::remove_file(&pin);
    }
    match attach_tcx(prog, &pin, iface, dir) {
        Ok(()) => Ok(true),
        Err(tcx_error) => {
            tracing::info!(%iface, direction = dir.as_str(), error = %tcx_error, "TCX unavailable, using clsact");
            attach_netlink(prog, iface, dir)
        }
    }
}

fn adopt_tcx(prog: &mut SchedClassifier, pin: &Path) -> Result<(), Error> {
    let what = || format!("adopting the link pinned at {}", pin.display());
    let pinned = PinnedLink::from_pin(pin).map_err(kernel_err(what()))?;
    let link = SchedClassifierLink::try_from(FdLink::from(pinned)).map_err(kernel_err(what()))?;
    // Ownership moves to `prog`; dropping it later only closes an fd, the pin keeps the link.
    prog.attach_to_link(link).map_err(kernel_err(what()))?;
    Ok(())
}

fn attach_tcx(
    prog: &mut SchedClassifier,
    pin: &Path,
    iface: &str,
    dir: Direction,
) -> Result<(), Error> {
    let what = || format!("attaching {} to {iface} ({})", dir.program(), dir.as_str());
    let id = prog
        .attach_with_options(
            iface,
            dir.tc(),
            // At the head: see the module documentation.
            TcAttachOptions::TcxOrder(LinkOrder::first()),
        )
        .map_err(kernel_err(what()))?;
    let link = prog.take_link(id).map_err(kernel_err(what()))?;
    let fd_link = FdLink::try_from(link).map_err(kernel_err(what()))?;
    if let Some(parent) = pin.parent() {
        std::fs::create_dir_all(parent)
            .map_err(kernel_err(format!("creating {}", parent.display())))?;
    }
    fd_link
        .pin(pin)
        .map_err(kernel_err(format!("pinning the link at {}", pin.display())))?;
    Ok(())
}

/// Replaces the program of masq's filter in place, or creates the filter. Returns true when
/// it had to be created.
fn attach_netlink(prog: &mut SchedClassifier, iface: &str, dir: Direction) -> Result<bool, Error> {
    let what = || {
        format!(
            "attaching {} to {iface} ({}) via clsact",
            dir.program(),
            dir.as_str()
        )
    };
    if let Err(e) = tc::qdisc_add_clsact(iface) {
        // EEXIST: the qdisc is already there (ours from a previous run, or someone else's).
        if !matches!(&e, tc::TcError::NetlinkError(n) if n.raw_os_error() == Some(libc::EEXIST)) {
            tracing::debug!(%iface, error = %e, "adding clsact");
        }
    }
    let filters = hooks::clsact_filters(iface, dir.tc() == TcAttachType::Ingress)?;
    // Ours from a previous run, wherever it sits (any of masq's programs: an interface that
    // turns from translated in place to steered keeps its egress filter and position).
    let handle = u32::from(NETLINK_HANDLE);
    let adopted = filters
        .iter()
        .find(|f| f.handle == handle && f.name.as_deref().is_some_and(is_masq_program))
        .and_then(|own| {
            let link =
                SchedClassifierLink::attached(iface, dir.tc(), own.priority, NETLINK_HANDLE, None)
                    .ok()?;
            prog.attach_to_link(link).ok()
        });
    let (id, created) = match adopted {
        Some(id) => (id, false),
        None => {
            let options = TcAttachOptions::Netlink(NlOptions {
                priority: hooks::clsact_priority(&filters, handle),
                handle: NETLINK_HANDLE,
                classid: None,
            });
            let id = prog
                .attach_with_options(iface, dir.tc(), options)
                .map_err(kernel_err(what()))?;
            (id, true)
        }
    };
    // aya deletes the filter when the link is dropped; it must outlive this process.
    std::mem::forget(prog.take_link(id).map_err(kernel_err(what()))?);
    Ok(created)
}

/// Detaches every link pinned under `pin_dir/links` (forcibly, even if another process still
/// holds an fd on it) and masq's clsact filters on every interface of this namespace.
pub fn detach_all(pin_dir: &Path) -> Result<(), Error> {
    let links = pin_dir.join("links");
    if let Ok(entries) = std::fs::read_dir(&links) {
        for entry in entries.flatten() {
            let path = entry.path();
            if let Err(e) = force_detach(&path) {
                tracing::warn!(path = %path.display(), error = %e, "detaching pinned link");
            }
            std::fs::remove_file(&path)
                .map_err(kernel_err(format!("removing {}", path.display())))?;
        }
    }
    for iface in interface_names() {
        for dir in Direction::ALL {
            let _ = tc::qdisc_detach_program(&iface, dir.tc(), dir.program());
        }
    }
    Ok(())
}

/// Removes masq from hooks that are no longer wanted: pinned TCX links of hooks not in `keep`,
/// and the clsact filters among `hooked` not in `keep`. Returns the hooks removed.
pub fn detach_unwanted(
    pin_dir: &Path,
    keep: &BTreeSet<(String, Direction)>,
    hooked: &BTreeSet<(String, Direction)>,
) -> Result<Vec<(String, Direction)>, Error> {
    let mut removed = Vec::new();
    if let Ok(entries) = std::fs::read_dir(pin_dir.join("links")) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(hook) = Direction::ALL.iter().find_map(|dir| {
                name.strip_suffix(&format!("-{}", dir.as_str()))
                    .map(|iface| (iface.to_string(), *dir))
            }) else {
                continue;
            };
            if keep.contains(&hook) {
                continue;
            }
            let path = entry.path();
            if let Err(e) = force_detach(&path) {
                tracing::warn!(path = %path.display(), error = %e, "detaching an unwanted link");
            }
            std::fs::remove_file(&path)
                .map_err(kernel_err(format!("removing {}", path.display())))?;
            removed.push(hook);
        }
    }
    for hook in hooked {
        if !keep.contains(hook) && !removed.contains(hook) {
            // A clsact filter (TCX links were handled above); gone already is fine.
            let (iface, dir) = hook;
            let _ = tc::qdisc_detach_program(iface, dir.tc(), dir.program());
            removed.push(hook.clone());
        }
    }
    Ok(removed)
}

/// `BPF_OBJ_GET` then `BPF_LINK_DETACH`: aya has no call for the latter.
fn force_detach(pin: &Path) -> io::Result<()> {
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_LINK_DETACH: libc::c_long = 34;
    let path = CString::new(pin.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // union bpf_attr, the obj_get variant: pathname, bpf_fd, file_flags, path_fd.
    let mut attr = [0u64; 8];
    attr[0] = path.as_ptr() as u64;
    // SAFETY: attr is a valid, zero-padded bpf_attr for BPF_OBJ_GET and outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut attr = [0u64; 8];
    attr[0] = fd.as_raw_fd() as u64;
    // SAFETY: attr is a valid bpf_attr for BPF_LINK_DETACH (link_fd first).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_DETACH,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Interfaces of the calling thread's network namespace (not /sys/class/net, which shows the
/// namespace sysfs was mounted in).
fn interface_names() -> Vec<String> {
    let mut names = Vec::new();
    // SAFETY: if_nameindex returns a array terminated by a zero entry, freed below.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return names;
        }
        let mut cursor = list;
        while (*cursor).if_index != 0 && !(*cursor).if_name.is_null() {
            names.push(
                std::ffi::CStr::from_ptr((*cursor).if_name)
                    .to_string_lossy()
                    .into_owned(),
            );
            cursor = cursor.add(1);
        }
        libc::if_freenameindex(list);
    }
    names
}
