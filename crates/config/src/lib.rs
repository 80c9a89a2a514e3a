//! The ip-masq-agent ConfigMap (docs/config.md): bytes in, a validated [`Config`] out.
//!
//! The same file is read by kubernetes-sigs/ip-masq-agent, Cilium and masq, so every default and
//! every parsing quirk here is a compatibility promise. [`load`] reads a path (a missing file means
//! the defaults), [`parse`] reads bytes, [`load_dir`] reads and merges every `ip-masq*` file of a
//! directory (`--config-dir`; see [`merge`] for the rules). Errors collect every problem found, each naming the key,
//! the value and why; unknown keys are only warnings, because Cilium's and Azure's variants of the
//! file carry extra keys.
//!
//! ```
//! use masq_config::{parse, ParseOptions};
//!
//! let loaded = parse(b"masqLinkLocal: true\n", &ParseOptions::default()).unwrap();
//! assert!(loaded.config.masq_link_local);
//! // The key was absent, so the 11 reserved ranges apply.
//! assert_eq!(loaded.config.non_masquerade_cidrs.len(), 11);
//!
//! let err = parse(b"nonMasqueradeCIDRs: [10.0.0.1/8, abcdefg]", &ParseOptions::default())
//!     .unwrap_err();
//! assert_eq!(err.problems().len(), 2);
//! assert!(err.to_string().contains("did you mean 10.0.0.0/8?"));
//! ```
#![deny(missing_docs)]

mod cidr;
mod dir;
mod duration;
mod error;
mod source;
mod validate;

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;

pub use cidr::{parse_cidr, CidrError};
pub use dir::{
    load_dir, merge, read_dir_files, CidrList, ConfigFile, DirError, Merged, Origins, FILE_PREFIX,
};
pub use error::{ConfigError, Problem};
pub use source::Source;

/// Parses a Go-style duration (`60s`, `1h30m`, `300ms`), as `resyncInterval` is read, for
/// flags that take one. Negative durations are refused; the error says what is wrong.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let nanos = duration::parse_go_duration(text)?;
    u64::try_from(nanos)
        .map(std::time::Duration::from_nanos)
        .map_err(|_| "is negative".to_string())
}

/// A validated configuration. A key absent from the file holds its default here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Destinations that keep the pod source IP, in the order written (default set when the key
    /// is absent; empty when the key is `[]` or null). Duplicates and overlaps are kept as written.
    pub non_masquerade_cidrs: Vec<IpNet>,
    /// `false`: 169.254.0.0/16 is never masqueraded.
    pub masq_link_local: bool,
    /// `false`: fe80::/10 is never masqueraded.
    pub masq_link_local_ipv6: bool,
    /// Period of the full drift-repair resync (at least one second).
    pub resync_interval: Duration,
    /// Most `nonMasqueradeCIDRs` and `masqueradeCIDRs` entries accepted, together.
    pub cidr_limit: usize,
    /// Sources that are never masqueraded.
    pub non_masquerade_src_cidrs: Vec<IpNet>,
    /// Destinations always masqueraded, even inside a `nonMasqueradeCIDRs` range: the longest
    /// matching prefix across both lists decides (docs/decision.md).
    pub masquerade_cidrs: Vec<IpNet>,
}

/// Which CIDRs an absent `nonMasqueradeCIDRs` key means.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DefaultCidrs {
    /// The 11 reserved IPv4 ranges of Cilium and GKE.
    #[default]
    Reserved,
    /// RFC 1918 only, the default of kubernetes-sigs/ip-masq-agent.
    Rfc1918,
}

impl DefaultCidrs {
    /// The CIDRs this set stands for.
    pub fn cidrs(self) -> &'static [IpNet] {
        match self {
            DefaultCidrs::Reserved => &RESERVED_CIDRS,
            DefaultCidrs::Rfc1918 => &RFC1918_CIDRS,
        }
    }
}

/// How to read a file: the parts of the meaning that come from the command line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParseOptions {
    /// IPv6 CIDRs are accepted only when this is set (`--enable-ipv6`).
    pub enable_ipv6: bool,
    /// What an absent `nonMasqueradeCIDRs` means.
    pub default_cidrs: DefaultCidrs,
}

/// A file read successfully, with what deserves a log line but is not an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// Unknown keys and the like, one line each.
    pub warnings: Vec<String>,
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> IpNet {
    IpNet::new_assert(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), len)
}

