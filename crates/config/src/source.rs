//! [`Source`]: where the config comes from, one file (`--config`) or a directory of them
//! (`--config-dir`), read and validated the same way for the agent, `explain`, `render` and
//! `validate`. Reading ([`Source::read`]) is apart from validating ([`Source::parse`]) so the
//! agent can tell a change from an event that changed nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::dir::{CidrList, ConfigFile, DirError, Merged, Origins};
use crate::{ParseOptions, Problem};

/// Where the config comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// One file; missing means every default.
    File(PathBuf),
    /// Every `ip-masq*` file of a directory, merged (see [`crate::merge`]).
    Dir(PathBuf),
}

impl Source {
    /// The file or directory, as given.
    pub fn path(&self) -> &Path {
        match self {
            Source::File(path) | Source::Dir(path) => path,
        }
    }

    /// The directory whose events may change the config: the file's (kubelet swaps a
    /// `..data` symlink next to it, which a watch on the file would miss), or the directory.
    pub fn watched_dir(&self) -> PathBuf {
        match self {
            Source::File(path) => match path.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
                _ => PathBuf::from("."),
            },
            Source::Dir(dir) => dir.clone(),
        }
    }

    /// The config files as they are now: none for a missing file (or an empty directory).
    pub fn read(&self) -> Result<Vec<ConfigFile>, DirError> {
        match self {
            Source::Dir(dir) => crate::read_dir_files(dir),
            Source::File(path) => match std::fs::read(path) {
                Ok(bytes) => Ok(vec![ConfigFile {
                    path: path.clone(),
                    bytes,
                }]),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(DirError::one(
                    path.clone(),
                    Problem::Read {
                        path: path.clone(),
                        message: e.to_string(),
                    },
                )),
            },
        }
    }

    /// Validates what [`Source::read`] returned. One file is read as it always was (lists as
    /// written, duplicates included); a directory's files are merged.
    pub fn parse(&self, files: &[ConfigFile], opts: &ParseOptions) -> Result<Merged, DirError> {
        match self {
            Source::Dir(_) => crate::merge(files, opts),
            Source::File(path) => match files {
                [] => Ok(Merged {
                    config: crate::Config::with_default_cidrs(opts.default_cidrs),
                    files: Vec::new(),
                    origins: Origins::default(),
                    warnings: Vec::new(),
                }),
                [file, ..] => {
                    let (keys, warnings) = crate::parse_keys(&file.bytes, opts)
                        .map_err(|error| DirError::of_file(path, &error))?;
                    let mut first = HashMap::new();
                    // An absent `nonMasqueradeCIDRs` means the default set, no file's.
                    for (list, cidrs) in [
                        (CidrList::NonMasquerade, &keys.non_masquerade_cidrs),
                        (CidrList::Masquerade, &keys.masquerade_cidrs),
                        (CidrList::NonMasqueradeSrc, &keys.non_masquerade_src_cidrs),
                    ] {
                        let cidrs = cidrs.iter().flatten();
                        first.extend(cidrs.map(|cidr| ((list, *cidr), 0)));
                    }
                    Ok(Merged {
                        origins: Origins::new(vec![path.clone()], first),
                        files: vec![path.clone()],
                        warnings,
                        config: keys.into_config(opts),
                    })
                }
            },
        }
    }

    /// Reads and validates.
    pub fn load(&self, opts: &ParseOptions) -> Result<Merged, DirError> {
        self.parse(&self.read()?, opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_is_read_as_written_and_names_itself_as_the_origin() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ip-masq-agent");
        let source = Source::File(path.clone());
        let opts = ParseOptions::default();
        // Missing: the defaults, no file, no origin.
        let missing = source.load(&opts).unwrap();
        assert_eq!(missing.config, crate::Config::default());
        assert!(missing.files.is_empty());
        std::fs::write(
            &path,
            "nonMasqueradeCIDRs: [10.0.0.0/8, 10.0.0.0/8]\nmasqueradeCIDRs: [10.5.0.0/16]",
        )
        .unwrap();
        let loaded = source.load(&opts).unwrap();
        // Duplicates stay: one iptables rule per entry, as upstream writes them.
        assert_eq!(loaded.config.non_masquerade_cidrs.len(), 2);
        let ten: ipnet::IpNet = "10.0.0.0/8".parse().unwrap();
        assert_eq!(
            loaded.origins.file_of(CidrList::NonMasquerade, &ten),
            Some(path.as_path())
        );
        // An absent key's default set is no file's.
        std::fs::write(&path, "masqLinkLocal: true").unwrap();
        let loaded = source.load(&opts).unwrap();
        assert_eq!(loaded.origins.file_of(CidrList::NonMasquerade, &ten), None);
        assert_eq!(source.watched_dir(), dir.path());
        // Problems name the file.
        std::fs::write(&path, "masqueradeCIDRs: [10.5.0.1/16]").unwrap();
        let error = source.load(&opts).unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("{}: masqueradeCIDRs[0]", path.display())),
            "{error}"
        );
    }

    #[test]
    fn a_directory_is_watched_itself() {
        let source = Source::Dir(PathBuf::from("/etc/config"));
        assert_eq!(source.watched_dir(), Path::new("/etc/config"));
        assert_eq!(
            Source::File("ip-masq-agent".into()).watched_dir(),
            Path::new(".")
        );
    }
}
