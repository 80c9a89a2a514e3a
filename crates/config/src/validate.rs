//! From a parsed document to a [`Config`], key by key, collecting every problem.
//!
//! Both formats are first read into a generic [`Value`], so YAML and JSON share one validator
//! and every key is checked even after an earlier one failed.

use std::time::Duration;

use ipnet::IpNet;
use serde_json::Value;

use crate::duration::parse_go_duration;
use crate::{Config, ConfigError, ParseOptions, Problem, MIN_RESYNC_INTERVAL};

pub(crate) const NON_MASQUERADE_CIDRS: &str = "nonMasqueradeCIDRs";
pub(crate) const MASQUERADE_CIDRS: &str = "masqueradeCIDRs";
const MASQ_LINK_LOCAL: &str = "masqLinkLocal";
const MASQ_LINK_LOCAL_IPV6: &str = "masqLinkLocalIPv6";
const RESYNC_INTERVAL: &str = "resyncInterval";
const CIDR_LIMIT: &str = "cidrLimit";
pub(crate) const NON_MASQUERADE_SRC_CIDRS: &str = "nonMasqueradeSrcCIDRs";

/// Every key masq reads, matched exactly as written (the upstream agents are case-sensitive).
const KNOWN_KEYS: [&str; 7] = [
    NON_MASQUERADE_CIDRS,
    MASQUERADE_CIDRS,
    MASQ_LINK_LOCAL,
    MASQ_LINK_LOCAL_IPV6,
    RESYNC_INTERVAL,
    CIDR_LIMIT,
    NON_MASQUERADE_SRC_CIDRS,
];

/// Parses the text as JSON when its first non-blank character is `{`, as YAML otherwise.
pub(crate) fn read_document(text: &str) -> Result<Value, Problem> {
    // Editors on Windows may start the file with a byte-order mark; serde_json rejects it.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let first = text.trim_start_matches(char::is_whitespace).chars().next();
    if first == Some('{') {
        serde_json::from_str(text).map_err(|e| Problem::Syntax {
            format: "JSON",
            line: e.line() as u64,
            column: e.column() as u64,
            message: strip_json_position(&e.to_string()),
        })
    } else {
        serde_saphyr::from_str(text).map_err(|e| yaml_problem(&e))
    }
}

/// serde_json ends its messages with " at line L column C", which the problem says already.
fn strip_json_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

/// serde-saphyr renders "error: line L column C: message" plus a source snippet; the problem
/// keeps one line.
fn yaml_problem(error: &serde_saphyr::Error) -> Problem {
    let (line, column) = error
        .location()
        .map_or((0, 0), |at| (at.line(), at.column()));
    let rendered = error.without_snippet().to_string();
    let first_line = rendered.lines().next().unwrap_or_default();
    let without_prefix = first_line.strip_prefix("error: ").unwrap_or(first_line);
    let position = format!("line {line} column {column}: ");
    let message = without_prefix
        .strip_prefix(&position)
        .unwrap_or(without_prefix);
    // Some scanner messages repeat the position at the end (" at line 1, column 3").
    let message = message
        .strip_suffix(&format!(" at line {line}, column {column}"))
        .unwrap_or(message);
    Problem::Syntax {
        format: "YAML",
        line,
        column,
        message: message.to_string(),
    }
}

/// What one file sets, validated: `None` where the key is absent or a null scalar. One file
/// makes a [`Config`] with [`Keys::into_config`]; several are merged key by key (`dir`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Keys {
    pub non_masquerade_cidrs: Option<Vec<IpNet>>,
    pub masquerade_cidrs: Option<Vec<IpNet>>,
    pub non_masquerade_src_cidrs: Option<Vec<IpNet>>,
    pub masq_link_local: Option<bool>,
    pub masq_link_local_ipv6: Option<bool>,
    pub resync_interval: Option<Duration>,
    pub cidr_limit: Option<usize>,
}

impl Keys {
    /// The config one file means: every key it leaves out at its default.
    pub(crate) fn into_config(self, opts: &ParseOptions) -> Config {
        let default = Config::with_default_cidrs(opts.default_cidrs);
        Config {
            non_masquerade_cidrs: self
                .non_masquerade_cidrs
                .unwrap_or(default.non_masquerade_cidrs),
            masquerade_cidrs: self.masquerade_cidrs.unwrap_or_default(),
            masq_link_local: self.masq_link_local.unwrap_or(default.masq_link_local),
            masq_link_local_ipv6: self
                .masq_link_local_ipv6
                .unwrap_or(default.masq_link_local_ipv6),
            resync_interval: self.resync_interval.unwrap_or(default.resync_interval),
            cidr_limit: self.cidr_limit.unwrap_or(default.cidr_limit),
            non_masquerade_src_cidrs: self.non_masquerade_src_cidrs.unwrap_or_default(),
        }
    }
}

