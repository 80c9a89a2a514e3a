//! Carrying the flow table over when its maps are replaced: an upgrade across a map layout
//! version (`maps-v2` → `maps-v3`) or a new `--nat-table-size`. aya reuses a pinned map without
//! checking its layout or size, so new maps are created under [`super::MAPS_SUBDIR`] and the
//! entries of the old ones are copied in: once before the new programs take the hooks, and
//! again right after (what the old programs created in between). Live connections keep their
//! translation; the old maps are unpinned once nothing runs on them.
//!
//! A smaller table takes the most recently used flows first; what does not fit is counted and
//! logged (those flows get new mappings, with a new port where theirs was changed).

use std::cmp::Reverse;
use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use aya::maps::{HashMap as BpfHashMap, MapData};

use super::batch;
use super::family::{NatKey, NatValue};
use super::kernel_err;
use super::maps::{name, Maps};
use super::types::{NatTuple, NatTuple6, NAT_F_HOST, NAT_F_PASS, NAT_F_REPLIED};
use super::{MAPS_SUBDIR, MAPS_SUBDIR_PREFIX};
use crate::Error;

/// `BPF_NOEXIST`: what a program wrote meanwhile wins.
const BPF_NOEXIST: u64 = 1;

/// Map layout versions whose NAT entries can be carried over: the same `nat_tuple` and
/// `nat_entry` structs, stamped in jiffies. (`maps-v1` stamped nanoseconds.)
const READABLE_VERSIONS: [&str; 2] = ["maps-v2", MAPS_SUBDIR];

/// Where the current maps go when they must be replaced by maps of another size.
/// No dot: bpffs refuses names with one.
const RESIZED_SUBDIR: &str = "maps-v3-resized";

/// The capacity of each family's NAT halves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacities {
    /// `--nat-table-size`.
    pub ipv4: u32,
    /// `--nat-table-size` with `--enable-ipv6`, else 1: the maps are preallocated, and an
    /// IPv4-only node should not pay for an IPv6 table.
    pub ipv6: u32,
}

impl Capacities {
    /// For a table of `size` entries a half, IPv6 `enabled` or not.
    pub fn new(size: u32, ipv6: bool) -> Capacities {
        Capacities {
            ipv4: size,
            ipv6: if ipv6 { size } else { 1 },
        }
    }
}

/// The flow table a previous run left behind, to be copied into the new maps.
pub struct OldTable {
    dirs: Vec<PathBuf>,
    source: Option<Source>,
}

/// The old maps: the IPv4 halves, and the IPv6 ones where the old version had them.
struct Source {
    dir: PathBuf,
    egress: MapData,
    ingress: MapData,
    v6: Option<(MapData, MapData)>,
}

/// What one copy did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CarryReport {
    /// Entries written into the new maps.
    pub copied: usize,
    /// Entries that did not fit.
    pub dropped: usize,
}

/// Unpins the maps an earlier version had and this one does not ([`name::RETIRED`]), from the
/// current maps directory. The old programs still running hold their maps by reference until
/// the new ones replace them, so only the names go.
pub(crate) fn unpin_retired(maps_dir: &Path) -> Result<(), Error> {
    for retired in name::RETIRED {
        let pin = maps_dir.join(retired);
        match std::fs::remove_file(&pin) {
            Ok(()) => tracing::info!(pin = %pin.display(), "unpinned a map this version retired"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(kernel_err(format!("unpinning {}", pin.display()))(e)),
        }
    }
    Ok(())
}

/// `max_entries` of the forward half pinned in `dir`, if there is one.
fn pinned_capacity(dir: &Path, map: &str) -> Option<u32> {
    let data = MapData::from_pin(dir.join(map)).ok()?;
    data.info().ok().map(|info| info.max_entries())
}

/// Finds what the new maps replace, before they are created: map directories of other layout
/// versions, and the current one when a flow table has another size than wanted (`want`: the
/// IPv4 and the IPv6 capacity; moved aside, so the loader creates new maps). `None` when there
/// is nothing to carry.
pub fn stage(pin_dir: &Path, want: Capacities) -> Result<Option<OldTable>, Error> {
    let current = pin_dir.join(MAPS_SUBDIR);
    let v4 = pinned_capacity(&current, name::NAT_EGRESS).is_some_and(|have| have != want.ipv4);
    let v6 = pinned_capacity(&current, name::NAT6_EGRESS).is_some_and(|have| have != want.ipv6);
    if v4 || v6 {
        let aside = pin_dir.join(RESIZED_SUBDIR);
        let _ = std::fs::remove_dir_all(&aside);
        std::fs::rename(&current, &aside).map_err(kernel_err(format!(
            "moving {} aside for the new table size",
            current.display()
        )))?;
    }
    let Ok(entries) = std::fs::read_dir(pin_dir) else {
        return Ok(None);
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with(MAPS_SUBDIR_PREFIX) && name != MAPS_SUBDIR
        })
        .map(|e| e.path())
        .collect();
    if dirs.is_empty() {
        return Ok(None);
    }
    dirs.sort();
    // The newest readable one holds the live table (the resized one, or the last version).
    let source = dirs
        .iter()
        .rev()
        .filter(|dir| {
            let name = dir.file_name().unwrap_or_default().to_string_lossy();
            name == RESIZED_SUBDIR || READABLE_VERSIONS.contains(&name.as_ref())
        })
        .find_map(|dir| {
            let open = |map: &str| MapData::from_pin(dir.join(map)).ok();
            Some(Source {
                dir: dir.clone(),
                egress: open(name::NAT_EGRESS)?,
                ingress: open(name::NAT_INGRESS)?,
                v6: open(name::NAT6_EGRESS).zip(open(name::NAT6_INGRESS)),
            })
        });
    Ok(Some(OldTable { dirs, source }))
}