/// The default `nonMasqueradeCIDRs`: the 11 reserved IPv4 ranges used by Cilium and GKE.
pub const RESERVED_CIDRS: [IpNet; 11] = [
    v4(10, 0, 0, 0, 8),
    v4(172, 16, 0, 0, 12),
    v4(192, 168, 0, 0, 16),
    v4(100, 64, 0, 0, 10),
    v4(192, 0, 0, 0, 24),
    v4(192, 0, 2, 0, 24),
    v4(192, 88, 99, 0, 24),
    v4(198, 18, 0, 0, 15),
    v4(198, 51, 100, 0, 24),
    v4(203, 0, 113, 0, 24),
    v4(240, 0, 0, 0, 4),
];

/// The RFC 1918 ranges, the default of kubernetes-sigs/ip-masq-agent (`--rfc1918-defaults`).
pub const RFC1918_CIDRS: [IpNet; 3] = [
    v4(10, 0, 0, 0, 8),
    v4(172, 16, 0, 0, 12),
    v4(192, 168, 0, 0, 16),
];

/// IPv4 link-local, kept unless `masqLinkLocal` is true.
pub const LINK_LOCAL_V4: IpNet = v4(169, 254, 0, 0, 16);

/// IPv6 link-local, kept unless `masqLinkLocalIPv6` is true.
pub const LINK_LOCAL_V6: IpNet =
    IpNet::new_assert(IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)), 10);

/// Default `resyncInterval`.
pub const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(60);

/// Shortest `resyncInterval` accepted.
pub const MIN_RESYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Default `cidrLimit`.
pub const DEFAULT_CIDR_LIMIT: usize = 16384;

/// Largest config file accepted (1 MiB): a ConfigMap cannot hold more, so a bigger file is a
/// mistake, and the bound keeps a bad file from costing memory.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Where the ConfigMap is mounted by default (`--config`).
pub const DEFAULT_PATH: &str = "/etc/config/ip-masq-agent";

impl Config {
    /// Every key at its default, with `default_cidrs` standing for an absent `nonMasqueradeCIDRs`.
    pub fn with_default_cidrs(default_cidrs: DefaultCidrs) -> Config {
        Config {
            non_masquerade_cidrs: default_cidrs.cidrs().to_vec(),
            masq_link_local: false,
            masq_link_local_ipv6: false,
            resync_interval: DEFAULT_RESYNC_INTERVAL,
            cidr_limit: DEFAULT_CIDR_LIMIT,
            non_masquerade_src_cidrs: Vec::new(),
            masquerade_cidrs: Vec::new(),
        }
    }
}

impl Default for Config {
    /// Every key at its default, with the 11 reserved ranges.
    fn default() -> Config {
        Config::with_default_cidrs(DefaultCidrs::Reserved)
    }
}

/// Reads and validates config bytes: JSON when the first non-blank byte is `{`, YAML otherwise.
///
/// Empty, comment-only and `null` documents mean every default. On error, every problem that
/// could be found is reported (a syntax error stops at the first).
pub fn parse(bytes: &[u8], opts: &ParseOptions) -> Result<Loaded, ConfigError> {
    let (keys, warnings) = parse_keys(bytes, opts)?;
    Ok(Loaded {
        config: keys.into_config(opts),
        warnings,
    })
}

/// What the bytes set, validated, and the warnings; the defaults are not filled in.
fn parse_keys(
    bytes: &[u8],
    opts: &ParseOptions,
) -> Result<(validate::Keys, Vec<String>), ConfigError> {
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ConfigError::one(Problem::TooLarge {
            size: bytes.len() as u64,
        }));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ConfigError::one(Problem::NotUtf8 {
            offset: e.valid_up_to(),
        })
    })?;
    let document = validate::read_document(text).map_err(ConfigError::one)?;
    validate::keys_from_document(document, opts)
}

/// Reads and validates the file at `path`; a file that does not exist means every default.
///
/// A file over [`MAX_FILE_BYTES`] is rejected without being read whole.
pub fn load(path: &Path, opts: &ParseOptions) -> Result<Loaded, ConfigError> {
    let read_error = |e: std::io::Error| {
        ConfigError::one(Problem::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    };
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Loaded {
                config: Config::with_default_cidrs(opts.default_cidrs),
                warnings: Vec::new(),
            })
        }
        Err(e) => return Err(read_error(e)),
    };
    // Read one byte past the limit so an oversized file is noticed without reading it all.
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        let size = std::fs::metadata(path).map_or(bytes.len() as u64, |m| m.len());
        return Err(ConfigError::one(Problem::TooLarge { size }));
    }
    parse(&bytes, opts)
}

#[cfg(test)]
mod tests;
