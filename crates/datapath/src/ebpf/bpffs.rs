//! The bpf filesystem under the pin directory: pins (maps, TCX links) exist only there.
//!
//! When the pin directory is not on one, the agent mounts one, as Cilium's agent does: on
//! `/sys/fs/bpf` when the pin directory is under it (a node's usual bpffs), else on the pin
//! directory itself. Where `/sys` was remounted (`ip netns exec` does that, and so does a
//! container without the node's `/sys/fs/bpf` as a hostPath), `/sys/fs/bpf` is an empty sysfs
//! directory. Every `mount -t bpf` makes a new, empty instance, private to the mount namespace
//! it was made in: pins survive an agent restart only if that mount does (a hostPath of the
//! node's `/sys/fs/bpf` does; a mount inside the agent's container goes with the container).

use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};

use super::kernel_err;
use crate::Error;

/// `BPF_FS_MAGIC` from `linux/magic.h`.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// Where a node's bpffs lives.
const SYS_FS_BPF: &str = "/sys/fs/bpf";

/// Is `pin_dir` (or, while it does not exist yet, its nearest existing ancestor) on a bpffs?
pub fn is_bpffs(pin_dir: &Path) -> Result<bool, Error> {
    let mut probe = pin_dir;
    while !probe.exists() {
        probe = probe.parent().unwrap_or(Path::new("/"));
    }
    let stat = nix::sys::statfs::statfs(probe).map_err(kernel_err(format!(
        "checking the filesystem of {}",
        probe.display()
    )))?;
    Ok(stat.filesystem_type().0 as i64 == BPF_FS_MAGIC)
}

/// Where a bpffs for `pin_dir` is mounted: `/sys/fs/bpf` when the pin directory is under it,
/// else the pin directory itself.
pub fn mount_point(pin_dir: &Path) -> PathBuf {
    if pin_dir.starts_with(SYS_FS_BPF) {
        PathBuf::from(SYS_FS_BPF)
    } else {
        pin_dir.to_path_buf()
    }
}

/// Makes sure `pin_dir` is on a bpffs, mounting one where it is not (in the caller's mount
/// namespace). Returns where it mounted one, None when there was a bpffs already. A failed
/// mount is an error that says how to provide one.
pub fn ensure(pin_dir: &Path) -> Result<Option<PathBuf>, Error> {
    if is_bpffs(pin_dir)? {
        return Ok(None);
    }
    let target = mount_point(pin_dir);
    let mounted = std::fs::create_dir_all(&target)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            mount(
                Some("bpffs"),
                &target,
                Some("bpf"),
                MsFlags::empty(),
                None::<&str>,
            )
            .map_err(|e| e.to_string())
        });
    if let Err(why) = mounted {
        return Err(Error::Unsupported(format!(
            "pin directory {} is not on a bpf filesystem and mounting one on {} failed ({why}); \
             mount one with `mount -t bpf bpf {}`",
            pin_dir.display(),
            target.display(),
            target.display()
        )));
    }
    tracing::warn!(
        mount_point = %target.display(),
        "{}",
        mounted_note(&target)
    );
    Ok(Some(target))
}

/// What the log and `masq status` say after the agent mounted a bpffs itself.
pub fn mounted_note(mount_point: &Path) -> String {
    format!(
        "the pin directory was not on a bpf filesystem, so masq mounted one on {}: pinned maps \
         and links survive an agent restart only as long as this mount does (a hostPath of the \
         node's /sys/fs/bpf does; a mount inside the agent's container does not)",
        mount_point.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_dir_under_sys_fs_bpf_gets_its_bpffs_there_any_other_on_itself() {
        assert_eq!(
            mount_point(Path::new("/sys/fs/bpf/masq")),
            Path::new("/sys/fs/bpf")
        );
        assert_eq!(
            mount_point(Path::new("/sys/fs/bpf/a/b")),
            Path::new("/sys/fs/bpf")
        );
        assert_eq!(
            mount_point(Path::new("/run/masq/bpf")),
            Path::new("/run/masq/bpf")
        );
        // Not a path component match.
        assert_eq!(
            mount_point(Path::new("/sys/fs/bpfx/masq")),
            Path::new("/sys/fs/bpfx/masq")
        );
    }
}
