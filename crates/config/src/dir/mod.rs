//! Several configs in one directory (`--config-dir`), Azure ip-masq-agent-v2's convention: every
//! file whose name starts with `ip-masq` is one config, and they are merged key by key. A
//! platform team ships one ConfigMap, a tenant another, both mounted as one projected volume.
//!
//! Merge rules (docs/config.md):
//! - `nonMasqueradeCIDRs`, `masqueradeCIDRs`, `nonMasqueradeSrcCIDRs`: the union over the files
//!   that set them, in file-name order, each prefix once; no file setting
//!   `nonMasqueradeCIDRs` means the default set;
//! - `masqLinkLocal`, `masqLinkLocalIPv6`: true if any file sets them true;
//! - `resyncInterval`, `cidrLimit`: the smallest given; the limit applies to the union.
//!
//! One invalid file rejects the whole merge, and so does a merge that breaks a rule no single
//! file does (the same prefix kept in one file and masqueraded in another, a union over the
//! limit). [`Origins`] says which file each prefix came from, for `masq explain`.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use crate::validate::{self, Keys, MASQUERADE_CIDRS, NON_MASQUERADE_CIDRS};
use crate::{Config, ParseOptions, Problem, MAX_FILE_BYTES};

/// Files whose name starts with this are configs; anything else in the directory (kubelet's
/// `..data` and timestamped directories, editors' backups under other names) is not.
pub const FILE_PREFIX: &str = "ip-masq";

/// One config file of a directory, as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigFile {
    /// Its path (through kubelet's symlink: the name in the directory).
    pub path: PathBuf,
    /// Its content.
    pub bytes: Vec<u8>,
}

/// The directory's configs merged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Merged {
    /// The merged configuration.
    pub config: Config,
    /// The files read, in the order merged (by name).
    pub files: Vec<PathBuf>,
    /// Which file each prefix came from.
    pub origins: Origins,
    /// Unknown keys and the like, one line each, naming the file.
    pub warnings: Vec<String>,
}

/// A list of CIDRs a file can set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CidrList {
    /// `nonMasqueradeCIDRs`.
    NonMasquerade,
    /// `masqueradeCIDRs`.
    Masquerade,
    /// `nonMasqueradeSrcCIDRs`.
    NonMasqueradeSrc,
}

/// Which file listed each prefix first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origins {
    files: Vec<PathBuf>,
    first: HashMap<(CidrList, IpNet), usize>,
}

impl Origins {
    pub(crate) fn new(files: Vec<PathBuf>, first: HashMap<(CidrList, IpNet), usize>) -> Origins {
        Origins { files, first }
    }

    /// The file that lists `cidr` in `list`; `None` for a prefix no file lists (the default
    /// set, a flag such as `--native-routing-cidr`).
    pub fn file_of(&self, list: CidrList, cidr: &IpNet) -> Option<&Path> {
        let index = *self.first.get(&(list, *cidr))?;
        Some(&self.files[index])
    }
}

/// Every problem of a directory: per file, or of the merge (then named by the file that set
/// the rule broken, or by the directory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirError {
    problems: Vec<(PathBuf, Problem)>,
}

impl DirError {
    pub(crate) fn one(path: PathBuf, problem: Problem) -> DirError {
        DirError {
            problems: vec![(path, problem)],
        }
    }

    /// Every problem of one file's error, named by that file.
    pub fn of_file(path: &Path, error: &crate::ConfigError) -> DirError {
        DirError {
            problems: error
                .problems()
                .iter()
                .map(|p| (path.to_path_buf(), p.clone()))
                .collect(),
        }
    }

    /// The problems and where each is, in file order.
    pub fn problems(&self) -> &[(PathBuf, Problem)] {
        &self.problems
    }
}

impl fmt::Display for DirError {
    /// One line per problem: `FILE: problem`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (path, problem)) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}: {problem}", path.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for DirError {}

/// Reads and merges the config files of `dir`. A directory that does not exist, or holds no
/// config file, means every default, as a missing file does.
pub fn load_dir(dir: &Path, opts: &ParseOptions) -> Result<Merged, DirError> {
    merge(&read_dir_files(dir)?, opts)
}

/// The config files of `dir`, sorted by name, read through symlinks. A name whose link
/// dangles (kubelet removes a key's link just after the `..data` swap) is skipped.
pub fn read_dir_files(dir: &Path) -> Result<Vec<ConfigFile>, DirError> {
    let failed = |path: &Path, e: std::io::Error| DirError {
        problems: vec![(
            path.to_path_buf(),
            Problem::Read {
                path: path.to_path_buf(),
                message: e.to_string(),
            },
        )],
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(failed(dir, e)),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| failed(dir, e))?;
        if entry.file_name().to_string_lossy().starts_with(FILE_PREFIX) {
            paths.push(entry.path());
        }
    }
    paths.sort();
    let mut files = Vec::new();
    for path in paths {
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(failed(&path, e)),
        };
        if file.metadata().is_ok_and(|m| m.is_dir()) {
            continue;
        }
        // One byte past the limit is enough for `merge` to see an oversized file.
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| failed(&path, e))?;
        files.push(ConfigFile { path, bytes });
    }
    Ok(files)
}

