//! A bpffs of the caller's own, for eBPF pins that must never reach the host's /sys/fs/bpf.
//!
//! `ip netns exec` remounts /sys in the child, so a bpffs on /sys/fs/bpf would be invisible to
//! an agent started through it; this one is mounted on a temporary directory instead, in a mount
//! namespace private to the calling thread. Processes the thread starts afterwards (the agent,
//! `masq cleanup`) inherit it, so pins survive an agent's `kill -9` and restart, and everything
//! disappears with the thread's namespace.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// A private bpffs, unmounted on drop.
pub struct PrivateBpffs {
    dir: tempfile::TempDir,
}

impl PrivateBpffs {
    /// Moves the calling thread into its own mount namespace and mounts a fresh bpffs there.
    /// Call it before the thread starts the processes that need the pins.
    pub fn mount() -> Result<PrivateBpffs> {
        let dir = tempfile::Builder::new()
            .prefix("masq-bpffs-")
            .tempdir()
            .context("creating the bpffs mount point")?;
        private_mount_namespace()?;
        mount(
            Some("bpf"),
            dir.path(),
            Some("bpf"),
            MsFlags::empty(),
            None::<&str>,
        )
        .with_context(|| format!("mounting a bpffs on {}", dir.path().display()))?;
        Ok(PrivateBpffs { dir })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The directory to give `--bpf-pin-dir`.
    pub fn pin_dir(&self) -> PathBuf {
        self.dir.path().join("masq")
    }
}

/// Moves the calling thread into a mount namespace of its own whose mounts never propagate to
/// the host's (all private). Processes the thread starts afterwards inherit it: whatever they
/// mount (an agent mounting its own bpffs) stays out of the host's namespace.
pub fn private_mount_namespace() -> Result<()> {
    unshare(CloneFlags::CLONE_NEWNS).context("unsharing the mount namespace")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("making / private in the new mount namespace")
}

impl Drop for PrivateBpffs {
    fn drop(&mut self) {
        let _ = umount2(self.dir.path(), MntFlags::MNT_DETACH);
    }
}