/// Validates every key of the document; a null document sets nothing. Returns the keys set and
/// the warnings (unknown keys).
pub(crate) fn keys_from_document(
    document: Value,
    opts: &ParseOptions,
) -> Result<(Keys, Vec<String>), ConfigError> {
    let mut set = Keys::default();
    let keys = match document {
        Value::Null => return Ok((set, Vec::new())),
        Value::Object(keys) => keys,
        other => {
            return Err(ConfigError::one(Problem::NotAMapping {
                found: describe(&other),
            }))
        }
    };
    let mut problems = Vec::new();
    let warnings = keys
        .keys()
        .filter(|key| !KNOWN_KEYS.contains(&key.as_str()))
        .map(|key| unknown_key_warning(key))
        .collect();

    // A null scalar keeps its default, as Go's encoding/json leaves the field untouched; a null
    // list is empty, as Go sets the slice to nil (docs/config.md: `nonMasqueradeCIDRs:` means
    // no CIDRs). Count what the lists hold, good or bad, so the limit is reported with the
    // other problems.
    let mut cidrs_written = 0;
    for (key, slot) in [
        (NON_MASQUERADE_CIDRS, &mut set.non_masquerade_cidrs),
        (MASQUERADE_CIDRS, &mut set.masquerade_cidrs),
    ] {
        if let Some(value) = keys.get(key) {
            cidrs_written += value.as_array().map_or(0, Vec::len);
            *slot = Some(cidr_list(key, value, opts, &mut problems));
        }
    }
    if let Some(value) = keys.get(NON_MASQUERADE_SRC_CIDRS) {
        set.non_masquerade_src_cidrs = Some(cidr_list(
            NON_MASQUERADE_SRC_CIDRS,
            value,
            opts,
            &mut problems,
        ));
    }
    set.masq_link_local = bool_key(MASQ_LINK_LOCAL, keys.get(MASQ_LINK_LOCAL), &mut problems);
    set.masq_link_local_ipv6 = bool_key(
        MASQ_LINK_LOCAL_IPV6,
        keys.get(MASQ_LINK_LOCAL_IPV6),
        &mut problems,
    );
    set.resync_interval = resync_interval(keys.get(RESYNC_INTERVAL), &mut problems);
    set.cidr_limit = cidr_limit(keys.get(CIDR_LIMIT), &mut problems);
    // The limit bounds what the file lists, both destination lists together. The built-in
    // default set is not the file's, and the link-local exemptions (which Cilium stores next
    // to the CIDRs) are not counted either.
    let limit = set.cidr_limit.unwrap_or(crate::DEFAULT_CIDR_LIMIT);
    if cidrs_written > limit {
        problems.push(Problem::OverCidrLimit {
            keys: limit_keys(set.masquerade_cidrs.is_some()),
            count: cidrs_written,
            limit,
        });
    }
    if let (Some(keep), Some(forced)) = (&set.non_masquerade_cidrs, &set.masquerade_cidrs) {
        problems.extend(in_both_lists(keep, forced));
    }

    if problems.is_empty() {
        Ok((set, warnings))
    } else {
        Err(ConfigError::new(problems))
    }
}

/// The keys `cidrLimit` counts, as a problem names them.
pub(crate) fn limit_keys(with_masquerade_cidrs: bool) -> &'static str {
    if with_masquerade_cidrs {
        "nonMasqueradeCIDRs and masqueradeCIDRs"
    } else {
        NON_MASQUERADE_CIDRS
    }
}

/// A prefix listed both to keep and to masquerade: the longest-prefix match cannot choose.
fn in_both_lists(keep: &[IpNet], forced: &[IpNet]) -> Vec<Problem> {
    forced
        .iter()
        .enumerate()
        .filter_map(|(j, prefix)| {
            let i = keep.iter().position(|k| k == prefix)?;
            Some(Problem::InBothLists {
                prefix: *prefix,
                non_masquerade: format!("{NON_MASQUERADE_CIDRS}[{i}]"),
                masquerade: format!("{MASQUERADE_CIDRS}[{j}]"),
            })
        })
        .collect()
}