/// Validates each file on its own, then merges them (see the module).
pub fn merge(files: &[ConfigFile], opts: &ParseOptions) -> Result<Merged, DirError> {
    let mut problems = Vec::new();
    let mut parsed = Vec::new();
    let mut warnings = Vec::new();
    for file in files {
        let parsed_file = crate::parse_keys(&file.bytes, opts).map_err(|error| {
            // Read one byte past the limit at most: the size on disk says how far past.
            match error.problems() {
                [Problem::TooLarge { .. }] => match std::fs::metadata(&file.path) {
                    Ok(meta) => crate::ConfigError::one(Problem::TooLarge { size: meta.len() }),
                    Err(_) => error,
                },
                _ => error,
            }
        });
        match parsed_file {
            Ok((keys, file_warnings)) => {
                let shown = file.path.display();
                warnings.extend(file_warnings.iter().map(|w| format!("{shown}: {w}")));
                parsed.push(keys);
            }
            Err(error) => problems.extend(
                error
                    .problems()
                    .iter()
                    .map(|p| (file.path.clone(), p.clone())),
            ),
        }
    }
    if !problems.is_empty() {
        return Err(DirError { problems });
    }
    let paths: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
    let mut merger = Merger::new(paths.clone());
    for (index, keys) in parsed.into_iter().enumerate() {
        merger.add(index, keys);
    }
    let (config, origins) = merger
        .finish(opts)
        .map_err(|problems| DirError { problems })?;
    Ok(Merged {
        config,
        files: paths,
        origins,
        warnings,
    })
}

/// The union so far, and where each part came from.
struct Merger {
    origins: Origins,
    keys: Keys,
    /// The file that set the smallest `cidrLimit`.
    limit_from: Option<usize>,
}

impl Merger {
    fn new(files: Vec<PathBuf>) -> Merger {
        Merger {
            origins: Origins {
                files,
                first: HashMap::new(),
            },
            keys: Keys::default(),
            limit_from: None,
        }
    }

    fn add(&mut self, file: usize, keys: Keys) {
        for (list, merged, added) in [
            (
                CidrList::NonMasquerade,
                &mut self.keys.non_masquerade_cidrs,
                keys.non_masquerade_cidrs,
            ),
            (
                CidrList::Masquerade,
                &mut self.keys.masquerade_cidrs,
                keys.masquerade_cidrs,
            ),
            (
                CidrList::NonMasqueradeSrc,
                &mut self.keys.non_masquerade_src_cidrs,
                keys.non_masquerade_src_cidrs,
            ),
        ] {
            let Some(added) = added else { continue };
            let merged = merged.get_or_insert_with(Vec::new);
            for cidr in added {
                if let std::collections::hash_map::Entry::Vacant(slot) =
                    self.origins.first.entry((list, cidr))
                {
                    slot.insert(file);
                    merged.push(cidr);
                }
            }
        }
        let any = |a: Option<bool>, b: Option<bool>| match (a, b) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(false) || b.unwrap_or(false)),
        };
        self.keys.masq_link_local = any(self.keys.masq_link_local, keys.masq_link_local);
        self.keys.masq_link_local_ipv6 =
            any(self.keys.masq_link_local_ipv6, keys.masq_link_local_ipv6);
        self.keys.resync_interval = smallest(self.keys.resync_interval, keys.resync_interval);
        if let Some(limit) = keys.cidr_limit {
            if self.keys.cidr_limit.is_none_or(|now| limit < now) {
                self.keys.cidr_limit = Some(limit);
                self.limit_from = Some(file);
            }
        }
    }

    /// The merged config, after the checks a union can fail that no single file does.
    fn finish(self, opts: &ParseOptions) -> Result<(Config, Origins), Vec<(PathBuf, Problem)>> {
        let Merger {
            origins,
            keys,
            limit_from,
        } = self;
        let mut problems = Vec::new();
        let keep = keys.non_masquerade_cidrs.as_deref().unwrap_or_default();
        let forced = keys.masquerade_cidrs.as_deref().unwrap_or_default();
        for prefix in forced {
            if keep.contains(prefix) {
                let from = |list| &origins.files[origins.first[&(list, *prefix)]];
                problems.push((
                    from(CidrList::Masquerade).clone(),
                    Problem::InBothLists {
                        prefix: *prefix,
                        non_masquerade: format!(
                            "in {NON_MASQUERADE_CIDRS} of {}",
                            from(CidrList::NonMasquerade).display()
                        ),
                        masquerade: MASQUERADE_CIDRS.to_string(),
                    },
                ));
            }
        }
        let count = keep.len() + forced.len();
        let limit = keys.cidr_limit.unwrap_or(crate::DEFAULT_CIDR_LIMIT);
        if count > limit {
            let at = match limit_from {
                Some(file) => origins.files[file].clone(),
                None => origins.files.first().cloned().unwrap_or_default(),
            };
            problems.push((
                at,
                Problem::OverMergedCidrLimit {
                    keys: validate::limit_keys(!forced.is_empty()),
                    count,
                    limit,
                    files: origins.files.len(),
                },
            ));
        }
        if problems.is_empty() {
            Ok((keys.into_config(opts), origins))
        } else {
            Err(problems)
        }
    }
}

fn smallest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests;