impl OldTable {
    /// Copies every entry the new maps lack, most recently used flows first; a translated pair
    /// goes in whole or not at all. Entries of `maps-v2` (which had no reply flag) are taken
    /// as replied: they were live connections. Both families.
    pub fn copy_into(&self, new: &mut Maps) -> Result<CarryReport, Error> {
        let Some(source) = &self.source else {
            return Ok(CarryReport::default());
        };
        let before_replied = source.dir.file_name().is_some_and(|n| n == "maps-v2");
        let mut report = copy_family::<NatTuple>(
            &source.dir,
            (&source.egress, &source.ingress),
            new,
            before_replied,
        )?;
        if let Some((egress, ingress)) = &source.v6 {
            let v6 = copy_family::<NatTuple6>(&source.dir, (egress, ingress), new, before_replied)?;
            report.copied += v6.copied;
            report.dropped += v6.dropped;
        }
        Ok(report)
    }

    /// Unpins the old maps (call once the new programs hold every hook).
    pub fn retire(self) -> Result<(), Error> {
        for dir in &self.dirs {
            std::fs::remove_dir_all(dir)
                .map_err(kernel_err(format!("removing {}", dir.display())))?;
            tracing::info!(dir = %dir.display(), "removed the maps the new ones replaced");
        }
        Ok(())
    }
}

/// One family's halves (`old` = forward, reverse), copied as [`OldTable::copy_into`] says.
fn copy_family<K: NatKey>(
    dir: &Path,
    old: (&MapData, &MapData),
    new: &mut Maps,
    before_replied: bool,
) -> Result<CarryReport, Error> {
    let read = |data: &MapData, map: &str| -> Result<Vec<(K, K::Entry)>, Error> {
        let mut entries: Vec<(K, K::Entry)> = batch::read_all(data.fd().as_fd())
            .map_err(kernel_err(format!("reading {} in {}", map, dir.display())))?;
        if before_replied {
            for (_, entry) in &mut entries {
                entry.set_flags(entry.flags() | NAT_F_REPLIED);
            }
        }
        entries.sort_by_key(|(_, e)| Reverse(e.last_seen()));
        Ok(entries)
    };
    let mut forward = read(old.0, "the forward halves")?;
    let mut reverse: HashMap<K, K::Entry> =
        read(old.1, "the reverse halves")?.into_iter().collect();
    let mut report = CarryReport::default();
    for (fkey, fval) in forward.drain(..) {
        if fval.flags() & NAT_F_PASS != 0 {
            report.add(insert(K::forward_map(new), fkey, fval));
            continue;
        }
        let rkey = fkey.reverse_of(&fval);
        let rev = reverse
            .remove(&rkey)
            .map(|rval| insert(K::reverse_map(new), rkey, rval));
        if rev == Some(Inserted::Full) {
            report.dropped += 2;
            continue;
        }
        match insert(K::forward_map(new), fkey, fval) {
            Inserted::Full => {
                // Never a reverse half alone in a full table: give its port back.
                if rev == Some(Inserted::New) {
                    let _ = K::reverse_map(new).remove(&rkey);
                }
                report.dropped += 1 + usize::from(rev.is_some());
            }
            outcome => {
                report.add(outcome);
                rev.into_iter().for_each(|r| report.add(r));
            }
        }
    }
    // Host reservations, and reverse halves whose forward half was gone already (the GC or
    // the programs repair those).
    let mut rest: Vec<_> = reverse.into_iter().collect();
    rest.sort_by_key(|(_, e)| (e.flags() & NAT_F_HOST == 0, Reverse(e.last_seen())));
    for (rkey, rval) in rest {
        report.add(insert(K::reverse_map(new), rkey, rval));
    }
    Ok(report)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Inserted {
    New,
    Present,
    Full,
}

impl CarryReport {
    fn add(&mut self, outcome: Inserted) {
        match outcome {
            Inserted::New => self.copied += 1,
            Inserted::Present => {}
            Inserted::Full => self.dropped += 1,
        }
    }
}

fn insert<K: NatKey>(
    map: &mut BpfHashMap<MapData, K, K::Entry>,
    key: K,
    value: K::Entry,
) -> Inserted {
    match map.insert(key, value, BPF_NOEXIST) {
        Ok(()) => Inserted::New,
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::EEXIST) =>
        {
            Inserted::Present
        }
        Err(_) => Inserted::Full,
    }
}
