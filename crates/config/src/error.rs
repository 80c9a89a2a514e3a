//! Problems found in a config file. [`ConfigError`] holds all of them, so `masq validate` can
//! list every one, not only the first.

use std::fmt;
use std::path::PathBuf;

use crate::cidr::CidrError;

/// One thing wrong with a config file. Messages are one lowercase line naming the key (with the
/// list index where there is one), the value as written and why it is rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// The file could not be read (other than not existing, which means the defaults).
    #[error("cannot read {}: {message}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's answer.
        message: String,
    },
    /// The file is larger than [`crate::MAX_FILE_BYTES`].
    #[error(
        "the config is {size} bytes, over the 1 MiB limit ({} bytes)",
        crate::MAX_FILE_BYTES
    )]
    TooLarge {
        /// Its size in bytes.
        size: u64,
    },
    /// The bytes are not UTF-8 text.
    #[error("the config is not UTF-8 text (invalid byte at offset {offset})")]
    NotUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// The YAML or JSON does not parse.
    #[error("invalid {format} at line {line} column {column}: {message}")]
    Syntax {
        /// `YAML` or `JSON`.
        format: &'static str,
        /// 1-based line.
        line: u64,
        /// 1-based column.
        column: u64,
        /// The parser's explanation.
        message: String,
    },
    /// The document parses but is not a mapping of keys (a list, a string, a number).
    #[error("the config must be a mapping of keys to values, found {found}")]
    NotAMapping {
        /// What was found, with its value.
        found: String,
    },
    /// A key holds a value of the wrong type.
    #[error("{key}: expected {expected}, found {found}")]
    WrongType {
        /// The key (with `[index]` for a list element).
        key: String,
        /// The type the key takes.
        expected: &'static str,
        /// What was found, with its value.
        found: String,
    },
    /// A list element that is not an acceptable CIDR.
    #[error("{key}: {error}")]
    Cidr {
        /// The key and list index.
        key: String,
        /// What is wrong with the value.
        error: CidrError,
    },
    /// An IPv6 CIDR while IPv6 masquerading is off.
    #[error(
        "{key}: {value:?} is an IPv6 CIDR but IPv6 masquerading is off; \
         start masq with --enable-ipv6 to accept it"
    )]
    Ipv6Disabled {
        /// The key and list index.
        key: String,
        /// The value as written.
        value: String,
    },
    /// More `nonMasqueradeCIDRs` and `masqueradeCIDRs` entries than `cidrLimit` allows.
    #[error("{keys}: {count} entries, over the cidrLimit of {limit}")]
    OverCidrLimit {
        /// The keys counted.
        keys: &'static str,
        /// Entries in the file.
        count: usize,
        /// The limit in force.
        limit: usize,
    },
    /// The same prefix in `nonMasqueradeCIDRs` and `masqueradeCIDRs`.
    #[error(
        "{masquerade}: {prefix} is also {non_masquerade}; a destination cannot both keep the pod \
         address and be masqueraded, remove it from one of the lists"
    )]
    InBothLists {
        /// The prefix.
        prefix: ipnet::IpNet,
        /// Where `nonMasqueradeCIDRs` lists it (`nonMasqueradeCIDRs[2]`, or the other file when
        /// several are merged).
        non_masquerade: String,
        /// Where `masqueradeCIDRs` lists it.
        masquerade: String,
    },
    /// The files of a directory list more entries together than the smallest `cidrLimit`.
    #[error(
        "{keys}: {count} entries in the {files} files together, over the smallest cidrLimit, \
         {limit}"
    )]
    OverMergedCidrLimit {
        /// The keys counted.
        keys: &'static str,
        /// Entries in the union.
        count: usize,
        /// The smallest limit given.
        limit: usize,
        /// Files merged.
        files: usize,
    },
    /// A `cidrLimit` that is not a non-negative integer.
    #[error("cidrLimit: {value} is not a valid limit ({why})")]
    BadCidrLimit {
        /// The value as written.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A `resyncInterval` that is not a Go-style duration.
    #[error("resyncInterval: {value:?} is not a duration like 60s, 5m or 1h30m ({why})")]
    BadDuration {
        /// The value as written.
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// A `resyncInterval` under one second.
    #[error("resyncInterval: {value:?} is under the 1s minimum")]
    DurationTooShort {
        /// The value as written.
        value: String,
    },
}

/// Every problem found in one config file; the file is rejected as a whole.
///
/// `Display` prints one problem per line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    problems: Vec<Problem>,
}

impl ConfigError {
    /// Wraps the problems found; there is at least one.
    pub(crate) fn new(problems: Vec<Problem>) -> Self {
        debug_assert!(!problems.is_empty());
        ConfigError { problems }
    }

    pub(crate) fn one(problem: Problem) -> Self {
        ConfigError::new(vec![problem])
    }

    /// The problems, in the order they were found (file order for keys).
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}