fn unknown_key_warning(key: &str) -> String {
    match KNOWN_KEYS
        .iter()
        .find(|known| known.eq_ignore_ascii_case(key))
    {
        Some(known) => {
            format!("unknown key {key:?} ignored; keys are case-sensitive, did you mean {known}?")
        }
        None => format!("unknown key {key:?} ignored"),
    }
}

/// A list of CIDR strings; problems name the element by index. Returns the good elements.
fn cidr_list(
    key: &str,
    value: &Value,
    opts: &ParseOptions,
    problems: &mut Vec<Problem>,
) -> Vec<IpNet> {
    let elements = match value {
        Value::Null => return Vec::new(),
        Value::Array(elements) => elements,
        other => {
            problems.push(Problem::WrongType {
                key: key.to_string(),
                expected: "a list of CIDR strings",
                found: describe(other),
            });
            return Vec::new();
        }
    };
    let mut cidrs = Vec::with_capacity(elements.len());
    for (index, element) in elements.iter().enumerate() {
        let element_key = format!("{key}[{index}]");
        let Value::String(text) = element else {
            problems.push(Problem::WrongType {
                key: element_key,
                expected: "a CIDR string",
                found: describe(element),
            });
            continue;
        };
        match crate::parse_cidr(text) {
            Ok(IpNet::V6(_)) if !opts.enable_ipv6 => problems.push(Problem::Ipv6Disabled {
                key: element_key,
                value: text.clone(),
            }),
            Ok(cidr) => cidrs.push(cidr),
            Err(error) => problems.push(Problem::Cidr {
                key: element_key,
                error,
            }),
        }
    }
    cidrs
}

fn bool_key(key: &str, value: Option<&Value>, problems: &mut Vec<Problem>) -> Option<bool> {
    match value? {
        Value::Null => None,
        Value::Bool(flag) => Some(*flag),
        other => {
            problems.push(Problem::WrongType {
                key: key.to_string(),
                expected: "true or false",
                found: describe(other),
            });
            None
        }
    }
}

fn resync_interval(value: Option<&Value>, problems: &mut Vec<Problem>) -> Option<Duration> {
    let text = match value? {
        Value::Null => return None,
        Value::String(text) => text,
        other => {
            problems.push(Problem::WrongType {
                key: RESYNC_INTERVAL.to_string(),
                expected: "a duration string like \"60s\", \"5m\" or \"1h30m\"",
                found: describe(other),
            });
            return None;
        }
    };
    match parse_go_duration(text) {
        Err(why) => {
            problems.push(Problem::BadDuration {
                value: text.clone(),
                why,
            });
            None
        }
        Ok(nanos) if nanos < MIN_RESYNC_INTERVAL.as_nanos() as i128 => {
            problems.push(Problem::DurationTooShort {
                value: text.clone(),
            });
            None
        }
        Ok(nanos) => Some(Duration::from_nanos(nanos as u64)),
    }
}

fn cidr_limit(value: Option<&Value>, problems: &mut Vec<Problem>) -> Option<usize> {
    let number = match value? {
        Value::Null => return None,
        Value::Number(number) => number,
        other => {
            problems.push(Problem::WrongType {
                key: CIDR_LIMIT.to_string(),
                expected: "a non-negative integer",
                found: describe(other),
            });
            return None;
        }
    };
    let why = if let Some(limit) = number.as_u64() {
        match usize::try_from(limit) {
            Ok(limit) => return Some(limit),
            Err(_) => "too large",
        }
    } else if number.as_i64().is_some() {
        "negative"
    } else {
        "not an integer"
    };
    problems.push(Problem::BadCidrLimit {
        value: number.to_string(),
        why,
    });
    None
}

/// "a string (\"x\")", "a number (42)", …: what the user wrote, for messages.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(flag) => format!("a boolean ({flag})"),
        Value::Number(number) => format!("a number ({number})"),
        Value::String(text) => format!("a string ({text:?})"),
        Value::Array(elements) if elements.is_empty() => "an empty list".to_string(),
        Value::Array(elements) if elements.len() == 1 => "a list of 1 element".to_string(),
        Value::Array(elements) => format!("a list of {} elements", elements.len()),
        Value::Object(_) => "a mapping".to_string(),
    }
}
